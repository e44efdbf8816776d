//! Resizing a decoded grayscale image to the square network input.
//!
//! Two modes: [`ResizeMode::Letterbox`] keeps the aspect ratio (the longest side becomes the
//! target size, the rest is padded with black, centred) and [`ResizeMode::Stretch`] scales each
//! axis independently. Resampling is linear (a triangle filter whose support widens when
//! shrinking, so large radiographs are averaged rather than aliased).

use image::imageops::{self, FilterType};
use serde::{Deserialize, Serialize};

use crate::decode::GrayImage;

/// How a non-square image becomes a square one.
///
/// ```
/// use fracture_data::ResizeMode;
/// assert_eq!(ResizeMode::default(), ResizeMode::Letterbox);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResizeMode {
    /// Keep the aspect ratio: scale the longest side to the target size, pad with black (0).
    #[default]
    Letterbox,
    /// Scale width and height independently to the target size (distorts the aspect ratio).
    Stretch,
}

/// Resizes `image` to `size` x `size` pixels and returns them row-major (`size * size` bytes).
///
/// `size` must be at least 1 (callers validate it; see [`crate::PreprocessConfig`]).
///
/// ```
/// use fracture_data::{resize_square, GrayImage, ResizeMode};
/// let wide = GrayImage::from_pixel(8, 4, image::Luma([255]));
/// let boxed = resize_square(&wide, 4, ResizeMode::Letterbox);
/// // 8x4 becomes 4x2, centred vertically: rows 0 and 3 are padding.
/// assert_eq!(&boxed[..4], &[0, 0, 0, 0]);
/// assert_eq!(&boxed[4..8], &[255, 255, 255, 255]);
/// let stretched = resize_square(&wide, 4, ResizeMode::Stretch);
/// assert!(stretched.iter().all(|&p| p == 255));
/// ```
pub fn resize_square(image: &GrayImage, size: usize, mode: ResizeMode) -> Vec<u8> {
    let size = size.max(1);
    let (w, h) = image.dimensions();
    if w as usize == size && h as usize == size {
        return image.as_raw().clone();
    }
    match mode {
        ResizeMode::Stretch => {
            imageops::resize(image, size as u32, size as u32, FilterType::Triangle).into_raw()
        }
        ResizeMode::Letterbox => {
            let scale = size as f64 / w.max(h) as f64;
            let nw = ((w as f64 * scale).round() as usize).clamp(1, size);
            let nh = ((h as f64 * scale).round() as usize).clamp(1, size);
            let scaled = if nw == w as usize && nh == h as usize {
                image.clone()
            } else {
                imageops::resize(image, nw as u32, nh as u32, FilterType::Triangle)
            };
            let mut out = vec![0u8; size * size];
            let x0 = (size - nw) / 2;
            let y0 = (size - nh) / 2;
            for (row, src) in scaled.as_raw().chunks_exact(nw).enumerate() {
                let start = (y0 + row) * size + x0;
                out[start..start + nw].copy_from_slice(src);
            }
            out
        }
    }
}

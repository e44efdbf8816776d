//! Resizing a decoded grayscale image to the square network input.
//!
//! Two modes: [`ResizeMode::Letterbox`] keeps the aspect ratio (the longest side becomes the
//! target size, the rest is padded with black, centred) and [`ResizeMode::Stretch`] scales each
//! axis independently. Resampling is linear (a triangle filter whose support widens when
//! shrinking, so large radiographs are averaged rather than aliased): the same filter as the
//! `image` crate's `FilterType::Triangle`, with the weights computed once per output row and
//! column, which makes shrinking a 2304x2880 radiograph about 20 times faster.

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

impl ResizeMode {
    /// Its name in lower case, as people write it.
    ///
    /// ```
    /// use fracture_data::ResizeMode;
    /// assert_eq!(ResizeMode::Letterbox.name(), "letterbox");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            ResizeMode::Letterbox => "letterbox",
            ResizeMode::Stretch => "stretch",
        }
    }

    /// What it does, in a few words: `"letterbox (aspect ratio kept, padded with black)"`.
    pub fn describe(self) -> &'static str {
        match self {
            ResizeMode::Letterbox => "letterbox (aspect ratio kept, padded with black)",
            ResizeMode::Stretch => "stretch (width and height scaled apart)",
        }
    }
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
        ResizeMode::Stretch => resample(image.as_raw(), w as usize, h as usize, size, size),
        ResizeMode::Letterbox => {
            let scale = size as f64 / w.max(h) as f64;
            let nw = ((w as f64 * scale).round() as usize).clamp(1, size);
            let nh = ((h as f64 * scale).round() as usize).clamp(1, size);
            let scaled = resample(image.as_raw(), w as usize, h as usize, nw, nh);
            let mut out = vec![0u8; size * size];
            let x0 = (size - nw) / 2;
            let y0 = (size - nh) / 2;
            for (row, src) in scaled.chunks_exact(nw).enumerate() {
                let start = (y0 + row) * size + x0;
                out[start..start + nw].copy_from_slice(src);
            }
            out
        }
    }
}

/// Filter taps of one output coordinate: the first source index and the weights from there.
struct Taps {
    start: usize,
    weights: Vec<f32>,
}

/// Triangle-filter taps mapping `in_len` source pixels to `out_len` output pixels.
fn taps(in_len: usize, out_len: usize) -> Vec<Taps> {
    let ratio = in_len as f64 / out_len as f64;
    let support = ratio.max(1.0); // the triangle's radius, in source pixels
    (0..out_len)
        .map(|o| {
            let centre = (o as f64 + 0.5) * ratio;
            let lo = ((centre - support).floor().max(0.0) as usize).min(in_len - 1);
            let hi = ((centre + support).ceil() as usize).clamp(lo + 1, in_len);
            let mut weights: Vec<f32> = (lo..hi)
                .map(|i| {
                    let x = (i as f64 + 0.5 - centre) / support;
                    (1.0 - x.abs()).max(0.0) as f32
                })
                .collect();
            let sum: f32 = weights.iter().sum();
            if sum > 0.0 {
                weights.iter_mut().for_each(|w| *w /= sum);
            } else {
                weights.iter_mut().for_each(|w| *w = 0.0);
                weights[0] = 1.0;
            }
            Taps { start: lo, weights }
        })
        .collect()
}

/// Separable triangle-filter resampling of a `w` x `h` 8-bit image to `nw` x `nh`.
fn resample(src: &[u8], w: usize, h: usize, nw: usize, nh: usize) -> Vec<u8> {
    if (w, h) == (nw, nh) {
        return src.to_vec();
    }
    let hx = taps(w, nw);
    let vy = taps(h, nh);
    // Horizontal pass: h rows of nw values.
    let mut tmp = vec![0f32; h * nw];
    for (row, out) in src.chunks_exact(w).zip(tmp.chunks_exact_mut(nw)) {
        for (o, t) in out.iter_mut().zip(&hx) {
            let px = &row[t.start..t.start + t.weights.len()];
            *o = px.iter().zip(&t.weights).map(|(&p, &k)| p as f32 * k).sum();
        }
    }
    // Vertical pass, row by row (contiguous, vectorisable).
    let mut acc = vec![0f32; nw];
    let mut out = vec![0u8; nw * nh];
    for (dst, t) in out.chunks_exact_mut(nw).zip(&vy) {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (j, &k) in t.weights.iter().enumerate() {
            let row = &tmp[(t.start + j) * nw..(t.start + j + 1) * nw];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += k * v;
            }
        }
        for (d, &a) in dst.iter_mut().zip(&acc) {
            *d = a.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops::{self, FilterType};

    fn noisy(w: u32, h: u32) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            image::Luma([((x * 31 + y * 17 + x * y) % 256) as u8])
        })
    }

    #[test]
    fn matches_the_image_crate_triangle_filter() {
        for (w, h, nw, nh) in [
            (300, 200, 32, 21),
            (50, 70, 96, 33),
            (64, 64, 64, 17),
            (7, 5, 13, 3),
        ] {
            let img = noisy(w, h);
            let ours = resample(img.as_raw(), w as usize, h as usize, nw, nh);
            let theirs = imageops::resize(&img, nw as u32, nh as u32, FilterType::Triangle);
            let worst = ours
                .iter()
                .zip(theirs.as_raw())
                .map(|(&a, &b)| (a as i32 - b as i32).abs())
                .max()
                .unwrap();
            assert!(worst <= 1, "{w}x{h} -> {nw}x{nh}: max difference {worst}");
        }
    }

    #[test]
    fn constant_images_stay_constant() {
        let img = GrayImage::from_pixel(1000, 37, image::Luma([77]));
        for mode in [ResizeMode::Letterbox, ResizeMode::Stretch] {
            let out = resize_square(&img, 50, mode);
            let content: Vec<u8> = out.into_iter().filter(|&v| v != 0).collect();
            assert!(content.iter().all(|&v| v == 77), "{mode:?}");
        }
    }
}

//! The one preprocessing path shared by training and prediction.
//!
//! `decode (by content) -> 8-bit luminance -> square resize -> / 255 -> standardise`.
//! Training keeps the resized 8-bit images in memory ([`load_resized`]) and standardises each
//! batch; prediction calls [`preprocess_file`], which runs the same two steps on one file, so
//! that a model sees exactly the same numbers in both cases.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::decode::{decode_luma8, decode_luma8_from_memory, DecodeLimits};
use crate::error::{DataError, Result};
use crate::normalize::Normalization;
use crate::resize::{resize_square, ResizeMode};

/// Default network input size (pixels per side).
pub const DEFAULT_IMAGE_SIZE: usize = 224;

/// How files become square 8-bit images. Serialisable, so a checkpoint records it.
///
/// ```
/// use fracture_data::{PreprocessConfig, ResizeMode};
/// let cfg = PreprocessConfig { image_size: 96, ..Default::default() };
/// assert_eq!(cfg.resize_mode, ResizeMode::Letterbox);
/// cfg.validate().unwrap();
/// assert!(PreprocessConfig { image_size: 0, ..cfg }.validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    /// Side of the square input in pixels (default 224).
    pub image_size: usize,
    /// Letterbox (default, keeps the aspect ratio) or stretch.
    pub resize_mode: ResizeMode,
    /// Size limits against decompression bombs.
    pub limits: DecodeLimits,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            image_size: DEFAULT_IMAGE_SIZE,
            resize_mode: ResizeMode::default(),
            limits: DecodeLimits::default(),
        }
    }
}

impl PreprocessConfig {
    /// Largest accepted `image_size`.
    pub const MAX_IMAGE_SIZE: usize = 4096;

    /// Checks that `image_size` is within `1..=MAX_IMAGE_SIZE`.
    pub fn validate(&self) -> Result<()> {
        if self.image_size == 0 || self.image_size > Self::MAX_IMAGE_SIZE {
            return Err(DataError::Config(format!(
                "image_size must be in 1..={}, got {}",
                Self::MAX_IMAGE_SIZE,
                self.image_size
            )));
        }
        Ok(())
    }
}

/// Decodes `path` by content, converts to luminance and resizes it to
/// `image_size * image_size` bytes (row-major). This is what the folder loader keeps in memory.
///
/// ```
/// use fracture_data::{load_resized, PreprocessConfig};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("x.png");
/// image::GrayImage::from_pixel(40, 20, image::Luma([100])).save(&path).unwrap();
/// let px = load_resized(&path, &PreprocessConfig { image_size: 16, ..Default::default() }).unwrap();
/// assert_eq!(px.len(), 16 * 16);
/// ```
pub fn load_resized(path: &Path, config: &PreprocessConfig) -> Result<Vec<u8>> {
    config.validate()?;
    let gray = decode_luma8(path, &config.limits)?;
    Ok(resize_square(&gray, config.image_size, config.resize_mode))
}

/// [`load_resized`] for image bytes already in memory (an upload, say): the same decode, by
/// content and under the same limits, and the same resize, so the numbers equal those of the
/// file holding these bytes. `name` only names the source in errors.
///
/// ```
/// use fracture_data::{load_resized, load_resized_from_memory, PreprocessConfig};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("x.png");
/// image::GrayImage::from_fn(30, 20, |x, y| image::Luma([(x * 7 + y) as u8])).save(&path).unwrap();
/// let cfg = PreprocessConfig { image_size: 16, ..Default::default() };
/// let bytes = std::fs::read(&path).unwrap();
/// let px = load_resized_from_memory(&bytes, "upload".as_ref(), &cfg).unwrap();
/// assert_eq!(px, load_resized(&path, &cfg).unwrap());
/// assert!(load_resized_from_memory(b"not an image", "upload".as_ref(), &cfg).is_err());
/// ```
pub fn load_resized_from_memory(
    bytes: &[u8],
    name: &Path,
    config: &PreprocessConfig,
) -> Result<Vec<u8>> {
    config.validate()?;
    let gray = decode_luma8_from_memory(bytes, name, &config.limits)?;
    Ok(resize_square(&gray, config.image_size, config.resize_mode))
}

/// Preprocesses one image file for prediction exactly as training does and returns its
/// `1 x S x S` pixels (CHW, C = 1) as standardised `f32`.
///
/// ```
/// use fracture_data::{preprocess_file, Normalization, PreprocessConfig};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("scan.jpg");
/// image::GrayImage::from_pixel(10, 10, image::Luma([255])).save_with_format(&path, image::ImageFormat::Png).unwrap();
/// let cfg = PreprocessConfig { image_size: 8, ..Default::default() };
/// let x = preprocess_file(&path, &cfg, &Normalization { mean: 0.5, std: 0.5 }).unwrap();
/// assert_eq!(x.len(), 64);
/// assert!(x.iter().all(|&v| (v - 1.0).abs() < 1e-6));
/// ```
pub fn preprocess_file(
    path: &Path,
    config: &PreprocessConfig,
    normalization: &Normalization,
) -> Result<Vec<f32>> {
    let pixels = load_resized(path, config)?;
    Ok(standardise(&pixels, normalization))
}

/// Standardises resized 8-bit pixels into `f32` (`(p / 255 - mean) / std`): the final step of
/// [`preprocess_file`], also used by the batch loader in evaluation mode.
///
/// ```
/// use fracture_data::{standardise, Normalization};
/// assert_eq!(standardise(&[0, 255], &Normalization::IDENTITY), vec![0.0, 1.0]);
/// ```
pub fn standardise(pixels: &[u8], normalization: &Normalization) -> Vec<f32> {
    let mut out = vec![0.0; pixels.len()];
    normalization.apply_u8(pixels, &mut out);
    out
}

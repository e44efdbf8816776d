//! Standardisation statistics: the mean and standard deviation of training pixels.
//!
//! Pixels are first scaled to `[0, 1]` (`p / 255`), then standardised as `(x - mean) / std`.
//! The statistics are computed on the **training split only** ([`Normalization::from_train`]
//! refuses any other split), and they are serialisable so that a model checkpoint carries them
//! and prediction preprocesses exactly as training did.

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::folder::{DatasetSplit, Split};

/// Mean and standard deviation of training pixels on the `[0, 1]` scale.
///
/// ```
/// use fracture_data::Normalization;
/// let norm = Normalization { mean: 0.5, std: 0.25 };
/// assert_eq!(norm.apply(255), 2.0);
/// let json = serde_json::to_string(&norm).unwrap();
/// assert_eq!(serde_json::from_str::<Normalization>(&json).unwrap(), norm);
///
/// // Exact statistics of 8-bit pixels, then standardisation.
/// let stats = Normalization::from_images(&[0u8, 255, 0, 255]).unwrap();
/// assert!((stats.mean - 0.5).abs() < 1e-6 && (stats.std - 0.5).abs() < 1e-6);
/// let mut out = [0.0; 2];
/// stats.apply_u8(&[0, 255], &mut out);
/// assert_eq!(out, [-1.0, 1.0]);
/// let mut unit = [0.5f32];
/// stats.apply_unit_in_place(&mut unit);
/// assert_eq!(unit, [0.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean pixel value on the `[0, 1]` scale.
    pub mean: f32,
    /// Standard deviation on the `[0, 1]` scale (always > 0).
    pub std: f32,
}

impl Default for Normalization {
    /// The identity: mean 0, std 1 (pixels stay in `[0, 1]`).
    fn default() -> Self {
        Normalization::IDENTITY
    }
}

impl Normalization {
    /// Leaves `[0, 1]` pixels unchanged.
    pub const IDENTITY: Normalization = Normalization {
        mean: 0.0,
        std: 1.0,
    };

    /// Statistics of a training split. Refuses validation and test splits, so that no statistic
    /// can leak from them into training.
    ///
    /// ```
    /// use fracture_data::{phantom::PhantomConfig, Normalization, Split};
    /// let data = PhantomConfig { size: 32, train: 8, val: 4, test: 0, ..Default::default() }.folder().unwrap();
    /// let norm = Normalization::from_train(data.train().unwrap()).unwrap();
    /// assert!(norm.mean > 0.0 && norm.std > 0.0);
    /// assert!(Normalization::from_train(data.val().unwrap()).is_err());
    /// ```
    pub fn from_train(split: &DatasetSplit) -> Result<Normalization> {
        if split.split() != Split::Train {
            return Err(DataError::Config(format!(
                "normalisation statistics must come from the train split, not `{}`",
                split.split()
            )));
        }
        Normalization::from_images(split.images())
    }

    /// Statistics of any set of 8-bit pixels (exact, through a 256-bin histogram).
    pub fn from_images(pixels: &[u8]) -> Result<Normalization> {
        let mut hist = [0u64; 256];
        for &p in pixels {
            hist[p as usize] += 1;
        }
        let n: u64 = hist.iter().sum();
        if n == 0 {
            return Err(DataError::Config(
                "cannot compute normalisation statistics of zero pixels".into(),
            ));
        }
        let (mut s, mut s2) = (0f64, 0f64);
        for (v, &c) in hist.iter().enumerate() {
            let x = v as f64 / 255.0;
            s += c as f64 * x;
            s2 += c as f64 * x * x;
        }
        let mean = s / n as f64;
        let var = (s2 / n as f64 - mean * mean).max(0.0);
        let std = var.sqrt();
        if std < 1e-6 {
            return Err(DataError::Config(format!(
                "training pixels are constant (mean {mean:.4}): standard deviation is zero"
            )));
        }
        Ok(Normalization {
            mean: mean as f32,
            std: std as f32,
        })
    }

    /// Standardises one 8-bit pixel: `(p / 255 - mean) / std`.
    #[inline]
    pub fn apply(&self, pixel: u8) -> f32 {
        (pixel as f32 / 255.0 - self.mean) / self.std
    }

    /// Standardises 8-bit pixels into `out` (same length).
    pub fn apply_u8(&self, pixels: &[u8], out: &mut [f32]) {
        debug_assert_eq!(pixels.len(), out.len());
        let inv = 1.0 / self.std;
        for (o, &p) in out.iter_mut().zip(pixels) {
            *o = (p as f32 / 255.0 - self.mean) * inv;
        }
    }

    /// Standardises `[0, 1]` values in place.
    pub fn apply_unit_in_place(&self, values: &mut [f32]) {
        let inv = 1.0 / self.std;
        for v in values {
            *v = (*v - self.mean) * inv;
        }
    }
}

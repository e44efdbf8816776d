//! Leakage audit: exact and near copies within and across `train`/`val`/`test` and class
//! folders, and a split that keeps every copy group on one side.
//!
//! A copy of a test image in the training folder turns a test score into a memory test. The
//! audit decodes every file once (in parallel, keeping only a small signature per file, never
//! the images) and finds:
//!
//! - **exact copies**: equal content hashes of the *decoded* pixels ([`pixel_hash`]), so a
//!   losslessly re-encoded file matches its original whatever its bytes;
//! - **near copies**: resized, re-encoded (JPEG), brightened or contrast-changed, flipped or
//!   rotated copies: the DCT perceptual hash of a 32x32 thumbnail ([`NearSignature`]) compared
//!   under the 8 symmetries of the square ([`Dihedral`]), within
//!   [`AuditConfig::max_hamming`] bits, then confirmed by the thumbnails' correlation of at
//!   least [`AuditConfig::min_correlation`] (the report states both; `datasets/README.md` says how
//!   they were chosen).
//!
//! The files of a [`Scan`] are connected by its [`CopyPair`]s; [`copy_groups`] joins them
//! (union-find) into groups. [`AuditReport`] counts, for each ordered pair of splits, the files
//! of one with a copy in the other, lists the groups and the files whose copies carry other
//! labels, and ends with a verdict. [`plan_split`] assigns whole groups to new splits,
//! stratified by class, and [`write_split`] writes them as links or copies with a manifest.
//! [`shared_images`] is the cheap check `train` runs on images already in memory.
//!
//! ```
//! use fracture_data::audit::{AuditConfig, AuditReport, Scan};
//! let root = tempfile::tempdir().unwrap();
//! let img = image::GrayImage::from_fn(40, 30, |x, y| image::Luma([(x * 6 + y * y % 97) as u8]));
//! for (split, name) in [("train", "a.png"), ("test", "b.png")] {
//!     let dir = root.path().join(split).join("fractured");
//!     std::fs::create_dir_all(&dir).unwrap();
//!     img.save(dir.join(name)).unwrap();
//! }
//! image::imageops::flip_horizontal(&img).save(root.path().join("test/fractured/c.png")).unwrap();
//! let scan = Scan::dataset(root.path(), &AuditConfig::default(), &|| {}).unwrap();
//! let report = AuditReport::new(&scan);
//! let test_in_train = report.pair("test", "train").unwrap();
//! assert_eq!((test_in_train.exact_files, test_in_train.near_files), (1, 2));
//! assert!(report.verdict[0].starts_with("test is 100.0 % leaked from train"), "{:?}", report.verdict);
//! ```

mod groups;
mod matching;
mod perceptual;
mod pixel_hash;
mod quick_check;
mod report;
mod scan;
mod split_assign;
mod split_write;

use serde::{Deserialize, Serialize};

use crate::decode::DecodeLimits;

pub use groups::copy_groups;
pub use matching::CopyPair;
pub use perceptual::{Dihedral, NearSignature, THUMB};
pub use pixel_hash::{hash_bytes, pixel_hash};
pub use quick_check::shared_images;
pub use report::{AuditReport, CopyGroup, GroupMember, LabelConflict, PairCount, SplitCount};
pub use scan::{list_class_folder, list_dataset, AuditFile, Scan, ScannedFile};
pub use split_assign::{plan_split, PlanRow, SplitFractions, SplitPlan};
pub use split_write::{write_split, LinkMode, MANIFEST_NAME};

/// Thresholds of near-copy detection and the decode limits of the audit.
///
/// ```
/// use fracture_data::audit::AuditConfig;
/// let cfg = AuditConfig::default();
/// assert_eq!((cfg.max_hamming, cfg.min_correlation), (8, 0.995));
/// cfg.validate().unwrap();
/// assert!(AuditConfig { min_correlation: 1.5, ..cfg }.validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditConfig {
    /// Largest Hamming distance (of 63 bits) between two pHashes, under the best of the 8
    /// transforms, for a pair to be a near-copy candidate (default 8).
    pub max_hamming: u32,
    /// Smallest Pearson correlation of the two 32x32 thumbnails (one transformed) that
    /// confirms a candidate as a near copy (default 0.995).
    pub min_correlation: f32,
    /// Decode limits (bad files are reported, not fatal).
    pub limits: DecodeLimits,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_hamming: 8,
            min_correlation: 0.995,
            limits: DecodeLimits::default(),
        }
    }
}

impl AuditConfig {
    /// Checks the thresholds' ranges: `max_hamming` in 0..=63, `min_correlation` in [-1, 1].
    pub fn validate(&self) -> crate::Result<()> {
        if self.max_hamming > 63 {
            return Err(crate::DataError::Config(format!(
                "max_hamming must be in 0..=63 (bits of a pHash), got {}",
                self.max_hamming
            )));
        }
        if !(-1.0..=1.0).contains(&self.min_correlation) {
            return Err(crate::DataError::Config(format!(
                "min_correlation must be in [-1, 1], got {}",
                self.min_correlation
            )));
        }
        Ok(())
    }
}

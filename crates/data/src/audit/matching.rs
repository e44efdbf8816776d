//! Finding copy pairs among signatures.
//!
//! Every pair of files is compared once: the first file's pHash under each of the 8 transforms
//! against the second's plain pHash (8 XOR-and-popcount steps per pair). That is a brute-force
//! scan, O(n^2), but a cheap one: 20,000 files make 2 x 10^8 pairs, a few seconds on 2 cores
//! (`docs/BENCHMARKS.md`), against minutes of decoding. Only the candidates within
//! [`AuditConfig::max_hamming`] bits get the thumbnail correlation. Exact copies (equal pixel
//! hash, size and thumbnail) are recorded as such whatever their hashes say.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::perceptual::{Dihedral, NearSignature};
use super::AuditConfig;

/// Two files found to be copies of each other (`a < b`, indices into the scan's files).
///
/// ```
/// use fracture_data::audit::{CopyPair, Dihedral};
/// let p = CopyPair { a: 0, b: 7, exact: false, hamming: 3, correlation: 0.98, transform: Dihedral::FLIP_H };
/// assert!(p.a < p.b);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CopyPair {
    /// The first file.
    pub a: usize,
    /// The second file.
    pub b: usize,
    /// True if their decoded pixels are identical.
    pub exact: bool,
    /// pHash distance in bits under `transform`.
    pub hamming: u32,
    /// Thumbnail correlation under `transform`.
    pub correlation: f32,
    /// The transform that maps `a` onto `b`.
    pub transform: Dihedral,
}

/// What matching needs of one file.
pub(crate) struct Signature {
    pub pixel_hash: u64,
    pub dims: (u32, u32),
    pub near: NearSignature,
}

impl Signature {
    fn same_pixels(&self, other: &Signature) -> bool {
        self.pixel_hash == other.pixel_hash
            && self.dims == other.dims
            && self.near.thumb == other.near.thumb
    }
}

/// All copy pairs among `sigs`, sorted by `(a, b)`.
pub(crate) fn find_pairs(sigs: &[Signature], config: &AuditConfig) -> Vec<CopyPair> {
    let plain: Vec<u64> = sigs.iter().map(|s| s.near.phash[0]).collect();
    (0..sigs.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            let si = &sigs[i];
            let hashes = si.near.phash;
            let plain = &plain;
            (i + 1..sigs.len()).filter_map(move |j| {
                let sj = &sigs[j];
                if si.same_pixels(sj) {
                    return Some(CopyPair {
                        a: i,
                        b: j,
                        exact: true,
                        hamming: 0,
                        correlation: 1.0,
                        transform: Dihedral::IDENTITY,
                    });
                }
                let target = plain[j];
                let best = hashes
                    .iter()
                    .map(|h| (h ^ target).count_ones())
                    .min()
                    .expect("8 hashes");
                if best > config.max_hamming {
                    return None;
                }
                confirm(i, j, si, sj, config)
            })
        })
        .collect()
}

/// The best-correlated transform among those within the Hamming threshold, if it passes.
fn confirm(
    i: usize,
    j: usize,
    si: &Signature,
    sj: &Signature,
    config: &AuditConfig,
) -> Option<CopyPair> {
    let target = sj.near.phash[0];
    let mut best: Option<CopyPair> = None;
    for (t, h) in Dihedral::ALL.into_iter().zip(si.near.phash) {
        let hamming = (h ^ target).count_ones();
        if hamming > config.max_hamming {
            continue;
        }
        let correlation = si.near.correlation(&sj.near, t);
        if correlation >= config.min_correlation && best.is_none_or(|b| correlation > b.correlation)
        {
            best = Some(CopyPair {
                a: i,
                b: j,
                exact: false,
                hamming,
                correlation,
                transform: t,
            });
        }
    }
    best
}

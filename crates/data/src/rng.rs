//! Deterministic random streams derived from a seed and a few counters.
//!
//! Every random decision in this crate (shuffling, balanced sampling, augmentation, phantoms)
//! draws from its own ChaCha8 stream whose 256-bit key is `(seed, a, b, domain)`. A sample's
//! stream therefore depends only on the seed, the epoch and its position, never on which thread
//! processes it or in which order, so results do not depend on the thread count.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Domain tag of augmentation streams.
pub(crate) const DOMAIN_AUGMENT: u64 = 0x6175_676d_656e_7401;
/// Domain tag of epoch-order streams (shuffle, balanced sampling).
pub(crate) const DOMAIN_ORDER: u64 = 0x6f72_6465_7200_0002;
/// Domain tag of phantom streams.
pub(crate) const DOMAIN_PHANTOM: u64 = 0x7068_616e_746f_6d03;
/// Domain tag of grouped-split streams (`fracture split`).
pub(crate) const DOMAIN_SPLIT: u64 = 0x7370_6c69_7400_0004;

/// A ChaCha8 generator keyed by `(seed, a, b, domain)`.
pub(crate) fn derive_rng(seed: u64, a: u64, b: u64, domain: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (i, w) in [seed, a, b, domain].into_iter().enumerate() {
        key[i * 8..(i + 1) * 8].copy_from_slice(&w.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// The augmentation generator of one sample: keyed by the loader seed, the epoch and the
/// sample's position in that epoch.
///
/// ```
/// use fracture_data::sample_rng;
/// use rand::Rng;
/// let a: u64 = sample_rng(7, 2, 5).gen();
/// assert_eq!(a, sample_rng(7, 2, 5).gen::<u64>());
/// assert_ne!(a, sample_rng(7, 2, 6).gen::<u64>());
/// ```
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    derive_rng(seed, epoch, index, DOMAIN_AUGMENT)
}

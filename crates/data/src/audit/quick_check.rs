//! The cheap exact-copy check `fracture train` runs before the first epoch.
//!
//! It reuses the images the loader already holds (decoded, resized to the input size, 8-bit):
//! no file is read again. Identical decoded files give identical resized bytes, so every exact
//! copy is found; the converse is not guaranteed (two different pictures could in principle
//! shrink to the same bytes, e.g. two blank images), which is why `fracture audit` hashes the
//! full-resolution pixels instead. Near copies (flipped, re-encoded, ...) need `fracture audit`.

use std::collections::HashMap;

use super::pixel_hash::hash_bytes;
use crate::folder::DatasetSplit;

/// The images of `other` whose pixels equal an image of `reference`, as
/// `(index in other, index in reference)`, in `other`'s order.
///
/// ```
/// use fracture_data::{audit::shared_images, DatasetSplit, Split};
/// let classes = vec!["fractured".to_string(), "not_fractured".to_string()];
/// let split = |s, px: Vec<u8>, n: usize| DatasetSplit::new(s, classes.clone(), 2, px,
///     vec![0; n], (0..n).map(|i| format!("{i}.png").into()).collect()).unwrap();
/// let train = split(Split::Train, vec![1, 2, 3, 4, 9, 9, 9, 9], 2);
/// let test = split(Split::Test, vec![5, 5, 5, 5, 9, 9, 9, 9], 2);
/// assert_eq!(shared_images(&train, &test), vec![(1, 1)]);
/// ```
pub fn shared_images(reference: &DatasetSplit, other: &DatasetSplit) -> Vec<(usize, usize)> {
    let key = |px: &[u8]| hash_bytes(px, px.len() as u64);
    let mut index: HashMap<u64, Vec<usize>> = HashMap::with_capacity(reference.len());
    for i in 0..reference.len() {
        index.entry(key(reference.image(i))).or_default().push(i);
    }
    let mut out = Vec::new();
    for j in 0..other.len() {
        let px = other.image(j);
        if let Some(candidates) = index.get(&key(px)) {
            if let Some(&i) = candidates.iter().find(|&&i| reference.image(i) == px) {
                out.push((j, i));
            }
        }
    }
    out
}

//! Content hash of decoded pixels: the key of exact-copy detection.
//!
//! The hash covers the width, the height and every 8-bit luminance value after decoding, so a
//! PNG re-encoded losslessly, a copy under another name or another container (BMP, TIFF) of the
//! same pixels all hash alike, while a file's bytes (metadata, compression level) do not
//! matter. It is not cryptographic: 64 bits of a strong mix (the splitmix64 finaliser over each
//! 8-byte word), enough to tell 20,000 honest files apart (a chance collision among them has a
//! probability near 1e-11); the audit also requires equal thumbnails before it calls two files
//! exact copies.

use crate::decode::GrayImage;

/// The splitmix64 finaliser: every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit hash of `bytes`, seeded by `seed` (here: the image's dimensions).
///
/// ```
/// use fracture_data::audit::hash_bytes;
/// assert_eq!(hash_bytes(b"radiograph", 1), hash_bytes(b"radiograph", 1));
/// assert_ne!(hash_bytes(b"radiograph", 1), hash_bytes(b"radiograph", 2));
/// assert_ne!(hash_bytes(b"radiograph", 1), hash_bytes(b"radiographs", 1));
/// ```
pub fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    let mut h = mix(seed ^ 0x6175_6469_7400_0001);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("chunks of 8 bytes"));
        h = mix(h ^ mix(w)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    }
    let mut tail = [0u8; 8];
    let rest = words.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    h = mix(h ^ mix(u64::from_le_bytes(tail)));
    mix(h ^ bytes.len() as u64)
}

/// The content hash of a decoded image: its dimensions and its pixels.
///
/// ```
/// use fracture_data::{audit::pixel_hash, GrayImage};
/// let a = GrayImage::from_fn(6, 4, |x, y| image::Luma([(x * 40 + y) as u8]));
/// assert_eq!(pixel_hash(&a), pixel_hash(&a.clone()));
/// let mut b = a.clone();
/// b.get_pixel_mut(5, 3).0[0] ^= 1; // one bit of one pixel
/// assert_ne!(pixel_hash(&a), pixel_hash(&b));
/// // Same bytes, other shape: another image.
/// let c = GrayImage::from_raw(4, 6, a.as_raw().clone()).unwrap();
/// assert_ne!(pixel_hash(&a), pixel_hash(&c));
/// ```
pub fn pixel_hash(image: &GrayImage) -> u64 {
    let (w, h) = image.dimensions();
    hash_bytes(image.as_raw(), ((w as u64) << 32) | h as u64)
}

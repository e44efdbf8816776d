//! Near-copy signatures: a 32x32 thumbnail and its DCT perceptual hash under the 8 dihedral
//! transforms.
//!
//! - **Thumbnail**: the decoded image stretched to 32x32 with the loader's own linear filter
//!   ([`crate::resize_square`] in [`ResizeMode::Stretch`], whose support widens when shrinking,
//!   so it averages). Stretching both axes to the same side makes the thumbnail of a resized
//!   copy equal, up to rounding, to the original's, and the thumbnail of a copy flipped or
//!   rotated by 90 degrees the flipped or rotated thumbnail.
//! - **Perceptual hash** (pHash): the 8x8 lowest frequencies of the thumbnail's 2-D DCT-II; bit
//!   `k` is set when coefficient `k` is above the median of the 63 AC coefficients (the DC term,
//!   bit 0, is always 0). A brightness offset only moves the DC term and a contrast gain scales
//!   every coefficient, so neither changes the bits; JPEG noise and resampling move high
//!   frequencies, which are not used. It is computed for each of the 8 [`Dihedral`] transforms
//!   of the thumbnail, so that a flipped or rotated copy matches the original's hash under
//!   one of them.
//! - **Correlation**: the Pearson correlation of two thumbnails (one transformed), invariant to
//!   brightness and contrast; it confirms a pHash match.

use serde::{Deserialize, Serialize};

use crate::decode::GrayImage;
use crate::resize::{resize_square, ResizeMode};

/// Side of the thumbnail in pixels.
pub const THUMB: usize = 32;
/// Number of low DCT frequencies per axis in the hash.
const FREQ: usize = 8;

/// One of the 8 symmetries of the square: an optional transpose, then optional horizontal and
/// vertical flips. Rotations by 90 and 270 degrees are a transpose with one flip; by 180
/// degrees, both flips.
///
/// ```
/// use fracture_data::audit::Dihedral;
/// assert_eq!(Dihedral::ALL.len(), 8);
/// assert_eq!(Dihedral::ROTATE_90.to_string(), "rotate 90");
/// // Source of output pixel (x, y) = (0, 0) in a 4x4 picture rotated by 90 degrees clockwise:
/// // the bottom-left corner.
/// assert_eq!(Dihedral::ROTATE_90.source(0, 0, 4), (0, 3));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dihedral(pub u8);

impl Dihedral {
    /// The identity.
    pub const IDENTITY: Dihedral = Dihedral(0);
    /// Mirror left-right.
    pub const FLIP_H: Dihedral = Dihedral(1);
    /// Mirror top-bottom.
    pub const FLIP_V: Dihedral = Dihedral(2);
    /// Rotation by 90 degrees clockwise.
    pub const ROTATE_90: Dihedral = Dihedral(6);
    /// All 8 transforms, identity first.
    pub const ALL: [Dihedral; 8] = [
        Dihedral(0),
        Dihedral(1),
        Dihedral(2),
        Dihedral(3),
        Dihedral(4),
        Dihedral(5),
        Dihedral(6),
        Dihedral(7),
    ];

    /// The source pixel `(x, y)` (column, row) of output pixel `(x, y)` in an `n` x `n` image.
    pub fn source(self, x: usize, y: usize, n: usize) -> (usize, usize) {
        let (mut sx, mut sy) = if self.0 & 4 != 0 { (y, x) } else { (x, y) };
        if self.0 & 1 != 0 {
            sx = n - 1 - sx;
        }
        if self.0 & 2 != 0 {
            sy = n - 1 - sy;
        }
        (sx, sy)
    }

    /// Applies the transform to a square `n` x `n` image stored row-major.
    ///
    /// ```
    /// use fracture_data::audit::Dihedral;
    /// // 2x2: [a b; c d] mirrored left-right is [b a; d c].
    /// assert_eq!(Dihedral::FLIP_H.apply(&[1, 2, 3, 4], 2), vec![2, 1, 4, 3]);
    /// ```
    pub fn apply<T: Copy>(self, pixels: &[T], n: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(n * n);
        for y in 0..n {
            for x in 0..n {
                let (sx, sy) = self.source(x, y, n);
                out.push(pixels[sy * n + sx]);
            }
        }
        out
    }
}

impl std::fmt::Display for Dihedral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            0 => "identity",
            1 => "flip horizontal",
            2 => "flip vertical",
            3 => "rotate 180",
            4 => "transpose",
            5 => "rotate 270",
            6 => "rotate 90",
            _ => "anti-transpose",
        })
    }
}

/// A file's near-copy signature: its 32x32 thumbnail and the pHash of each dihedral transform
/// of it (`phash[t]` = hash of the thumbnail under `Dihedral::ALL[t]`).
///
/// ```
/// use fracture_data::{audit::NearSignature, GrayImage};
/// let img = GrayImage::from_fn(90, 60, |x, y| image::Luma([((x * 3 + y * y) % 256) as u8]));
/// let a = NearSignature::of(&img);
/// let flipped = image::imageops::flip_horizontal(&img);
/// let b = NearSignature::of(&flipped);
/// assert_eq!(a.phash[1], b.phash[0]); // a mirrored is b
/// assert!(a.correlation(&b, fracture_data::audit::Dihedral::FLIP_H) > 0.99);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct NearSignature {
    /// The 32x32 thumbnail, row-major.
    pub thumb: Box<[u8]>,
    /// The pHash under each of the 8 transforms, in [`Dihedral::ALL`] order.
    pub phash: [u64; 8],
}

impl NearSignature {
    /// Computes the signature of a decoded image.
    pub fn of(image: &GrayImage) -> NearSignature {
        let thumb = resize_square(image, THUMB, ResizeMode::Stretch).into_boxed_slice();
        let mut phash = [0u64; 8];
        for (h, t) in phash.iter_mut().zip(Dihedral::ALL) {
            *h = dct_hash(&t.apply(&thumb, THUMB));
        }
        NearSignature { thumb, phash }
    }

    /// Pearson correlation between this thumbnail under `t` and `other`'s thumbnail, in
    /// [-1, 1]. Two flat thumbnails correlate 1 with each other and 0 with anything else.
    pub fn correlation(&self, other: &NearSignature, t: Dihedral) -> f32 {
        let a = t.apply(&self.thumb, THUMB);
        pearson(&a, &other.thumb)
    }
}

fn pearson(a: &[u8], b: &[u8]) -> f32 {
    let n = a.len() as f64;
    let ma = a.iter().map(|&v| v as f64).sum::<f64>() / n;
    let mb = b.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    // A flat thumbnail (blank image) has no pattern to correlate.
    const FLAT: f64 = 1e-9;
    match (saa < FLAT, sbb < FLAT) {
        (true, true) => 1.0,
        (true, false) | (false, true) => 0.0,
        _ => (sab / (saa * sbb).sqrt()) as f32,
    }
}

/// The pHash of a 32x32 thumbnail (see the module docs).
fn dct_hash(thumb: &[u8]) -> u64 {
    debug_assert_eq!(thumb.len(), THUMB * THUMB);
    // cos[k][x] = cos(pi (2x + 1) k / 64)
    let mut cos = [[0f64; THUMB]; FREQ];
    for (k, row) in cos.iter_mut().enumerate() {
        for (x, c) in row.iter_mut().enumerate() {
            *c = (std::f64::consts::PI * (2 * x + 1) as f64 * k as f64 / (2 * THUMB) as f64).cos();
        }
    }
    // Rows first: r[y][v] = sum_x t[y][x] cos[v][x]; then columns.
    let mut r = [[0f64; FREQ]; THUMB];
    for (y, ry) in r.iter_mut().enumerate() {
        let line = &thumb[y * THUMB..(y + 1) * THUMB];
        for (v, out) in ry.iter_mut().enumerate() {
            *out = line.iter().zip(&cos[v]).map(|(&p, &c)| p as f64 * c).sum();
        }
    }
    let mut coef = [0f64; FREQ * FREQ];
    for u in 0..FREQ {
        for v in 0..FREQ {
            coef[u * FREQ + v] = (0..THUMB).map(|y| r[y][v] * cos[u][y]).sum();
        }
    }
    let mut ac: Vec<f64> = coef[1..].to_vec();
    ac.sort_by(f64::total_cmp);
    let median = ac[ac.len() / 2];
    let mut hash = 0u64;
    for (k, &c) in coef.iter().enumerate().skip(1) {
        if c > median {
            hash |= 1 << k;
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_form_the_dihedral_group() {
        let px: Vec<u16> = (0..16).collect();
        let mut seen: Vec<Vec<u16>> = Dihedral::ALL.iter().map(|t| t.apply(&px, 4)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 8, "8 distinct transforms");
        // Four rotations by 90 degrees give the identity.
        let mut r = px.clone();
        for _ in 0..4 {
            r = Dihedral::ROTATE_90.apply(&r, 4);
        }
        assert_eq!(r, px);
        // Rotation by 90 clockwise: the top row becomes the right column.
        let rot = Dihedral::ROTATE_90.apply(&px, 4);
        assert_eq!([rot[3], rot[7], rot[11], rot[15]], [0, 1, 2, 3]);
    }

    #[test]
    fn hash_ignores_brightness_and_contrast() {
        let t: Vec<u8> = (0..1024)
            .map(|i| ((i * 7 + i / 32 * 13) % 200) as u8)
            .collect();
        let brighter: Vec<u8> = t.iter().map(|&v| v / 2 + 40).collect();
        assert_eq!(dct_hash(&t), dct_hash(&t));
        let d = (dct_hash(&t) ^ dct_hash(&brighter)).count_ones();
        assert!(d <= 2, "hash moved by {d} bits under an affine change");
        assert!((pearson(&t, &brighter) - 1.0).abs() < 1e-2);
    }
}

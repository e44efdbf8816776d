//! Seeded data augmentation for training images.
//!
//! [`Augment`] composes, each with its own probability: horizontal and vertical flips, rotation
//! (default up to ±15°), random resized crop, translation, brightness and contrast jitter and
//! Gaussian noise, and, off by default, the ways other hospitals' images differ in acquisition
//! and display: gamma, blur and down-and-up-scaling ([`Augment::acquisition`]). All geometric operations are folded into one affine map and sampled once
//! with bilinear interpolation (outside the image counts as black); photometric operations follow,
//! and the result is clamped to `[0, 1]`. Given the same random generator the output is the
//! same, and the batch loader gives each sample its own generator
//! ([`crate::sample_rng`]`(seed, epoch, position)`), so batches do not depend on the thread count.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Random rotation about the image centre.
///
/// ```
/// use fracture_data::augment::Rotation;
/// assert_eq!(Rotation::default().max_degrees, 15.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rotation {
    /// Probability of rotating (default 0.5).
    pub p: f32,
    /// Angle drawn uniformly in `[-max_degrees, max_degrees]` (default 15).
    pub max_degrees: f32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            p: 0.5,
            max_degrees: 15.0,
        }
    }
}

/// Random resized crop: a window of random area and aspect ratio is scaled to the full size.
///
/// ```
/// use fracture_data::augment::ResizedCrop;
/// assert_eq!(ResizedCrop::default().scale, [0.8, 1.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResizedCrop {
    /// Probability of cropping (default 0.5).
    pub p: f32,
    /// Range of the window's area as a fraction of the image (default `[0.8, 1.0]`).
    pub scale: [f32; 2],
    /// Range of the window's aspect ratio width/height, drawn log-uniformly
    /// (default `[3/4, 4/3]`).
    pub ratio: [f32; 2],
}

impl Default for ResizedCrop {
    fn default() -> Self {
        ResizedCrop {
            p: 0.5,
            scale: [0.8, 1.0],
            ratio: [0.75, 4.0 / 3.0],
        }
    }
}

/// Random translation.
///
/// ```
/// use fracture_data::augment::Translate;
/// assert_eq!(Translate::default().max_fraction, 0.1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Translate {
    /// Probability of translating (default 0.3).
    pub p: f32,
    /// Largest shift along each axis as a fraction of the image side (default 0.1).
    pub max_fraction: f32,
}

impl Default for Translate {
    fn default() -> Self {
        Translate {
            p: 0.3,
            max_fraction: 0.1,
        }
    }
}

/// A photometric jitter: with probability `p`, a value drawn uniformly in `[-amount, amount]`.
///
/// For brightness the value is added to `[0, 1]` pixels; for contrast the pixels' distance to
/// the image mean is multiplied by `1 + value`.
///
/// ```
/// use fracture_data::augment::Jitter;
/// let j = Jitter { p: 1.0, amount: 0.2 };
/// assert!(j.amount > 0.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Jitter {
    /// Probability of applying the jitter.
    pub p: f32,
    /// Largest magnitude of the change.
    pub amount: f32,
}

/// Additive Gaussian noise on `[0, 1]` pixels.
///
/// ```
/// use fracture_data::augment::Noise;
/// assert_eq!(Noise::default().p, 0.0); // off unless asked for
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    /// Probability of adding noise (default 0: off).
    pub p: f32,
    /// Standard deviation on the `[0, 1]` scale (default 0.02).
    pub std: f32,
}

impl Default for Noise {
    fn default() -> Self {
        Noise { p: 0.0, std: 0.02 }
    }
}

/// A random gamma: `x -> x^g` on `[0, 1]` pixels, `g` drawn log-uniformly in `range`
/// (a display or detector response that differs from the training images').
///
/// ```
/// use fracture_data::augment::Gamma;
/// assert_eq!(Gamma::default().p, 0.0); // off unless asked for
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gamma {
    /// Probability (default 0: off).
    pub p: f32,
    /// Range of the exponent (default `[0.6, 1.6]`).
    pub range: [f32; 2],
}

impl Default for Gamma {
    fn default() -> Self {
        Gamma {
            p: 0.0,
            range: [0.6, 1.6],
        }
    }
}

/// A Gaussian blur of standard deviation drawn uniformly in `[0.3, max_sigma]` pixels.
///
/// ```
/// use fracture_data::augment::Blur;
/// assert_eq!(Blur::default().p, 0.0); // off unless asked for
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Blur {
    /// Probability (default 0: off).
    pub p: f32,
    /// Largest standard deviation in pixels (default 1.2).
    pub max_sigma: f32,
}

impl Default for Blur {
    fn default() -> Self {
        Blur {
            p: 0.0,
            max_sigma: 1.2,
        }
    }
}

/// Down-and-up-scaling: the image is averaged down by a factor drawn in `[min_factor, 1]` and
/// scaled back up bilinearly, as a low-resolution or re-scaled source looks.
///
/// ```
/// use fracture_data::augment::Downscale;
/// assert_eq!(Downscale::default().p, 0.0); // off unless asked for
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Downscale {
    /// Probability (default 0: off).
    pub p: f32,
    /// Smallest scale factor (default 0.4).
    pub min_factor: f32,
}

impl Default for Downscale {
    fn default() -> Self {
        Downscale {
            p: 0.0,
            min_factor: 0.4,
        }
    }
}

/// The geometric part of one augmentation draw: the affine map from output positions to
/// source positions (continuous pixel coordinates, pixel `i` spanning `[i, i + 1]`), so that
/// annotations (finding boxes) can follow the image ([`Augment::apply_traced`]).
///
/// ```
/// use fracture_data::{sample_rng, Augment};
/// let aug = Augment { hflip: 1.0, ..Augment::none() };
/// let mut out = vec![0.0; 64];
/// let warp = aug.apply_traced(&[0; 64], 8, &mut sample_rng(0, 0, 0), &mut out)?.unwrap();
/// assert_eq!(warp.to_source([1.0, 2.0]), [7.0, 2.0]);
/// assert_eq!(warp.to_output([7.0, 2.0]), [1.0, 2.0]);
/// # Ok::<(), fracture_data::DataError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Warp {
    affine: Affine,
    centre: f32,
}

impl Warp {
    /// Where the output position `p` samples the source.
    pub fn to_source(&self, p: [f32; 2]) -> [f32; 2] {
        let [[a, b], [c, d]] = self.affine.m;
        let (dx, dy) = (p[0] - self.centre, p[1] - self.centre);
        [
            a * dx + b * dy + self.affine.t[0] + self.centre,
            c * dx + d * dy + self.affine.t[1] + self.centre,
        ]
    }

    /// Where the source position `q` lands in the output (the inverse map).
    pub fn to_output(&self, q: [f32; 2]) -> [f32; 2] {
        let [[a, b], [c, d]] = self.affine.m;
        let det = a * d - b * c;
        let (rx, ry) = (
            q[0] - self.affine.t[0] - self.centre,
            q[1] - self.affine.t[1] - self.centre,
        );
        [
            (d * rx - b * ry) / det + self.centre,
            (-c * rx + a * ry) / det + self.centre,
        ]
    }
}

/// The augmentation pipeline; every step has its own probability (0 disables it).
///
/// ```
/// use fracture_data::{sample_rng, Augment};
/// let aug = Augment::default();
/// let src = vec![128u8; 16 * 16];
/// let mut out = vec![0.0f32; 16 * 16];
/// aug.apply(&src, 16, &mut sample_rng(1, 0, 3), &mut out).unwrap();
/// assert!(out.iter().all(|&v| (0.0..=1.0).contains(&v)));
/// let mut again = vec![0.0f32; 16 * 16];
/// aug.apply(&src, 16, &mut sample_rng(1, 0, 3), &mut again).unwrap();
/// assert_eq!(out, again);
///
/// // No augmentation only scales to [0, 1]; configurations are validated.
/// let mut out = [0.0f32; 4];
/// Augment::none().apply(&[0, 51, 102, 255], 2, &mut sample_rng(0, 0, 0), &mut out).unwrap();
/// assert_eq!(out, [0.0, 0.2, 0.4, 1.0]);
/// assert!(Augment { hflip: 1.5, ..Augment::default() }.validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Probability of a horizontal flip (default 0.5).
    pub hflip: f32,
    /// Probability of a vertical flip (default 0: radiographs have a usual up-down orientation).
    pub vflip: f32,
    /// Random rotation.
    pub rotation: Rotation,
    /// Random resized crop.
    pub crop: ResizedCrop,
    /// Random translation.
    pub translate: Translate,
    /// Brightness jitter (default p 0.5, ±0.1).
    pub brightness: Jitter,
    /// Contrast jitter (default p 0.5, ±20 %).
    pub contrast: Jitter,
    /// Gaussian noise (default off).
    pub noise: Noise,
    /// Gamma (default off; files written before it existed read as off).
    #[serde(default)]
    pub gamma: Gamma,
    /// Gaussian blur (default off).
    #[serde(default)]
    pub blur: Blur,
    /// Down-and-up-scaling (default off).
    #[serde(default)]
    pub downscale: Downscale,
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            hflip: 0.5,
            vflip: 0.0,
            rotation: Rotation::default(),
            crop: ResizedCrop::default(),
            translate: Translate::default(),
            brightness: Jitter {
                p: 0.5,
                amount: 0.1,
            },
            contrast: Jitter {
                p: 0.5,
                amount: 0.2,
            },
            noise: Noise::default(),
            gamma: Gamma::default(),
            blur: Blur::default(),
            downscale: Downscale::default(),
        }
    }
}

/// The affine map from output pixel centres to source pixel coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Affine {
    /// `src = m * (out - c) + t + c`, with `c` the image centre.
    m: [[f32; 2]; 2],
    t: [f32; 2],
}

impl Augment {
    /// No augmentation at all (every probability 0).
    pub fn none() -> Augment {
        Augment {
            hflip: 0.0,
            vflip: 0.0,
            rotation: Rotation {
                p: 0.0,
                ..Rotation::default()
            },
            crop: ResizedCrop {
                p: 0.0,
                ..ResizedCrop::default()
            },
            translate: Translate {
                p: 0.0,
                ..Translate::default()
            },
            brightness: Jitter {
                p: 0.0,
                amount: 0.0,
            },
            contrast: Jitter {
                p: 0.0,
                amount: 0.0,
            },
            noise: Noise {
                p: 0.0,
                ..Noise::default()
            },
            gamma: Gamma::default(),
            blur: Blur::default(),
            downscale: Downscale::default(),
        }
    }

    /// The default pipeline plus what differs between sources: crops down to 35 % of the
    /// area (close-ups of one hand or finger), rotation up to 20 degrees, gamma 0.6-1.6,
    /// contrast ±30 %, blur, down-and-up-scaling and noise. What `fracture train --augment
    /// strong` uses.
    ///
    /// ```
    /// use fracture_data::Augment;
    /// let a = Augment::acquisition();
    /// a.validate().unwrap();
    /// assert!(a.gamma.p > 0.0 && a.crop.scale[0] < Augment::default().crop.scale[0]);
    /// ```
    pub fn acquisition() -> Augment {
        Augment {
            rotation: Rotation {
                p: 0.6,
                max_degrees: 20.0,
            },
            crop: ResizedCrop {
                p: 0.6,
                scale: [0.35, 1.0],
                ratio: [0.75, 4.0 / 3.0],
            },
            contrast: Jitter {
                p: 0.5,
                amount: 0.3,
            },
            noise: Noise { p: 0.3, std: 0.02 },
            gamma: Gamma {
                p: 0.5,
                range: [0.6, 1.6],
            },
            blur: Blur {
                p: 0.25,
                max_sigma: 1.2,
            },
            downscale: Downscale {
                p: 0.25,
                min_factor: 0.4,
            },
            ..Augment::default()
        }
    }

    /// Checks probabilities and ranges.
    pub fn validate(&self) -> Result<()> {
        let probs = [
            ("hflip", self.hflip),
            ("vflip", self.vflip),
            ("rotation.p", self.rotation.p),
            ("crop.p", self.crop.p),
            ("translate.p", self.translate.p),
            ("brightness.p", self.brightness.p),
            ("contrast.p", self.contrast.p),
            ("noise.p", self.noise.p),
            ("gamma.p", self.gamma.p),
            ("blur.p", self.blur.p),
            ("downscale.p", self.downscale.p),
        ];
        for (name, p) in probs {
            if !(0.0..=1.0).contains(&p) {
                return Err(bad(format!(
                    "{name} must be a probability in [0, 1], got {p}"
                )));
            }
        }
        let checks = [
            (
                "rotation.max_degrees in [0, 180]",
                (0.0..=180.0).contains(&self.rotation.max_degrees),
            ),
            (
                "crop.scale within (0, 1] and ordered",
                self.crop.scale[0] > 0.0
                    && self.crop.scale[0] <= self.crop.scale[1]
                    && self.crop.scale[1] <= 1.0,
            ),
            (
                "crop.ratio positive and ordered",
                self.crop.ratio[0] > 0.0 && self.crop.ratio[0] <= self.crop.ratio[1],
            ),
            (
                "translate.max_fraction in [0, 1]",
                (0.0..=1.0).contains(&self.translate.max_fraction),
            ),
            (
                "brightness.amount in [0, 1]",
                (0.0..=1.0).contains(&self.brightness.amount),
            ),
            (
                "contrast.amount in [0, 1]",
                (0.0..=1.0).contains(&self.contrast.amount),
            ),
            ("noise.std in [0, 1]", (0.0..=1.0).contains(&self.noise.std)),
            (
                "gamma.range positive and ordered, within [0.1, 10]",
                self.gamma.range[0] >= 0.1
                    && self.gamma.range[0] <= self.gamma.range[1]
                    && self.gamma.range[1] <= 10.0,
            ),
            (
                "blur.max_sigma in [0.3, 10]",
                (0.3..=10.0).contains(&self.blur.max_sigma),
            ),
            (
                "downscale.min_factor in [0.1, 1]",
                (0.1..=1.0).contains(&self.downscale.min_factor),
            ),
        ];
        for (what, ok) in checks {
            if !ok {
                return Err(bad(format!("augmentation: expected {what} ({self:?})")));
            }
        }
        Ok(())
    }

    /// Augments one square 8-bit image of side `size` into `out` (same length), producing
    /// `[0, 1]` values (standardisation comes after, in the loader).
    ///
    /// Fails if `src` or `out` is not `size * size` long.
    pub fn apply<R: Rng + ?Sized>(
        &self,
        src: &[u8],
        size: usize,
        rng: &mut R,
        out: &mut [f32],
    ) -> Result<()> {
        self.apply_traced(src, size, rng, out).map(|_| ())
    }

    /// As [`Augment::apply`] (the same pixels for the same generator), also returning the
    /// geometric map it drew (`None`: the identity), so that annotations can follow.
    pub fn apply_traced<R: Rng + ?Sized>(
        &self,
        src: &[u8],
        size: usize,
        rng: &mut R,
        out: &mut [f32],
    ) -> Result<Option<Warp>> {
        let n = size * size;
        if src.len() != n || out.len() != n {
            return Err(bad(format!(
                "augment: expected {size}x{size} = {n} pixels in and out, got {} and {}",
                src.len(),
                out.len()
            )));
        }
        let affine = self.draw_affine(size, rng);
        match &affine {
            Some(affine) => warp_bilinear(src, size, affine, out),
            None => {
                for (o, &p) in out.iter_mut().zip(src) {
                    *o = p as f32 / 255.0;
                }
            }
        }
        self.photometric(rng, out);
        self.acquisition_steps(rng, size, out);
        Ok(affine.map(|affine| Warp {
            affine,
            centre: size as f32 / 2.0,
        }))
    }

    /// Gamma, blur and down-and-up-scaling, each drawing nothing when off (so pipelines
    /// without them give the same pixels as before they existed).
    fn acquisition_steps<R: Rng + ?Sized>(&self, rng: &mut R, size: usize, out: &mut [f32]) {
        if fires(rng, self.gamma.p) {
            let (l0, l1) = (self.gamma.range[0].ln(), self.gamma.range[1].ln());
            let g = if l0 < l1 {
                rng.gen_range(l0..=l1).exp()
            } else {
                self.gamma.range[0]
            };
            for v in out.iter_mut() {
                *v = v.max(0.0).powf(g);
            }
        }
        if fires(rng, self.downscale.p) {
            let f = rng.gen_range(self.downscale.min_factor..=1.0);
            down_up(out, size, f);
        }
        if fires(rng, self.blur.p) {
            let sigma = rng.gen_range(0.3..=self.blur.max_sigma);
            gaussian_blur(out, size, sigma);
        }
        for v in out.iter_mut() {
            *v = v.clamp(0.0, 1.0);
        }
    }

    /// Draws the geometric part; `None` when no geometric step fires (identity).
    fn draw_affine<R: Rng + ?Sized>(&self, size: usize, rng: &mut R) -> Option<Affine> {
        let s = size as f32;
        let hflip = fires(rng, self.hflip);
        let vflip = fires(rng, self.vflip);
        let angle = if fires(rng, self.rotation.p) {
            let max = self.rotation.max_degrees.to_radians();
            rng.gen_range(-max..=max)
        } else {
            0.0
        };
        // Crop window (in source pixels) and its centre offset.
        let (mut sx, mut sy, mut tx, mut ty) = (1.0f32, 1.0f32, 0.0f32, 0.0f32);
        if fires(rng, self.crop.p) {
            let area = rng.gen_range(self.crop.scale[0]..=self.crop.scale[1]);
            let (lr0, lr1) = (self.crop.ratio[0].ln(), self.crop.ratio[1].ln());
            let ratio = rng.gen_range(lr0..=lr1).exp();
            sx = (area * ratio).sqrt().min(1.0);
            sy = (area / ratio).sqrt().min(1.0);
            let free_x = (1.0 - sx) * s / 2.0;
            let free_y = (1.0 - sy) * s / 2.0;
            tx = rng.gen_range(-free_x..=free_x);
            ty = rng.gen_range(-free_y..=free_y);
        }
        if fires(rng, self.translate.p) {
            let max = self.translate.max_fraction * s;
            tx += rng.gen_range(-max..=max);
            ty += rng.gen_range(-max..=max);
        }
        if !hflip && !vflip && angle == 0.0 && sx == 1.0 && sy == 1.0 && tx == 0.0 && ty == 0.0 {
            return None;
        }
        // out -> flip -> scale to the crop window -> rotate -> shift.
        let fx = if hflip { -sx } else { sx };
        let fy = if vflip { -sy } else { sy };
        let (sin, cos) = angle.sin_cos();
        Some(Affine {
            m: [[cos * fx, -sin * fy], [sin * fx, cos * fy]],
            t: [tx, ty],
        })
    }

    fn photometric<R: Rng + ?Sized>(&self, rng: &mut R, out: &mut [f32]) {
        if fires(rng, self.contrast.p) && self.contrast.amount > 0.0 {
            let factor = 1.0 + rng.gen_range(-self.contrast.amount..=self.contrast.amount);
            let mean = out.iter().map(|&v| v as f64).sum::<f64>() / out.len().max(1) as f64;
            let mean = mean as f32;
            for v in out.iter_mut() {
                *v = (*v - mean) * factor + mean;
            }
        }
        if fires(rng, self.brightness.p) && self.brightness.amount > 0.0 {
            let delta = rng.gen_range(-self.brightness.amount..=self.brightness.amount);
            for v in out.iter_mut() {
                *v += delta;
            }
        }
        if fires(rng, self.noise.p) && self.noise.std > 0.0 {
            for v in out.iter_mut() {
                let z: f32 = StandardNormal.sample(rng);
                *v += z * self.noise.std;
            }
        }
        for v in out.iter_mut() {
            *v = v.clamp(0.0, 1.0);
        }
    }
}

fn bad(msg: String) -> DataError {
    DataError::Config(msg)
}

/// Draws a Bernoulli(p) event; `p <= 0` never fires and draws nothing.
fn fires<R: Rng + ?Sized>(rng: &mut R, p: f32) -> bool {
    p > 0.0 && rng.gen::<f32>() < p
}

/// Averages `img` (`size` square) down to `round(size * f)` px with box sums and scales it back
/// up bilinearly, in place.
fn down_up(img: &mut [f32], size: usize, f: f32) {
    let small = ((size as f32 * f).round() as usize).clamp(1, size);
    if small == size {
        return;
    }
    let step = size as f32 / small as f32;
    let mut low = vec![0f32; small * small];
    for (sy, row) in low.chunks_exact_mut(small).enumerate() {
        let (y0, y1) = (
            (sy as f32 * step) as usize,
            (((sy + 1) as f32 * step) as usize).clamp(1, size),
        );
        for (sx, v) in row.iter_mut().enumerate() {
            let (x0, x1) = (
                (sx as f32 * step) as usize,
                (((sx + 1) as f32 * step) as usize).clamp(1, size),
            );
            let (y1, x1) = (y1.max(y0 + 1), x1.max(x0 + 1));
            let mut sum = 0f32;
            for y in y0..y1 {
                sum += img[y * size + x0..y * size + x1].iter().sum::<f32>();
            }
            *v = sum / ((y1 - y0) * (x1 - x0)) as f32;
        }
    }
    let last = (small - 1) as f32;
    for y in 0..size {
        let fy = ((y as f32 + 0.5) / step - 0.5).clamp(0.0, last);
        let (y0, wy) = (fy as usize, fy - (fy as usize) as f32);
        let y1 = (y0 + 1).min(small - 1);
        for x in 0..size {
            let fx = ((x as f32 + 0.5) / step - 0.5).clamp(0.0, last);
            let (x0, wx) = (fx as usize, fx - (fx as usize) as f32);
            let x1 = (x0 + 1).min(small - 1);
            let top = low[y0 * small + x0] * (1.0 - wx) + low[y0 * small + x1] * wx;
            let bottom = low[y1 * small + x0] * (1.0 - wx) + low[y1 * small + x1] * wx;
            img[y * size + x] = top * (1.0 - wy) + bottom * wy;
        }
    }
}

/// Separable Gaussian blur of `img` (`size` square) with standard deviation `sigma` pixels,
/// edges clamped, in place.
fn gaussian_blur(img: &mut [f32], size: usize, sigma: f32) {
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let last = size as isize - 1;
    let mut tmp = vec![0f32; img.len()];
    for y in 0..size {
        let row = &img[y * size..(y + 1) * size];
        for x in 0..size as isize {
            tmp[y * size + x as usize] = kernel
                .iter()
                .enumerate()
                .map(|(k, w)| w * row[(x + k as isize - radius).clamp(0, last) as usize])
                .sum();
        }
    }
    for y in 0..size as isize {
        for x in 0..size {
            img[y as usize * size + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, w)| w * tmp[(y + k as isize - radius).clamp(0, last) as usize * size + x])
                .sum();
        }
    }
}

/// Samples `src` through `affine` with bilinear interpolation; outside pixels are black.
///
/// The source is copied once into a buffer with a one-pixel black border, so that every sample
/// that touches the image reads four in-bounds pixels without branches, and floors are integer
/// truncations of non-negative values (no libm call).
fn warp_bilinear(src: &[u8], size: usize, affine: &Affine, out: &mut [f32]) {
    let stride = size + 2;
    let mut padded = vec![0u8; stride * stride];
    for (y, row) in src.chunks_exact(size).enumerate() {
        let start = (y + 1) * stride + 1;
        padded[start..start + size].copy_from_slice(row);
    }
    let c = size as f32 / 2.0;
    let limit = size as f32;
    let [[m00, m01], [m10, m11]] = affine.m;
    let scale = 1.0 / 255.0;
    for (oy, row) in out.chunks_exact_mut(size).enumerate() {
        let dy = oy as f32 + 0.5 - c;
        let dx0 = 0.5 - c;
        // Source position (pixel-index coordinates, centre of pixel i at i) of column 0, shifted
        // by +1 into the padded buffer's coordinates.
        let mut x = m00 * dx0 + m01 * dy + affine.t[0] + c + 0.5;
        let mut y = m10 * dx0 + m11 * dy + affine.t[1] + c + 0.5;
        for o in row.iter_mut() {
            // In padded coordinates the image spans (0, limit + 1); outside is all black.
            *o = if x > 0.0 && y > 0.0 && x < limit + 1.0 && y < limit + 1.0 {
                let (xi, yi) = (x as i32 as usize, y as i32 as usize);
                let (fx, fy) = (x - xi as f32, y - yi as f32);
                let i = yi * stride + xi;
                let (p00, p01) = (padded[i] as f32, padded[i + 1] as f32);
                let (p10, p11) = (padded[i + stride] as f32, padded[i + stride + 1] as f32);
                let top = p00 + (p01 - p00) * fx;
                let bottom = p10 + (p11 - p10) * fx;
                ((top + (bottom - top) * fy) * scale).clamp(0.0, 1.0)
            } else {
                0.0
            };
            x += m00;
            y += m10;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::sample_rng;

    #[test]
    fn hflip_is_exact_mirror() {
        let src: Vec<u8> = (0..16).map(|v| v * 10).collect();
        let aug = Augment {
            hflip: 1.0,
            ..Augment::none()
        };
        let mut out = vec![0.0; 16];
        aug.apply(&src, 4, &mut sample_rng(0, 0, 0), &mut out)
            .unwrap();
        for y in 0..4 {
            for x in 0..4 {
                let expected = src[y * 4 + (3 - x)] as f32 / 255.0;
                assert!((out[y * 4 + x] - expected).abs() < 1e-6, "({x},{y})");
            }
        }
    }

    #[test]
    fn vflip_is_exact_mirror() {
        let src: Vec<u8> = (0..9).map(|v| v * 20).collect();
        let aug = Augment {
            vflip: 1.0,
            ..Augment::none()
        };
        let mut out = vec![0.0; 9];
        aug.apply(&src, 3, &mut sample_rng(0, 0, 0), &mut out)
            .unwrap();
        for y in 0..3 {
            for x in 0..3 {
                let expected = src[(2 - y) * 3 + x] as f32 / 255.0;
                assert!((out[y * 3 + x] - expected).abs() < 1e-6, "({x},{y})");
            }
        }
    }

    #[test]
    fn rotation_by_90_degrees_moves_pixels_as_expected() {
        // A single bright pixel right of centre ends up below or above it after ±90°.
        let size = 9;
        let mut src = vec![0u8; size * size];
        src[4 * size + 7] = 255;
        // The map of a +90° rotation (drawn angles are random, so test the warp directly).
        let affine = Affine {
            m: [[0.0, -1.0], [1.0, 0.0]],
            t: [0.0, 0.0],
        };
        let mut out = vec![0.0; size * size];
        warp_bilinear(&src, size, &affine, &mut out);
        // out(x, y) = src(c + (-(y - c)), c + (x - c)): the bright source pixel (7, 4) shows at
        // the output pixel with x - c = 3 ... i.e. (4, 1).
        assert!((out[size + 4] - 1.0).abs() < 1e-5, "{out:?}");
    }

    #[test]
    fn crop_of_a_quarter_area_zooms_by_two() {
        // A horizontal ramp of 30 per pixel: after a 2x zoom it rises 15 per output pixel.
        let size = 8;
        let src: Vec<u8> = (0..64).map(|i| (i % 8) as u8 * 30).collect();
        let aug = Augment {
            crop: ResizedCrop {
                p: 1.0,
                scale: [0.25, 0.25],
                ratio: [1.0, 1.0],
            },
            ..Augment::none()
        };
        for index in 0..8 {
            let mut out = vec![0.0; 64];
            aug.apply(&src, size, &mut sample_rng(3, 1, index), &mut out)
                .unwrap();
            for y in 1..7 {
                for x in 1..6 {
                    let step = out[y * size + x + 1] - out[y * size + x];
                    assert!(
                        (step - 15.0 / 255.0).abs() < 1e-4,
                        "step {step} at ({x},{y})"
                    );
                }
            }
        }
    }

    #[test]
    fn acquisition_steps_keep_a_flat_image_flat_and_in_range() {
        let aug = Augment {
            gamma: Gamma {
                p: 1.0,
                range: [0.5, 0.5],
            },
            blur: Blur {
                p: 1.0,
                max_sigma: 2.0,
            },
            downscale: Downscale {
                p: 1.0,
                min_factor: 0.3,
            },
            ..Augment::none()
        };
        let src = vec![64u8; 20 * 20];
        let mut out = vec![0f32; 400];
        aug.apply(&src, 20, &mut sample_rng(0, 0, 0), &mut out)
            .unwrap();
        // gamma 0.5 of 64/255, and neither blur nor re-scaling changes a flat image.
        let want = (64.0f32 / 255.0).sqrt();
        assert!(
            out.iter().all(|&v| (v - want).abs() < 1e-5),
            "{:?}",
            &out[..4]
        );
    }

    #[test]
    fn blur_and_downscale_keep_the_mean_and_smooth_an_edge() {
        let mut img: Vec<f32> = (0..16 * 16)
            .map(|i| if i % 16 < 8 { 0.0 } else { 1.0 })
            .collect();
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        let m0 = mean(&img);
        let mut blurred = img.clone();
        gaussian_blur(&mut blurred, 16, 1.0);
        assert!((mean(&blurred) - m0).abs() < 1e-4);
        assert!(blurred[7] > 0.0 && blurred[8] < 1.0);
        down_up(&mut img, 16, 0.5);
        assert!((mean(&img) - m0).abs() < 0.02);
        assert!(img.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }

    #[test]
    fn new_steps_when_off_leave_the_default_pipeline_unchanged() {
        // Same draws and pixels as the pipeline had before gamma, blur and downscale existed:
        // they draw nothing when off.
        let aug = Augment::default();
        let src: Vec<u8> = (0..256).map(|i| (i * 7 % 256) as u8).collect();
        let mut a = vec![0f32; 256];
        let mut rng = sample_rng(3, 1, 2);
        aug.apply(&src, 16, &mut rng, &mut a).unwrap();
        let after: u32 = rng.gen();
        let mut rng2 = sample_rng(3, 1, 2);
        let mut b = vec![0f32; 256];
        let affine = aug.draw_affine(16, &mut rng2);
        match &affine {
            Some(m) => warp_bilinear(&src, 16, m, &mut b),
            None => b
                .iter_mut()
                .zip(&src)
                .for_each(|(o, &p)| *o = p as f32 / 255.0),
        }
        aug.photometric(&mut rng2, &mut b);
        assert_eq!(a, b);
        assert_eq!(after, rng2.gen::<u32>());
    }

    #[test]
    fn warp_inverse_round_trips() {
        let aug = Augment {
            rotation: Rotation {
                p: 1.0,
                max_degrees: 30.0,
            },
            crop: ResizedCrop {
                p: 1.0,
                scale: [0.4, 0.6],
                ratio: [0.8, 1.2],
            },
            hflip: 1.0,
            ..Augment::none()
        };
        let mut out = vec![0f32; 32 * 32];
        let w = aug
            .apply_traced(&[0; 32 * 32], 32, &mut sample_rng(5, 0, 1), &mut out)
            .unwrap()
            .unwrap();
        for p in [[0.0, 0.0], [3.5, 20.0], [31.0, 7.25]] {
            let q = w.to_output(w.to_source(p));
            assert!(
                (q[0] - p[0]).abs() < 1e-3 && (q[1] - p[1]).abs() < 1e-3,
                "{p:?} -> {q:?}"
            );
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let mut out = vec![0.0; 3];
        let err = Augment::default()
            .apply(&[0; 4], 2, &mut sample_rng(0, 0, 0), &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("2x2"), "{err}");
    }
}

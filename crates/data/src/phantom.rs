//! Synthetic X-ray phantoms: the built-in default dataset, and the test data of this workspace.
//!
//! Each phantom is a grayscale picture of a limb: a dark background, soft tissue, and one or two
//! long bones drawn as hollow cylinders seen in projection (bright cortical shell, darker
//! medullary cavity), with a tone curve, detector blur and noise. A fractured phantom has a thin,
//! dark, irregular line across one bone (oblique up to 35°), and in half of them the distal
//! fragment is displaced and sometimes angulated. The fracture's centre (on the bone axis) and
//! the two points where the line meets the bone's outer edges are recorded
//! ([`FractureLine`]), so that heatmap tests can check where a model looks.
//!
//! Coordinates are pixels: `x` is the column, `y` the row, and pixel `(i, j)` covers
//! `[i, i + 1) x [j, j + 1)`, so `[x, y]` falls in pixel `(x.floor(), y.floor())`.
//!
//! Everything is seeded: image `i` of split `s` depends only on `(seed, s, i)` and `size`, not on
//! the thread count. At 64 px the fracture gap is about 3-5 px wide across a bone 6-13 px wide:
//! plainly visible, but a model has to find a dark break *within* bright bone, not a single
//! pixel.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::folder::{
    DatasetSplit, ImageFolder, LoadSummary, Split, CLASS_NAMES, FRACTURED, NOT_FRACTURED,
};
use crate::rng::{derive_rng, DOMAIN_PHANTOM};

/// Sizes, counts and seed of a phantom dataset.
///
/// ```
/// use fracture_data::{phantom::PhantomConfig, Split};
/// let cfg = PhantomConfig { size: 32, train: 6, val: 2, test: 2, seed: 1, ..Default::default() };
/// let data = cfg.folder().unwrap();
/// assert_eq!(data.train().unwrap().len(), 6);
/// assert_eq!(data.train().unwrap().class_counts(), vec![3, 3]);
/// // One image at a time: seeded by (seed, split, index).
/// assert_eq!(cfg.render(Split::Val, 1), cfg.render(Split::Val, 1));
/// assert_ne!(cfg.render(Split::Val, 1).pixels, cfg.render(Split::Test, 1).pixels);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhantomConfig {
    /// Side of each image in pixels (default 64; 16..=1024).
    pub size: usize,
    /// Number of training images (default 1000).
    pub train: usize,
    /// Number of validation images (default 200).
    pub val: usize,
    /// Number of test images (default 200).
    pub test: usize,
    /// Seed of the whole set (default 0).
    pub seed: u64,
    /// Fraction of fractured images in each split (default 0.5), assigned exactly:
    /// `floor(n * fraction)` of `n` images.
    pub fractured_fraction: f32,
}

impl Default for PhantomConfig {
    fn default() -> Self {
        PhantomConfig {
            size: 64,
            train: 1000,
            val: 200,
            test: 200,
            seed: 0,
            fractured_fraction: 0.5,
        }
    }
}

/// Where a fracture line lies, in pixel coordinates `[x, y]`.
///
/// ```
/// use fracture_data::phantom::render;
/// let p = render(64, 3, true);
/// let f = p.fracture.unwrap();
/// let mid = [(f.start[0] + f.end[0]) / 2.0, (f.start[1] + f.end[1]) / 2.0];
/// assert!((mid[0] - f.center[0]).abs() < 1e-3 && (mid[1] - f.center[1]).abs() < 1e-3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FractureLine {
    /// Centre of the line, on the bone's axis.
    pub center: [f32; 2],
    /// Where the line meets one outer edge of the bone.
    pub start: [f32; 2],
    /// Where the line meets the other outer edge.
    pub end: [f32; 2],
    /// True if the distal fragment is displaced or angulated.
    pub displaced: bool,
}

/// One rendered phantom.
///
/// ```
/// use fracture_data::{phantom::render, FRACTURED, NOT_FRACTURED};
/// let p = render(48, 11, false);
/// assert_eq!((p.pixels.len(), p.label), (48 * 48, NOT_FRACTURED));
/// assert!(p.fracture.is_none());
/// assert_eq!(render(48, 11, true).label, FRACTURED);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Phantom {
    /// `size * size` pixels, row-major.
    pub pixels: Vec<u8>,
    /// Side in pixels.
    pub size: usize,
    /// [`FRACTURED`] or [`NOT_FRACTURED`].
    pub label: usize,
    /// The fracture line, for fractured phantoms.
    pub fracture: Option<FractureLine>,
}

/// A phantom split: the same [`DatasetSplit`] a loaded folder gives, plus the fracture line of
/// each image (`None` for intact ones), in the same order.
///
/// ```
/// use fracture_data::{phantom::PhantomConfig, Split, FRACTURED};
/// let set = PhantomConfig { size: 32, train: 4, ..Default::default() }.split(Split::Train).unwrap();
/// for (i, f) in set.fractures.iter().enumerate() {
///     assert_eq!(f.is_some(), set.data.labels()[i] == FRACTURED);
/// }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PhantomSplit {
    /// Images, labels and paths (the paths the folder writer uses, relative to its root).
    pub data: DatasetSplit,
    /// Fracture line of each image.
    pub fractures: Vec<Option<FractureLine>>,
}

impl PhantomConfig {
    /// `train` training phantoms, with a fifth as many (at least 2) for validation and for
    /// test: the split sizes of `fracture train` on phantoms and of `fracture synth`.
    ///
    /// ```
    /// use fracture_data::phantom::PhantomConfig;
    /// let cfg = PhantomConfig { size: 32, ..PhantomConfig::with_train(1200) };
    /// assert_eq!((cfg.train, cfg.val, cfg.test, cfg.size), (1200, 240, 240, 32));
    /// assert_eq!(PhantomConfig::with_train(6).val, 2);
    /// ```
    pub fn with_train(train: usize) -> PhantomConfig {
        PhantomConfig {
            train,
            val: (train / 5).max(2),
            test: (train / 5).max(2),
            ..PhantomConfig::default()
        }
    }

    /// Checks sizes and the fraction.
    pub fn validate(&self) -> Result<()> {
        if !(16..=1024).contains(&self.size) {
            return Err(DataError::Config(format!(
                "phantom size must be in 16..=1024 px, got {}",
                self.size
            )));
        }
        if !(0.0..=1.0).contains(&self.fractured_fraction) {
            return Err(DataError::Config(format!(
                "fractured_fraction must be in [0, 1], got {}",
                self.fractured_fraction
            )));
        }
        Ok(())
    }

    /// Number of images in `split`.
    pub fn count(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train,
            Split::Val => self.val,
            Split::Test => self.test,
        }
    }

    /// Whether image `index` of a split is fractured (exactly `floor(n * fraction)` of the
    /// first `n`, spread evenly).
    pub fn is_fractured(&self, index: usize) -> bool {
        let f = self.fractured_fraction as f64;
        ((index + 1) as f64 * f).floor() > (index as f64 * f).floor()
    }

    /// Renders image `index` of `split`.
    pub fn render(&self, split: Split, index: usize) -> Phantom {
        let mut rng = derive_rng(self.seed, split as u64, index as u64, DOMAIN_PHANTOM);
        render_with(self.size, &mut rng, self.is_fractured(index))
    }

    /// Renders a whole split in parallel, ordered as the folder loader orders files: class by
    /// class (`fractured` first), by index within a class.
    pub fn split(&self, split: Split) -> Result<PhantomSplit> {
        self.validate()?;
        let n = self.count(split);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| {
            (
                if self.is_fractured(i) {
                    FRACTURED
                } else {
                    NOT_FRACTURED
                },
                i,
            )
        });
        let phantoms: Vec<Phantom> = order.par_iter().map(|&i| self.render(split, i)).collect();
        let mut images = Vec::with_capacity(n * self.size * self.size);
        let mut labels = Vec::with_capacity(n);
        let mut paths = Vec::with_capacity(n);
        let mut fractures = Vec::with_capacity(n);
        for (p, &i) in phantoms.into_iter().zip(&order) {
            images.extend_from_slice(&p.pixels);
            paths.push(relative_path(split, p.label, i));
            labels.push(p.label);
            fractures.push(p.fracture);
        }
        let classes = CLASS_NAMES.iter().map(|c| c.to_string()).collect();
        let data = DatasetSplit::new(split, classes, self.size, images, labels, paths)?;
        Ok(PhantomSplit { data, fractures })
    }

    /// All non-empty splits as an in-memory [`ImageFolder`] (root `phantom`), usable exactly
    /// like a loaded folder.
    pub fn folder(&self) -> Result<ImageFolder> {
        self.validate()?;
        let mut splits = Vec::new();
        for split in Split::ALL {
            if self.count(split) > 0 {
                splits.push(self.split(split)?.data);
            }
        }
        let summary = LoadSummary {
            loaded: splits.iter().map(DatasetSplit::len).sum(),
            ..LoadSummary::default()
        };
        ImageFolder::from_splits(PathBuf::from("phantom"), splits, summary)
    }

    /// Writes the folder layout `<root>/{train,val,test}/{fractured,not_fractured}/*.png`
    /// (8-bit grayscale PNG) and `<root>/fractures.csv` with each fracture's coordinates.
    /// `root` must not exist or be an empty folder.
    ///
    /// ```
    /// use fracture_data::{phantom::PhantomConfig, ImageFolder, LoadOptions};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cfg = PhantomConfig { size: 24, train: 4, val: 2, test: 0, ..Default::default() };
    /// cfg.write_folder(dir.path()).unwrap();
    /// let loaded = ImageFolder::load(dir.path(), &LoadOptions::new(24)).unwrap();
    /// assert_eq!(loaded.train().unwrap().images(), cfg.folder().unwrap().train().unwrap().images());
    /// ```
    pub fn write_folder(&self, root: &Path) -> Result<()> {
        self.validate()?;
        if root.exists() {
            let non_empty = std::fs::read_dir(root)
                .map_err(|source| DataError::Io {
                    path: root.to_path_buf(),
                    source,
                })?
                .next()
                .is_some();
            if non_empty {
                return Err(DataError::Write {
                    path: root.to_path_buf(),
                    reason: "folder exists and is not empty (refusing to mix datasets)".into(),
                });
            }
        }
        let mut csv =
            String::from("path,label,center_x,center_y,start_x,start_y,end_x,end_y,displaced\n");
        for split in Split::ALL {
            if self.count(split) == 0 {
                continue;
            }
            let set = self.split(split)?;
            for class in CLASS_NAMES {
                let dir = root.join(split.dir_name()).join(class);
                std::fs::create_dir_all(&dir).map_err(|e| DataError::Write {
                    path: dir.clone(),
                    reason: e.to_string(),
                })?;
            }
            let size = self.size as u32;
            (0..set.data.len()).into_par_iter().try_for_each(|i| {
                let path = root.join(&set.data.paths()[i]);
                let img = image::GrayImage::from_raw(size, size, set.data.image(i).to_vec())
                    .expect("phantom buffers are size * size");
                img.save_with_format(&path, image::ImageFormat::Png)
                    .map_err(|e| DataError::Write {
                        path: path.clone(),
                        reason: e.to_string(),
                    })
            })?;
            for (i, fracture) in set.fractures.iter().enumerate() {
                let path = set.data.paths()[i].display();
                let label = CLASS_NAMES[set.data.labels()[i]];
                match fracture {
                    Some(f) => writeln!(
                        csv,
                        "{path},{label},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{}",
                        f.center[0],
                        f.center[1],
                        f.start[0],
                        f.start[1],
                        f.end[0],
                        f.end[1],
                        f.displaced
                    ),
                    None => writeln!(csv, "{path},{label},,,,,,,"),
                }
                .expect("writing to a String cannot fail");
            }
        }
        let csv_path = root.join("fractures.csv");
        std::fs::write(&csv_path, csv).map_err(|e| DataError::Write {
            path: csv_path,
            reason: e.to_string(),
        })
    }
}

fn relative_path(split: Split, label: usize, index: usize) -> PathBuf {
    let name = split.dir_name();
    PathBuf::from(name)
        .join(CLASS_NAMES[label])
        .join(format!("{name}-{index:05}.png"))
}

/// Renders one phantom of side `size` (clamped to 16..=1024) from its own seed.
///
/// ```
/// use fracture_data::phantom::render;
/// assert_eq!(render(64, 1, true), render(64, 1, true));
/// assert_ne!(render(64, 1, true).pixels, render(64, 2, true).pixels);
/// ```
pub fn render(size: usize, seed: u64, fractured: bool) -> Phantom {
    let mut rng = derive_rng(seed, u64::MAX, u64::MAX, DOMAIN_PHANTOM);
    render_with(size.clamp(16, 1024), &mut rng, fractured)
}

type V2 = [f32; 2];

fn add(a: V2, b: V2) -> V2 {
    [a[0] + b[0], a[1] + b[1]]
}
fn sub(a: V2, b: V2) -> V2 {
    [a[0] - b[0], a[1] - b[1]]
}
fn scale(a: V2, k: f32) -> V2 {
    [a[0] * k, a[1] * k]
}
fn dot(a: V2, b: V2) -> f32 {
    a[0] * b[0] + a[1] * b[1]
}
fn rotate(a: V2, angle: f32) -> V2 {
    let (s, c) = angle.sin_cos();
    [c * a[0] - s * a[1], s * a[0] + c * a[1]]
}
fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// A long bone: a hollow cylinder between two end points, seen in projection.
struct Bone {
    a: V2,
    b: V2,
    outer: f32,
    inner: f32,
    cortex: f32,
    medulla: f32,
}

impl Bone {
    fn axis(&self) -> V2 {
        let d = sub(self.b, self.a);
        let len = dot(d, d).sqrt();
        scale(d, 1.0 / len)
    }

    /// Distance from `p` to the bone's axis segment.
    fn distance(&self, p: V2) -> f32 {
        let ab = sub(self.b, self.a);
        let t = (dot(sub(p, self.a), ab) / dot(ab, ab)).clamp(0.0, 1.0);
        let q = add(self.a, scale(ab, t));
        let d = sub(p, q);
        dot(d, d).sqrt()
    }

    /// Projected attenuation at `p`: path length through the shell and the cavity.
    fn density(&self, p: V2) -> f32 {
        let d = self.distance(p);
        if d >= self.outer {
            return 0.0;
        }
        let outer = (self.outer * self.outer - d * d).sqrt();
        let inner = (self.inner * self.inner - d * d).max(0.0).sqrt();
        (self.cortex * 2.0 * (outer - inner) + self.medulla * 2.0 * inner) / self.outer
    }
}

/// A fracture across one bone.
struct Fracture {
    bone: usize,
    center: V2,
    /// Along the fracture line.
    u: V2,
    /// Across the line, pointing to the distal fragment.
    n: V2,
    half_width: f32,
    edge: f32,
    depth: f32,
    jag: [(f32, f32, f32); 2],
    /// Distal fragment shift and rotation.
    shift: V2,
    angle: f32,
    line: FractureLine,
}

impl Fracture {
    /// Signed distance from `p` to the irregular line (positive on the distal side).
    fn signed_distance(&self, p: V2) -> f32 {
        let rel = sub(p, self.center);
        let a = dot(rel, self.u);
        let b = dot(rel, self.n);
        let offset: f32 = self
            .jag
            .iter()
            .map(|&(amp, w, ph)| amp * (w * a + ph).sin())
            .sum();
        b - offset
    }

    /// The point at which the (possibly displaced) bone is evaluated, and the gap's factor.
    fn apply(&self, p: V2) -> (V2, f32) {
        let s = self.signed_distance(p);
        let gap = 1.0
            - self.depth
                * (1.0 - smoothstep(self.half_width, self.half_width + self.edge, s.abs()));
        if s > 0.0 {
            let rel = sub(sub(p, self.center), self.shift);
            (add(self.center, rotate(rel, -self.angle)), gap)
        } else {
            (p, gap)
        }
    }
}

fn uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    rng.gen_range(lo..=hi)
}

fn render_with(size: usize, rng: &mut ChaCha8Rng, fractured: bool) -> Phantom {
    let s = size as f32;
    let k = s / 64.0; // feature scale relative to a 64 px image
    let centre = [s / 2.0, s / 2.0];

    // Limb orientation: mostly near-vertical, sometimes near-horizontal.
    let base = if rng.gen_bool(0.75) {
        std::f32::consts::FRAC_PI_2
    } else {
        0.0
    };
    let theta = base + uniform(rng, -30f32, 30.0).to_radians();
    let v = [theta.cos(), theta.sin()];
    let normal = [-v[1], v[0]];
    let limb_offset = uniform(rng, -0.1, 0.1) * s;
    let limb_centre = add(centre, scale(normal, limb_offset));

    // Bones.
    let two = rng.gen_bool(0.5);
    let r1 = if two {
        uniform(rng, 0.07, 0.09)
    } else {
        uniform(rng, 0.08, 0.105)
    } * s;
    let r2 = r1 * uniform(rng, 0.65, 0.85);
    let sep = if two {
        r1 + r2 + uniform(rng, 0.04, 0.09) * s
    } else {
        0.0
    };
    let mut bones = Vec::with_capacity(2);
    let make_bone = |rng: &mut ChaCha8Rng, centre: V2, dir: V2, outer: f32| {
        let back = uniform(rng, 0.45, 1.0) * s;
        let front = uniform(rng, 0.45, 1.0) * s;
        Bone {
            a: sub(centre, scale(dir, back)),
            b: add(centre, scale(dir, front)),
            outer,
            inner: outer * uniform(rng, 0.55, 0.72),
            cortex: uniform(rng, 0.35, 0.45),
            medulla: uniform(rng, 0.02, 0.06),
        }
    };
    let c1 = add(limb_centre, scale(normal, -sep / 2.0));
    bones.push(make_bone(rng, c1, v, r1));
    if two {
        let c2 = add(limb_centre, scale(normal, sep / 2.0));
        let dir2 = rotate(v, uniform(rng, -4f32, 4.0).to_radians());
        bones.push(make_bone(rng, c2, dir2, r2));
    }
    let tissue_half = sep / 2.0 + r1 + uniform(rng, 0.12, 0.22) * s;
    let tissue = uniform(rng, 0.18, 0.3);
    let background = uniform(rng, 0.02, 0.08);
    let gradient = scale(
        rotate([1.0, 0.0], uniform(rng, 0.0, std::f32::consts::TAU)),
        uniform(rng, 0.0, 0.05) / s,
    );

    // Faint soft-tissue blobs in both classes, so that "something dark" is not a shortcut.
    let blobs: Vec<(V2, f32, f32)> = (0..rng.gen_range(0..=3))
        .map(|_| {
            let at = [uniform(rng, 0.0, s), uniform(rng, 0.0, s)];
            let amp = uniform(rng, 0.03, 0.08) * if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
            let sigma = uniform(rng, 0.03, 0.08) * s;
            (at, amp, sigma)
        })
        .collect();

    let fracture = if fractured {
        Some(make_fracture(rng, &bones, s, k))
    } else {
        None
    };

    let tone = uniform(rng, 1.2, 1.6);
    let gain = uniform(rng, 0.9, 1.1);
    let mut img = vec![0f32; size * size];
    for (y, row) in img.chunks_exact_mut(size).enumerate() {
        for (x, out) in row.iter_mut().enumerate() {
            let p = [x as f32 + 0.5, y as f32 + 0.5];
            let across = dot(sub(p, limb_centre), normal);
            let t = (tissue_half * tissue_half - across * across)
                .max(0.0)
                .sqrt()
                / tissue_half;
            let mut mu = background + dot(sub(p, centre), gradient) + tissue * t;
            for &(at, amp, sigma) in &blobs {
                let d = sub(p, at);
                mu += amp * (-dot(d, d) / (2.0 * sigma * sigma)).exp() * t;
            }
            for (i, bone) in bones.iter().enumerate() {
                mu += match &fracture {
                    Some(f) if f.bone == i => {
                        let (q, gap) = f.apply(p);
                        bone.density(q) * gap
                    }
                    _ => bone.density(p),
                };
            }
            *out = gain * (1.0 - (-tone * mu.max(0.0)).exp());
        }
    }

    blur(&mut img, size, uniform(rng, 0.3, 0.6) * k);
    let noise = uniform(rng, 0.008, 0.025);
    let pixels = img
        .iter()
        .map(|&v| {
            let z: f32 = StandardNormal.sample(rng);
            ((v + noise * z).clamp(0.0, 1.0) * 255.0).round() as u8
        })
        .collect();
    Phantom {
        pixels,
        size,
        label: if fractured { FRACTURED } else { NOT_FRACTURED },
        fracture: fracture.map(|f| f.line),
    }
}

fn make_fracture(rng: &mut ChaCha8Rng, bones: &[Bone], s: f32, k: f32) -> Fracture {
    let bone_idx = if bones.len() == 2 && rng.gen_bool(0.3) {
        1
    } else {
        0
    };
    let bone = &bones[bone_idx];
    let v = bone.axis();
    let normal = [-v[1], v[0]];
    let len = dot(sub(bone.b, bone.a), sub(bone.b, bone.a)).sqrt();
    // Foot of the image centre on the axis, then a random offset along the axis, kept inside
    // the central part of the image and away from the bone's rounded ends.
    let centre = [s / 2.0, s / 2.0];
    let foot_t = dot(sub(centre, bone.a), v);
    let margin = 2.5 * bone.outer;
    let mut center = add(bone.a, scale(v, foot_t));
    for _ in 0..32 {
        let t = foot_t + uniform(rng, -0.25, 0.25) * s;
        let c = add(bone.a, scale(v, t));
        let inside = c.iter().all(|&q| (0.2 * s..=0.8 * s).contains(&q));
        if inside && t > margin && t < len - margin {
            center = c;
            break;
        }
    }
    let phi = uniform(rng, -35f32, 35.0).to_radians();
    let u = rotate(normal, phi);
    let n = rotate(v, phi);
    let reach = bone.outer / phi.cos();
    let displaced = rng.gen_bool(0.5);
    let (shift, angle) = if displaced {
        let side = if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
        let across = side * uniform(rng, 0.3, 0.7) * bone.outer;
        let along = uniform(rng, -0.2, 0.3) * bone.outer;
        let angle = if rng.gen_bool(0.5) {
            uniform(rng, -10f32, 10.0).to_radians()
        } else {
            0.0
        };
        (add(scale(normal, across), scale(v, along)), angle)
    } else {
        ([0.0, 0.0], 0.0)
    };
    let tau = std::f32::consts::TAU;
    let jag = [
        (
            uniform(rng, 0.3, 0.8) * k,
            tau / (uniform(rng, 4.0, 8.0) * k),
            uniform(rng, 0.0, tau),
        ),
        (
            uniform(rng, 0.2, 0.5) * k,
            tau / (uniform(rng, 2.0, 4.0) * k),
            uniform(rng, 0.0, tau),
        ),
    ];
    Fracture {
        bone: bone_idx,
        center,
        u,
        n,
        half_width: uniform(rng, 1.1, 1.6) * k,
        edge: 0.7 * k,
        depth: uniform(rng, 0.85, 1.0),
        jag,
        shift,
        angle,
        line: FractureLine {
            center,
            start: sub(center, scale(u, reach)),
            end: add(center, scale(u, reach)),
            displaced,
        },
    }
}

/// Separable Gaussian blur with clamped edges.
fn blur(img: &mut [f32], size: usize, sigma: f32) {
    if sigma < 0.05 {
        return;
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let mut kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|w| *w /= total);
    let last = size as isize - 1;
    let mut tmp = vec![0f32; img.len()];
    for y in 0..size {
        for x in 0..size {
            let mut acc = 0.0;
            for (j, w) in kernel.iter().enumerate() {
                let xx = (x as isize + j as isize - radius).clamp(0, last) as usize;
                acc += w * img[y * size + xx];
            }
            tmp[y * size + x] = acc;
        }
    }
    for y in 0..size {
        for x in 0..size {
            let mut acc = 0.0;
            for (j, w) in kernel.iter().enumerate() {
                let yy = (y as isize + j as isize - radius).clamp(0, last) as usize;
                acc += w * tmp[yy * size + x];
            }
            img[y * size + x] = acc;
        }
    }
}

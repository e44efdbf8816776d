//! Grad-CAM: where in an image the network finds its evidence for a class.
//!
//! For an image `x`, a target layer with output activation `A` (`K` channels of `h x w`) and a
//! score `s` of class `c` ([`Score`]: by default the log-odds of fractured):
//!
//! ```text
//! alpha_k  = 1/(h w) * sum_ij  d s / d A_k[i, j]            (one weight per channel)
//! cam[i,j] = ReLU( sum_k alpha_k * A_k[i, j] )               (h x w)
//! heatmap  = bilinear_upsample(cam, H x W) / max              (in [0, 1])
//! ```
//!
//! (Selvaraju et al., *Grad-CAM*, ICCV 2017.) The gradient comes from the layers' own backward
//! passes: the network runs forward in [`Mode::Eval`] up to the first target and in
//! [`Mode::EvalWithGrad`] after it, then `d s / d logits` is propagated back through the
//! layers' `backward`, and the gradient is read at each target's output. No autograd framework
//! is involved. With several targets, each map is upsampled and divided by its own maximum, and
//! the heatmap is their mean, normalised again ([`Heatmap::from_cams`]).
//!
//! Two entry points:
//! - [`grad_cam`] / [`grad_cam_layers`]: any [`Sequential`] whose target activations are the
//!   outputs of top-level layers; return the raw [`CamMap`]s.
//! - [`GradCam`]: for a trained [`Classifier`]. It runs the classifier's own network (built by
//!   the same architecture code, [`ModelConfig::build`], with the classifier's weights copied in
//!   by state-dict name) opened into a chain of layers by [`Layer::into_chain`]: nested
//!   [`Sequential`]s give their children, and a fused batch-norm + ReLU + max-pool layer gives
//!   back the three layers it fuses (same outputs bit for bit), so that a target can be any
//!   layer by its state-dict path, `blocks.3.2` (a stage's ReLU before its pool) included.
//!   There is no second description of an architecture to keep in step.
//!
//! # Default target layers and score
//! [`GradCam::default_targets`]: the maps of the **last three stages**, fused (never the first
//! stage, nor a stage whose map is narrower than 8 cells): for plain (VGG-like) models the
//! ReLU output of each stage before its max pool (`blocks.{i}.2`, twice the resolution of the
//! pooled map), for residual models the last block of each stage. Why, measured on phantoms
//! (`docs/GRADCAM.md`, example `05_gradcam`): the last stage alone localises poorly on a 64 px
//! input. Its 3x3 conv runs on an 8x8 map where one tap spans 8 px, and the units that respond
//! to a fracture often sit one cell beside it (the global average pool after them does not
//! care where they are): its peaks land a median 4.5-5 px from the line. The earlier stages are
//! sharper but also fire on other edges (a bone leaving the image), and any one of them can
//! fail on a given model. Their mean keeps what the layers agree on: 83-97 % of peaks on the
//! fracture line for three default-trained plain phantom models (median 1.2-1.5 px), against
//! 64-77 % for the last stage alone; 84-92 % for two residual ones, whose 4 x 4 last map alone
//! gets 11-12 %.
//!
//! The default [`Score::LogOdds`] is the logit of P(fractured), `y_fractured - y_intact` for
//! two classes: the quantity the probability depends on, in which features that raise both
//! outputs alike (bone being there at all) cancel out. [`Score::Logit`] is the raw output
//! `y_fractured`, as in the Grad-CAM paper; for the fused default the two localise within two
//! points of each other on phantoms.
//!
//! ```
//! use fracture_nn::{gradcam::GradCam, Classifier, ClassifierMeta, ModelConfig};
//! let meta = ClassifierMeta::new(ModelConfig::phantom(32), fracture_nn::data::Normalization { mean: 0.5, std: 0.25 });
//! let clf = Classifier::new(meta, 3)?;
//! let mut cam = GradCam::new(&clf)?;
//! // At 32 px the last stage's map would be 4 x 4: the default skips it (and the first stage).
//! assert_eq!(cam.targets(), ["blocks.2.2", "blocks.1.2"]);
//! let pixels: Vec<f32> = (0..32 * 32).map(|i| ((i % 32) as f32 / 8.0).sin()).collect();
//! let h = cam.heatmap(&pixels)?;
//! assert_eq!((h.width, h.height, h.values.len()), (32, 32, 32 * 32));
//! assert!(h.values.iter().all(|v| (0.0..=1.0).contains(v)));
//! // Stage i convolves at 32 / 2^i px before its pool.
//! let sides: Vec<usize> = h.cams.iter().map(|c| c.height).collect();
//! assert_eq!(sides, [8, 16]);
//! # Ok::<(), fracture_nn::Error>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::path::Path;

use fracture_data::phantom::FractureLine;
use fracture_layers::{Layer, Mode, Sequential};
use fracture_tensor::Tensor4;

use crate::classifier::{Classifier, ClassifierMeta};
use crate::error::{Error, Result};
use crate::model::{FeatureMap, ModelConfig};

/// Which score of class `c` Grad-CAM differentiates.
///
/// ```
/// use fracture_nn::gradcam::Score;
/// assert_eq!(Score::LogOdds.gradient(&[2.0, 0.0], 0), vec![1.0, -1.0]);
/// assert_eq!(Score::Logit.gradient(&[2.0, 0.0], 0), vec![1.0, 0.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Score {
    /// The raw output `y_c` of the class (its pre-softmax logit), as in the Grad-CAM paper.
    Logit,
    /// The log-odds of the class, `log(p_c / (1 - p_c))`: with two classes `y_c - y_other`, the
    /// only quantity the predicted probability depends on. Features that raise both logits alike
    /// (the bone being there at all) cancel out, so the map shows what tells the classes apart.
    LogOdds,
}

impl Score {
    /// `d score / d logits` for one image's `logits` and class `c`: the one-hot `e_c` for
    /// [`Score::Logit`]; `e_c - q` for [`Score::LogOdds`], with `q` the softmax of the other
    /// classes' logits (0 at `c`). Empty if `c` is out of range.
    pub fn gradient(self, logits: &[f32], c: usize) -> Vec<f32> {
        let mut g = vec![0.0f32; logits.len()];
        if c >= logits.len() {
            return Vec::new();
        }
        if self == Score::LogOdds {
            let m = logits
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != c)
                .map(|(_, &l)| l as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = logits
                .iter()
                .enumerate()
                .map(|(j, &l)| if j == c { 0.0 } else { (l as f64 - m).exp() })
                .collect();
            let z: f64 = e.iter().sum();
            for (gj, ej) in g.iter_mut().zip(&e) {
                *gj = -(ej / z) as f32;
            }
        }
        g[c] = 1.0;
        g
    }
}

/// The raw class-activation map of one image, at the target layer's resolution.
///
/// ```
/// use fracture_nn::gradcam::{CamMap, Score};
/// let m = CamMap { height: 1, width: 2, values: vec![0.0, 3.0], weights: vec![0.5], logits: vec![1.0, -1.0], class: 0, score: Score::Logit };
/// assert_eq!(m.max(), 3.0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CamMap {
    /// Rows `h` of the target activation.
    pub height: usize,
    /// Columns `w` of the target activation.
    pub width: usize,
    /// `ReLU(sum_k alpha_k A_k[i, j])`, row-major, `h * w` values, not normalised.
    pub values: Vec<f32>,
    /// `alpha_k`: the spatial mean of `d y_c / d A_k`, one per channel of the target.
    pub weights: Vec<f32>,
    /// All class logits of the image (the forward pass that produced the map).
    pub logits: Vec<f32>,
    /// The class `c` whose score was differentiated.
    pub class: usize,
    /// The score that was differentiated.
    pub score: Score,
}

impl CamMap {
    /// Largest value of the map (0 when the map is empty or all zero).
    pub fn max(&self) -> f32 {
        self.values.iter().copied().fold(0.0, f32::max)
    }

    /// Softmax probability of [`CamMap::class`] from [`CamMap::logits`].
    ///
    /// ```
    /// use fracture_nn::gradcam::{CamMap, Score};
    /// let m = CamMap { height: 1, width: 1, values: vec![0.0], weights: vec![], logits: vec![0.0, 0.0], class: 0, score: Score::LogOdds };
    /// assert_eq!(m.probability(), 0.5);
    /// ```
    pub fn probability(&self) -> f64 {
        let m = self
            .logits
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = self.logits.iter().map(|&l| (l as f64 - m).exp()).sum();
        self.logits
            .get(self.class)
            .map_or(f64::NAN, |&l| (l as f64 - m).exp() / z)
    }
}

/// A Grad-CAM heatmap at the input image's resolution: one target layer's map, or the mean of
/// several layers' maps (each upsampled and scaled to a maximum of 1 first).
///
/// ```
/// use fracture_nn::gradcam::{CamMap, Heatmap, Score};
/// let cam = CamMap { height: 2, width: 2, values: vec![0.0, 0.0, 0.0, 2.0], weights: vec![1.0], logits: vec![0.0, 0.0], class: 0, score: Score::Logit };
/// let h = Heatmap::from_cam(cam, 8, 8)?;
/// assert_eq!(h.peak, Some([6, 6])); // the hot cell's centre, at (6, 6) in an 8 px image
/// assert_eq!(h.value(6, 6), Some(1.0));
/// assert_eq!(h.value(8, 0), None);
/// # Ok::<(), fracture_nn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    /// Image width `W` in pixels.
    pub width: usize,
    /// Image height `H` in pixels.
    pub height: usize,
    /// The upsampled map divided by its maximum: `W * H` values in `[0, 1]`, row-major. All
    /// zero when the map is zero everywhere (no positive evidence for the class).
    pub values: Vec<f32>,
    /// Pixel `[x, y]` (column, row) of the maximum (the first in row-major order among equal
    /// values), or `None` when the map is zero everywhere.
    pub peak: Option<[usize; 2]>,
    /// The maps before upsampling (one per target layer, in the order of the targets; for an
    /// ensemble, member 0's, then member 1's, ...), with their channel weights and the logits.
    pub cams: Vec<CamMap>,
}

impl Heatmap {
    /// Upsamples `cam` bilinearly to `width x height`, normalises it to `[0, 1]` and finds its
    /// peak. Errors if the map holds a non-finite value or a size is zero.
    pub fn from_cam(cam: CamMap, width: usize, height: usize) -> Result<Heatmap> {
        Self::from_cams(vec![cam], width, height)
    }

    /// Fuses the maps of several layers: each is upsampled bilinearly to `width x height` and
    /// divided by its own maximum (an all-zero map stays zero), the results are averaged, and
    /// the mean is normalised to `[0, 1]` and its peak found.
    ///
    /// ```
    /// use fracture_nn::gradcam::{CamMap, Heatmap, Score};
    /// let cam = |h: usize, w: usize, values: Vec<f32>| CamMap { height: h, width: w, values, weights: vec![1.0], logits: vec![0.0, 0.0], class: 0, score: Score::LogOdds };
    /// // A coarse map hot on the right half and a fine map with two equal spots: the fusion
    /// // keeps the spot the coarse map agrees with.
    /// let coarse = cam(1, 2, vec![0.0, 5.0]);
    /// let fine = cam(1, 4, vec![0.0, 1.0, 0.0, 1.0]);
    /// let h = Heatmap::from_cams(vec![coarse, fine], 4, 1)?;
    /// assert_eq!(h.peak, Some([3, 0]));
    /// assert_eq!(h.cams.len(), 2);
    /// # Ok::<(), fracture_nn::Error>(())
    /// ```
    pub fn from_cams(cams: Vec<CamMap>, width: usize, height: usize) -> Result<Heatmap> {
        if cams.is_empty() {
            return Err(Error::Config(
                "Grad-CAM: a heatmap needs at least one map".into(),
            ));
        }
        let mut values = vec![0f32; width * height];
        for cam in &cams {
            if width == 0 || height == 0 || cam.width == 0 || cam.height == 0 {
                return Err(Error::Config(format!(
                    "Grad-CAM: cannot upsample a {}x{} map to {width}x{height}",
                    cam.height, cam.width
                )));
            }
            if let Some(v) = cam.values.iter().find(|v| !v.is_finite()) {
                return Err(Error::Config(format!(
                    "Grad-CAM: the map holds the non-finite value {v} (non-finite input pixels or weights?)"
                )));
            }
            let up = upsample_bilinear(&cam.values, cam.height, cam.width, height, width)?;
            let max = up.iter().copied().fold(0.0f32, f32::max);
            if max > 0.0 {
                for (v, u) in values.iter_mut().zip(&up) {
                    *v += u / max;
                }
            }
        }
        let mut peak = None;
        let mut best = 0.0f32;
        for (i, &v) in values.iter().enumerate() {
            if v > best {
                best = v;
                peak = Some([i % width, i / width]);
            }
        }
        if peak.is_some() {
            let inv = 1.0 / best;
            for v in &mut values {
                *v = (*v * inv).clamp(0.0, 1.0);
            }
        } else {
            values.fill(0.0);
        }
        Ok(Heatmap {
            width,
            height,
            values,
            peak,
            cams,
        })
    }

    /// Value at column `x`, row `y`, or `None` outside the image.
    pub fn value(&self, x: usize, y: usize) -> Option<f32> {
        (x < self.width && y < self.height).then(|| self.values[y * self.width + x])
    }

    /// Centre of the peak pixel, `[x + 0.5, y + 0.5]`, in the continuous pixel coordinates of
    /// [`FractureLine`] (pixel `(i, j)` covers `[i, i + 1) x [j, j + 1)`).
    pub fn peak_point(&self) -> Option<[f32; 2]> {
        self.peak.map(|[x, y]| [x as f32 + 0.5, y as f32 + 0.5])
    }

    /// Softmax probability of the class the map explains (from the first map's logits; all
    /// maps of one image come from the same forward pass).
    pub fn probability(&self) -> f64 {
        self.cams.first().map_or(f64::NAN, CamMap::probability)
    }
}

/// Bilinear upsampling of a row-major `h x w` map to `out_h x out_w`, sampling at pixel centres
/// (`src = (dst + 0.5) * h / out_h - 0.5`, clamped to the edge).
///
/// PyTorch equivalent: `F.interpolate(m[None, None], size=(out_h, out_w), mode="bilinear",
/// align_corners=False)`.
///
/// ```
/// use fracture_nn::gradcam::upsample_bilinear;
/// let up = upsample_bilinear(&[1.0, 2.0, 3.0, 4.0], 2, 2, 4, 4)?;
/// assert_eq!(&up[..4], &[1.0, 1.25, 1.75, 2.0]);
/// assert_eq!(&up[4..8], &[1.5, 1.75, 2.25, 2.5]);
/// assert!(upsample_bilinear(&[1.0; 3], 2, 2, 4, 4).is_err());
/// # Ok::<(), fracture_nn::Error>(())
/// ```
pub fn upsample_bilinear(
    src: &[f32],
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Result<Vec<f32>> {
    if src.len() != h * w || h == 0 || w == 0 {
        return Err(Error::Config(format!(
            "upsample_bilinear: a non-empty {h}x{w} map needs {} values, got {}",
            h * w,
            src.len()
        )));
    }
    // For each output coordinate: the two source indices and the weight of the second.
    fn taps(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32)> {
        let scale = n_in as f64 / n_out as f64;
        (0..n_out)
            .map(|o| {
                let s = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (s.floor() as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, (s - i0 as f64) as f32)
            })
            .collect()
    }
    let ty = taps(h, out_h);
    let tx = taps(w, out_w);
    let mut out = Vec::with_capacity(out_h * out_w);
    for &(y0, y1, fy) in &ty {
        for &(x0, x1, fx) in &tx {
            let top = src[y0 * w + x0] * (1.0 - fx) + src[y0 * w + x1] * fx;
            let bottom = src[y1 * w + x0] * (1.0 - fx) + src[y1 * w + x1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    Ok(out)
}

/// Distance in pixels from `point` `[x, y]` to the segment `start`-`end` of a phantom's
/// fracture line: how far a heatmap peak is from the fracture.
///
/// ```
/// use fracture_nn::data::phantom::FractureLine;
/// use fracture_nn::gradcam::distance_to_fracture;
/// let line = FractureLine { center: [10.0, 10.0], start: [5.0, 10.0], end: [15.0, 10.0], displaced: false };
/// assert_eq!(distance_to_fracture([10.0, 13.0], &line), 3.0);
/// assert_eq!(distance_to_fracture([19.0, 13.0], &line), 5.0); // beyond the end: to the end point
/// ```
pub fn distance_to_fracture(point: [f32; 2], line: &FractureLine) -> f32 {
    let (a, b) = (line.start, line.end);
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((point[0] - a[0]) * dx + (point[1] - a[1]) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (px, py) = (a[0] + t * dx - point[0], a[1] + t * dy - point[1]);
    (px * px + py * py).sqrt()
}

/// Grad-CAM of a batch `x` (NCHW) through `net`, taken at the output of its top-level layer
/// named `target`, for the `score` of `class`. Returns one [`CamMap`] per image.
///
/// Layers up to the target run in [`Mode::Eval`], the rest in [`Mode::EvalWithGrad`], so the
/// logits are exactly those of inference; the gradient `d s(n) / d logits(n)` of each image's
/// score ([`Score::gradient`]) is propagated back to the target's output with the layers'
/// `backward` (in eval mode every image is independent, so image `n` gets `d s(n) / d A(n)`).
/// The network is left as it was found: the gradients the backward pass accumulated are
/// restored to their previous values and no cache is kept.
///
/// ```
/// use fracture_nn::gradcam::{grad_cam, Score};
/// use fracture_nn::layers::*;
/// use fracture_nn::tensor::Tensor4;
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
/// let mut net = Sequential::new()
///     .with("conv", Conv2dConfig::new(1, 4, 3).with_padding(1).init(&mut rng)?)?
///     .with("relu", Relu::new())?
///     .with("pool", GlobalAvgPool::new())?
///     .with("fc", LinearConfig::new(4, 2).init(&mut rng)?)?;
/// let x = Tensor4::from_vec([2, 1, 6, 6], (0..72).map(|v| (v as f32 * 0.37).sin()).collect())?;
/// let maps = grad_cam(&mut net, "relu", &x, 0, Score::Logit)?;
/// assert_eq!(maps.len(), 2);
/// assert_eq!((maps[0].height, maps[0].width, maps[0].weights.len()), (6, 6, 4));
/// # Ok::<(), fracture_nn::Error>(())
/// ```
pub fn grad_cam(
    net: &mut Sequential,
    target: &str,
    x: &Tensor4,
    class: usize,
    score: Score,
) -> Result<Vec<CamMap>> {
    Ok(grad_cam_layers(net, &[target], x, class, score)?
        .into_iter()
        .map(|mut per_target| per_target.remove(0))
        .collect())
}

/// As [`grad_cam`] for several top-level layers at once, with one forward and one backward
/// pass: returns, for each image, one [`CamMap`] per target in the order of `targets`.
///
/// ```
/// use fracture_nn::gradcam::{grad_cam, grad_cam_layers, Score};
/// use fracture_nn::layers::*;
/// use fracture_nn::tensor::Tensor4;
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
/// let mut net = Sequential::new()
///     .with("conv", Conv2dConfig::new(1, 4, 3).with_padding(1).init(&mut rng)?)?
///     .with("relu", Relu::new())?
///     .with("pool", MaxPool2dConfig::new(2).init()?)?
///     .with("gap", GlobalAvgPool::new())?
///     .with("fc", LinearConfig::new(4, 2).init(&mut rng)?)?;
/// let x = Tensor4::from_vec([1, 1, 6, 6], (0..36).map(|v| (v as f32 * 0.37).sin()).collect())?;
/// let maps = grad_cam_layers(&mut net, &["pool", "relu"], &x, 0, Score::LogOdds)?;
/// assert_eq!((maps[0][0].height, maps[0][1].height), (3, 6));
/// assert_eq!(maps[0][1], grad_cam(&mut net, "relu", &x, 0, Score::LogOdds)?[0]);
/// # Ok::<(), fracture_nn::Error>(())
/// ```
pub fn grad_cam_layers(
    net: &mut Sequential,
    targets: &[&str],
    x: &Tensor4,
    class: usize,
    score: Score,
) -> Result<Vec<Vec<CamMap>>> {
    if targets.is_empty() {
        return Err(Error::Config(
            "Grad-CAM needs at least one target layer".into(),
        ));
    }
    let mut indices = Vec::with_capacity(targets.len());
    for target in targets {
        let Some(index) = net.layers().iter().position(|(n, _)| n == target) else {
            let names: Vec<&str> = net.layers().iter().map(|(n, _)| n.as_str()).collect();
            return Err(Error::Config(format!(
                "Grad-CAM target layer {target:?} is not a top-level layer of the network; it has {names:?}"
            )));
        };
        if index + 1 == net.len() {
            return Err(Error::Config(format!(
                "Grad-CAM target layer {target:?} is the last layer: its output is the logits, not a feature map"
            )));
        }
        indices.push(index);
    }
    let first = *indices.iter().min().expect("targets is not empty");
    // Snapshot the gradients the backward pass will add to, to restore them afterwards.
    let mut saved = Vec::new();
    for (_, layer) in &net.layers()[first + 1..] {
        layer.visit_params_ref("", &mut |_, p| saved.push(p.grad.clone()));
    }
    let result = grad_cam_inner(net, &indices, x, class, score);
    let mut layers: Vec<_> = net.layers_mut().collect();
    let mut saved = saved.into_iter();
    for (_, layer) in layers.drain(first + 1..) {
        layer.visit_params("", &mut |_, p| {
            if let Some(g) = saved.next() {
                p.grad = g;
            }
        });
    }
    net.clear_cache();
    result
}

fn grad_cam_inner(
    net: &mut Sequential,
    indices: &[usize],
    x: &Tensor4,
    class: usize,
    score: Score,
) -> Result<Vec<Vec<CamMap>>> {
    let first = *indices.iter().min().expect("indices is not empty");
    let mut layers: Vec<&mut Box<dyn Layer>> = net.layers_mut().map(|(_, l)| l).collect();
    let mut h = x.clone();
    let mut activations: HashMap<usize, Tensor4> = HashMap::new();
    for (i, layer) in layers.iter_mut().enumerate() {
        let mode = if i <= first {
            Mode::Eval
        } else {
            Mode::EvalWithGrad
        };
        h = layer.forward(&h, mode)?;
        if indices.contains(&i) {
            activations.insert(i, h.clone());
        }
    }
    let logits = h;
    let [n, k_classes, lh, lw] = logits.shape();
    if lh * lw != 1 {
        return Err(Error::Config(format!(
            "Grad-CAM needs logits of shape [N, classes, 1, 1], the network gives {:?}",
            logits.shape()
        )));
    }
    if class >= k_classes {
        return Err(Error::Config(format!(
            "Grad-CAM class {class} does not exist: the network has {k_classes} outputs"
        )));
    }
    if score == Score::LogOdds && k_classes < 2 {
        return Err(Error::Config(
            "Grad-CAM log-odds need at least two classes; the network has one output".into(),
        ));
    }
    let mut g = Tensor4::zeros(logits.shape());
    for (d, l) in g
        .as_slice_mut()
        .chunks_mut(k_classes)
        .zip(logits.as_slice().chunks(k_classes))
    {
        d.copy_from_slice(&score.gradient(l, class));
    }
    let mut gradients: HashMap<usize, Tensor4> = HashMap::new();
    for i in (first + 1..layers.len()).rev() {
        // After layer i's backward, `g` is the gradient at the output of layer i - 1.
        g = layers[i].backward(&g)?;
        if indices.contains(&(i - 1)) {
            gradients.insert(i - 1, g.clone());
        }
    }
    let logits = logits.as_slice();
    let mut maps: Vec<Vec<CamMap>> = (0..n).map(|_| Vec::with_capacity(indices.len())).collect();
    for index in indices {
        let (a, g) = (&activations[index], &gradients[index]);
        if g.shape() != a.shape() {
            return Err(Error::Config(format!(
                "Grad-CAM: the gradient at a target has shape {:?} but its activation {:?}",
                g.shape(),
                a.shape()
            )));
        }
        let [_, k, hh, ww] = a.shape();
        let plane = hh * ww;
        let (a, g) = (a.as_slice(), g.as_slice());
        for (i, per_image) in maps.iter_mut().enumerate() {
            let row = &logits[i * k_classes..(i + 1) * k_classes];
            let grads = &g[i * k * plane..(i + 1) * k * plane];
            let acts = &a[i * k * plane..(i + 1) * k * plane];
            if row.iter().chain(grads).chain(acts).any(|v| !v.is_finite()) {
                return Err(Error::Config(format!(
                    "Grad-CAM of image {i}: the logits, activations or gradients are non-finite (non-finite input pixels or weights?)"
                )));
            }
            let weights: Vec<f32> = grads
                .chunks(plane)
                .map(|gc| (gc.iter().map(|&v| v as f64).sum::<f64>() / plane as f64) as f32)
                .collect();
            let mut acc = vec![0f64; plane];
            for (&alpha, ac) in weights.iter().zip(acts.chunks(plane)) {
                for (s, &v) in acc.iter_mut().zip(ac) {
                    *s += alpha as f64 * v as f64;
                }
            }
            per_image.push(CamMap {
                height: hh,
                width: ww,
                values: acc.into_iter().map(|v| v.max(0.0) as f32).collect(),
                weights,
                logits: row.to_vec(),
                class,
                score,
            });
        }
    }
    Ok(maps)
}

/// Grad-CAM for a trained [`Classifier`], on its network opened into a chain of layers (see the
/// [module docs](self)), at one or several target layers.
///
/// ```
/// use fracture_nn::{gradcam::GradCam, Classifier, ClassifierMeta, ModelConfig};
/// let meta = ClassifierMeta::new(ModelConfig { image_size: 32, ..ModelConfig::default() }, fracture_nn::data::Normalization::IDENTITY);
/// let clf = Classifier::new(meta, 0)?;
/// // Residual at 32 px: stage maps 16, 8, 4, 2 px; the default keeps stage 1 (8 px) only.
/// assert_eq!(GradCam::default_targets(&clf.meta.model), ["blocks.1"]);
/// let cam = GradCam::with_target(&clf, "blocks.2")?;
/// assert_eq!(cam.targets(), ["blocks.2"]);
/// assert!(cam.layer_names().contains(&"stem.2".to_string()));
/// assert!(GradCam::with_target(&clf, "nope").is_err());
/// # Ok::<(), fracture_nn::Error>(())
/// ```
pub struct GradCam {
    /// The classifier's network as a chain of layers, one per member (one for a single network).
    nets: Vec<Sequential>,
    meta: ClassifierMeta,
    targets: Vec<String>,
    slots: Vec<String>,
    /// The chain slot of the model's box-mask head, if it has one: its map is the heatmap.
    mask_slot: Option<String>,
    class: usize,
    score: Score,
}

impl std::fmt::Debug for GradCam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradCam")
            .field("targets", &self.targets)
            .field("class", &self.class)
            .field("score", &self.score)
            .field("members", &self.nets.len())
            .finish_non_exhaustive()
    }
}

/// Smallest map side (in cells) a default target may have: see [`GradCam::default_targets`].
pub const MIN_TARGET_SIDE: usize = 8;

/// Separator of state-dict path components inside the chain's slot names (`.` is not allowed
/// in a [`Sequential`] name).
const SEP: char = '/';

impl GradCam {
    /// Grad-CAM of the positive (fractured) class's log-odds, fused over
    /// [`GradCam::default_targets`].
    pub fn new(clf: &Classifier) -> Result<Self> {
        let targets = Self::default_targets(&clf.meta.model);
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        Self::with_targets(clf, &targets)
    }

    /// The default target layers of an architecture, deepest first, chosen among its
    /// [`ModelConfig::feature_maps`] (one per stage; the architecture's description gives
    /// their layer paths and sides): the last three, leaving out the first stage (its features
    /// are edges of any kind) and maps narrower than [`MIN_TARGET_SIDE`] (too coarse to place
    /// a peak within a few pixels); the last map if that leaves none. A plain stage's map is
    /// its ReLU output before the max pool, `blocks.{i}.2`; a residual stage's is its last
    /// block; EfficientNet-Lite0 offers one, `_bn1`.
    ///
    /// ```
    /// use fracture_nn::{gradcam::GradCam, model::ResNet, ModelConfig};
    /// // 64 px plain: stage maps 64, 32, 16, 8 px.
    /// assert_eq!(GradCam::default_targets(&ModelConfig::phantom(64)), ["blocks.3.2", "blocks.2.2", "blocks.1.2"]);
    /// // 64 px residual: 32, 16, 8, 4 px after the stride-2 stem; the 4 x 4 map is left out.
    /// let res = ModelConfig { image_size: 64, ..ModelConfig::default() };
    /// assert_eq!(GradCam::default_targets(&res), ["blocks.2", "blocks.1"]);
    /// // 16 px plain: 16, 8, 4, 2 px; only stage 1 qualifies.
    /// assert_eq!(GradCam::default_targets(&ModelConfig::phantom(16)), ["blocks.1.2"]);
    /// // 16 px residual: 8, 4, 2, 1 px; none does, so the last stage.
    /// let tiny = ModelConfig { image_size: 16, ..ModelConfig::default() };
    /// assert_eq!(GradCam::default_targets(&tiny), ["blocks.3"]);
    /// // 224 px residual: 112, 56, 28, 14 px.
    /// assert_eq!(GradCam::default_targets(&ModelConfig::default()), ["blocks.3", "blocks.2", "blocks.1"]);
    /// // 128 px residual with the stem pool: 32, 16, 8, 4 px.
    /// let pooled = ModelConfig { image_size: 128, ..ModelConfig::default() }
    ///     .with_arch(ResNet::new(&[32, 64, 128, 256], 1).with_stem_pool(true));
    /// assert_eq!(GradCam::default_targets(&pooled), ["blocks.2", "blocks.1"]);
    /// // Two blocks per stage: a stage's map is its last block's output.
    /// let two = ModelConfig::default().with_arch(ResNet::new(&[32, 64, 128, 256], 2));
    /// assert_eq!(GradCam::default_targets(&two), ["blocks.7", "blocks.5", "blocks.3"]);
    /// // EfficientNet-Lite0: the head's batch norm + ReLU6.
    /// assert_eq!(GradCam::default_targets(&ModelConfig::lite0(224)), ["_bn1"]);
    /// ```
    pub fn default_targets(model: &ModelConfig) -> Vec<String> {
        let maps = model.feature_maps();
        // The first stage responds to edges of any kind; it joins only a one-stage model.
        let mut chosen: Vec<&FeatureMap> = maps
            .iter()
            .skip(1)
            .rev()
            .filter(|m| m.side >= MIN_TARGET_SIDE)
            .take(3)
            .collect();
        if chosen.is_empty() {
            chosen.extend(maps.last());
        }
        chosen.into_iter().map(|m| m.path.clone()).collect()
    }

    /// Grad-CAM of the positive class's log-odds at the output of one `target`, a state-dict
    /// path: a layer (`blocks.3.2`, `stem.2`, `blocks.5`) or a group of layers, meaning the
    /// output of its last layer (`blocks.3` of a plain model is `blocks.3.3`, its max pool).
    pub fn with_target(clf: &Classifier, target: &str) -> Result<Self> {
        Self::with_targets(clf, &[target])
    }

    /// As [`GradCam::with_target`] for several targets, whose maps are fused as
    /// [`Heatmap::from_cams`] does.
    pub fn with_targets(clf: &Classifier, targets: &[&str]) -> Result<Self> {
        if targets.is_empty() {
            return Err(Error::Config(
                "Grad-CAM needs at least one target layer".into(),
            ));
        }
        // The classifier's own network, member by member: built by the same architecture
        // code, its weights copied in by state-dict name, then opened into a chain.
        let single = clf.meta.model.member();
        let members = clf.meta.model.members;
        let nets = (0..members)
            .map(|i| {
                let mut net = single.build(0)?;
                let prefix = if members > 1 {
                    format!("members.{i}.")
                } else {
                    String::new()
                };
                copy_state(&clf.net, &prefix, &mut net)?;
                chain(net)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut cam = GradCam {
            nets,
            meta: clf.meta.clone(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            slots: Vec::new(),
            mask_slot: clf
                .meta
                .model
                .mask_head_path()
                .map(|p| p.replace('.', &SEP.to_string())),
            class: clf.meta.positive_class,
            score: Score::LogOdds,
        };
        cam.slots = targets
            .iter()
            .map(|t| cam.resolve(t))
            .collect::<Result<_>>()?;
        Ok(cam)
    }

    /// Explains `class` instead of the positive class.
    pub fn with_class(mut self, class: usize) -> Result<Self> {
        if class >= self.meta.model.num_classes {
            return Err(Error::Config(format!(
                "Grad-CAM class {class} does not exist: the model has {} classes",
                self.meta.model.num_classes
            )));
        }
        self.class = class;
        Ok(self)
    }

    /// Differentiates `score` instead of the default [`Score::LogOdds`].
    pub fn with_score(mut self, score: Score) -> Self {
        self.score = score;
        self
    }

    /// The score that is differentiated.
    pub fn score(&self) -> Score {
        self.score
    }

    fn resolve(&self, target: &str) -> Result<String> {
        let exact = target.replace('.', &SEP.to_string());
        let group = format!("{exact}{SEP}");
        let slots: Vec<&str> = self.nets[0]
            .layers()
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        let found = slots
            .iter()
            .rev()
            .find(|s| **s == exact || s.starts_with(&group));
        match found {
            Some(s) if *s != slots[slots.len() - 1] => Ok(s.to_string()),
            _ => Err(Error::Config(format!(
                "Grad-CAM target layer {target:?} is not a feature layer of this model; choose one of {:?}",
                self.layer_names()
            ))),
        }
    }

    /// Every layer whose output can be a target, as state-dict paths, in network order.
    pub fn layer_names(&self) -> Vec<String> {
        let n = self.nets[0].len();
        self.nets[0].layers()[..n.saturating_sub(1)]
            .iter()
            .map(|(s, _)| s.replace(SEP, "."))
            .collect()
    }

    /// The target layers, as given.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The class whose score is explained.
    pub fn class(&self) -> usize {
        self.class
    }

    /// The classifier's metadata (input size, preprocessing, normalisation).
    pub fn meta(&self) -> &ClassifierMeta {
        &self.meta
    }

    /// Heatmaps of a standardised NCHW batch at its own resolution. For an ensemble, each
    /// member's maps are computed on its own and all are fused as [`Heatmap::from_cams`] fuses
    /// layers (member by member in [`Heatmap::cams`]), and every map carries the ensemble's
    /// logits (the mean of the members').
    pub fn heatmaps(&mut self, x: &Tensor4) -> Result<Vec<Heatmap>> {
        let [n, _, h, w] = x.shape();
        let slots: Vec<&str> = self.slots.iter().map(String::as_str).collect();
        let mut per_image: Vec<Vec<CamMap>> = vec![Vec::new(); n];
        for net in &mut self.nets {
            let maps = grad_cam_layers(net, &slots, x, self.class, self.score)?;
            let maps = match &self.mask_slot {
                Some(slot) => mask_maps(net, slot, maps)?,
                None => maps,
            };
            for (all, cams) in per_image.iter_mut().zip(maps) {
                all.extend(cams);
            }
        }
        let k = self.nets.len();
        if k > 1 {
            for cams in &mut per_image {
                let classes = cams[0].logits.len();
                let mut mean = vec![0f32; classes];
                for cam in cams.iter().step_by(slots.len()) {
                    for (m, l) in mean.iter_mut().zip(&cam.logits) {
                        *m += l / k as f32;
                    }
                }
                for cam in cams.iter_mut() {
                    cam.logits.clone_from(&mean);
                }
            }
        }
        per_image
            .into_iter()
            .map(|cams| Heatmap::from_cams(cams, w, h))
            .collect()
    }

    /// Heatmap of one standardised image (`in_channels * S * S` pixels, CHW, `S` the model's
    /// input size).
    pub fn heatmap(&mut self, pixels: &[f32]) -> Result<Heatmap> {
        let s = self.meta.model.image_size;
        let x = Tensor4::from_vec([1, self.meta.model.in_channels, s, s], pixels.to_vec())?;
        Ok(self.heatmaps(&x)?.remove(0))
    }

    /// Heatmaps of `n` standardised images laid out as [`Classifier::predict_batch`] takes
    /// them.
    pub fn heatmap_batch(&mut self, pixels: &[f32], n: usize) -> Result<Vec<Heatmap>> {
        let s = self.meta.model.image_size;
        let x = Tensor4::from_vec([n, self.meta.model.in_channels, s, s], pixels.to_vec())?;
        self.heatmaps(&x)
    }

    /// Decodes and preprocesses an image file exactly as prediction does, and returns the
    /// resized 8-bit image the network saw (`S * S` bytes, for overlays) with its heatmap.
    pub fn heatmap_file(&mut self, path: &Path) -> Result<(Vec<u8>, Heatmap)> {
        let gray = fracture_data::load_resized(path, &self.meta.preprocess)?;
        let x = fracture_data::standardise(&gray, &self.meta.normalization);
        let heat = self.heatmap(&x)?;
        Ok((gray, heat))
    }
}

/// `net` as the chain of its layers ([`Layer::into_chain`]: nested `Sequential`s opened, fused
/// batch norm + ReLU + pool layers given back as the three layers they fuse), one per
/// top-level slot named by its state-dict path (components joined by [`SEP`]).
/// For a model with a box-mask head: the head's map of each image (`sigmoid` of its logits:
/// the probability that a cell lies on a fracture), from the forward pass Grad-CAM just ran,
/// in place of the Grad-CAM maps (whose logits it keeps).
fn mask_maps(net: &mut Sequential, slot: &str, cams: Vec<Vec<CamMap>>) -> Result<Vec<Vec<CamMap>>> {
    let head = net
        .get_mut(slot)
        .and_then(|l| l.as_any_mut())
        .and_then(|a| a.downcast_mut::<fracture_layers::MaskHead>())
        .ok_or_else(|| Error::Config(format!("the model's mask head {slot:?} is missing")))?;
    let logits = head
        .take_logits()
        .ok_or_else(|| Error::Config("the mask head produced no map".into()))?;
    let [n, _, h, w] = logits.shape();
    let cells = h * w;
    Ok(cams
        .into_iter()
        .enumerate()
        .take(n)
        .map(|(i, mut maps)| {
            let first = maps.swap_remove(0);
            let values = logits.as_slice()[i * cells..(i + 1) * cells]
                .iter()
                .map(|&z| 1.0 / (1.0 + (-z).exp()))
                .collect();
            vec![CamMap {
                height: h,
                width: w,
                values,
                weights: Vec::new(),
                ..first
            }]
        })
        .collect())
}

fn chain(net: Sequential) -> Result<Sequential> {
    let mut flat = Sequential::new();
    for (name, layer) in Box::new(net).into_chain("") {
        flat.push_boxed(name.replace('.', &SEP.to_string()), layer)?;
    }
    Ok(flat)
}

/// Copies every parameter and buffer of `from` (the classifier's network, its names under
/// `prefix`) into `to` (a fresh [`ModelConfig::build`] of one member), matching state-dict
/// names; errors if a name or shape does not match.
fn copy_state(from: &Sequential, prefix: &str, to: &mut Sequential) -> Result<()> {
    let mismatch = |reason: String| Error::Config(format!("Grad-CAM: {reason}"));
    let own = |name: String| name.strip_prefix(prefix).map(str::to_string);
    let params: HashMap<String, &fracture_layers::Param> = from
        .named_params()
        .into_iter()
        .filter_map(|(n, p)| Some((own(n)?, p)))
        .collect();
    let buffers: HashMap<String, &fracture_layers::Buffer> = from
        .named_buffers()
        .into_iter()
        .filter_map(|(n, b)| Some((own(n)?, b)))
        .collect();
    let mut seen = HashSet::new();
    let mut problems = Vec::new();
    to.visit_params("", &mut |name, p| {
        let name = name.to_string();
        match params.get(&name) {
            Some(src) if src.value.shape() == p.value.shape() => p.value = src.value.clone(),
            Some(src) => problems.push(format!(
                "{name} has shape {:?} in the classifier but {:?} in its architecture",
                src.value.shape(),
                p.value.shape()
            )),
            None => problems.push(format!("the classifier has no parameter {name}")),
        }
        seen.insert(name);
    });
    to.visit_buffers("", &mut |name, b| {
        let name = name.to_string();
        match buffers.get(&name) {
            Some(src) if src.value.shape() == b.value.shape() => b.value = src.value.clone(),
            Some(src) => problems.push(format!(
                "{name} has shape {:?} in the classifier but {:?} in its architecture",
                src.value.shape(),
                b.value.shape()
            )),
            None => problems.push(format!("the classifier has no buffer {name}")),
        }
        seen.insert(name);
    });
    for name in params.keys().chain(buffers.keys()) {
        if !seen.contains(name) {
            problems.push(format!("the architecture has no tensor {name}"));
        }
    }
    match problems.first() {
        None => Ok(()),
        Some(p) => Err(mismatch(format!(
            "{p} ({} mismatch(es)): the classifier's weights do not fit its own architecture",
            problems.len()
        ))),
    }
}

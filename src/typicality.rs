//! Is this image like the ones the model learned from? A typicality check inside the model
//! file: a bank of L2-normalised features of training images (a mid-level map's channel
//! statistics, or the pooled vector the classifier reads)
//! of training images, and the k-nearest-neighbour score of a new image against it (Sun et
//! al., "Out-of-distribution detection with deep nearest neighbors", ICML 2022):
//!
//! `score = 1 - mean of the k largest cosine similarities to the bank`
//!
//!
//! 0 for an image whose features sit among the training images', up to 2 for the opposite
//! direction. At the end of training the bank is filled from up to
//! [`DEFAULT_REFERENCES`] training images (evenly spaced through the split) and the scores
//! that 95 % and 99 % of *validation* images stay under are stored beside it; an image above
//! the 99 % score is called atypical. A photograph, a page of text or a CT slice lands far
//! from every radiograph the model saw; its probability of a fracture then means little.
//!
//! The bank is a layer ([`TypicalityBank`]) in the network: for EfficientNet-Lite after
//! `_blocks.4` (the stride-8 map; each image described by the mean and standard deviation of
//! every channel, which tell a radiograph's texture from a photograph's far better than the
//! classifier's input does: `examples/typicality_layers.rs` compares the layers), after `pool`
//! for the other families. The identity on the main path, it keeps the score of every image of the last forward pass, so prediction,
//! serving and the ONNX export (an extra output, `typicality`) get it from the same pass as
//! the probability. Files written before it existed have no bank; they say they cannot judge.

use fracture_data::DatasetSplit;
use fracture_layers::{find_in, find_in_mut, Buffer, Layer, LayersError, Mode, Sequential};
use fracture_tensor::Tensor4;
use serde::{Deserialize, Serialize};

use crate::classifier::Classifier;
use crate::error::{Error, Result};

/// Name of the bank layer in the network (after `pool`).
pub const TYPICALITY_NAME: &str = "typicality";
/// Largest number of training images whose features the bank keeps.
pub const DEFAULT_REFERENCES: usize = 1024;
/// Neighbours averaged in the score.
pub const DEFAULT_K: usize = 10;

/// The shape of the bank and the validation quantiles of its score, in the model description
/// ([`crate::ModelConfig::typicality`]).
///
/// ```
/// use fracture_nn::typicality::TypicalityConfig;
/// let t = TypicalityConfig { references: 4, features: 8, k: 2, q95: 0.1, q99: 0.2,
///     path: "typicality".into(), mean_std: false };
/// assert!(t.judge(0.15).typical && !t.judge(0.25).typical);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypicalityConfig {
    /// Feature vectors in the bank.
    pub references: usize,
    /// Their length (the pooled features the classifier reads).
    pub features: usize,
    /// Neighbours averaged in the score.
    pub k: usize,
    /// The score 95 % of validation images stay under.
    pub q95: f32,
    /// The score 99 % of validation images stay under: above it an image is atypical.
    pub q99: f32,
    /// State-dict path of the bank layer (`typicality` after `pool`, or inside a stage, e.g.
    /// `_blocks.typicality`; files that predate the field read as `typicality`).
    #[serde(default = "default_path")]
    pub path: String,
    /// The bank reads a feature map and describes each image by the mean and the standard
    /// deviation of every channel (`features = 2 C`); `false`: it reads the pooled vector.
    #[serde(default)]
    pub mean_std: bool,
}

fn default_path() -> String {
    TYPICALITY_NAME.to_string()
}

impl TypicalityConfig {
    /// The verdict for a score.
    pub fn judge(&self, score: f32) -> Typicality {
        Typicality {
            score,
            typical: score <= self.q99,
        }
    }

    /// Checks sizes and quantiles (a file from elsewhere may hold anything).
    pub fn validate(&self) -> Result<()> {
        let ok = (1..=65_536).contains(&self.references)
            && (1..=65_536).contains(&self.features)
            && (1..=self.references).contains(&self.k)
            && self.q95.is_finite()
            && self.q99.is_finite()
            && self.q95 <= self.q99
            && !self.path.is_empty();
        if ok {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "invalid typicality description {self:?}"
            )))
        }
    }
}

/// One image's typicality: its score and whether it is within what validation images reach.
///
/// ```
/// let t = fracture_nn::typicality::Typicality { score: 0.3, typical: false };
/// assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"score":0.3,"typical":false}"#);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Typicality {
    /// The k-NN score (lower is more typical).
    pub score: f32,
    /// `score <= q99`.
    pub typical: bool,
}

/// `1 - mean of the k largest cosine similarities` of `feature` to the rows of `reference`
/// (`rows x d`, each row of unit length).
///
/// ```
/// use fracture_nn::typicality::knn_score;
/// let bank = [1.0, 0.0, 0.0, 1.0]; // two unit rows
/// assert!((knn_score(&bank, 2, &[3.0, 0.0], 1) - 0.0).abs() < 1e-6);
/// assert!((knn_score(&bank, 2, &[3.0, 0.0], 2) - 0.5).abs() < 1e-6);
/// assert!((knn_score(&bank, 2, &[-1.0, 0.0], 1) - 1.0).abs() < 1e-6);
/// ```
pub fn knn_score(reference: &[f32], d: usize, feature: &[f32], k: usize) -> f32 {
    let norm = feature
        .iter()
        .map(|v| (*v as f64) * (*v as f64))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 || !norm.is_finite() || d == 0 {
        return 1.0;
    }
    let inv = (1.0 / norm) as f32;
    let mut sims: Vec<f32> = reference
        .chunks_exact(d)
        .map(|row| row.iter().zip(feature).map(|(a, b)| a * b).sum::<f32>() * inv)
        .collect();
    let k = k.clamp(1, sims.len().max(1));
    if sims.is_empty() {
        return 1.0;
    }
    sims.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    1.0 - sims[..k].iter().sum::<f32>() / k as f32
}

/// The bank as a layer: the identity on the main path, keeping the [`knn_score`] of every
/// image of the last forward pass (not in training mode, where it is not used).
///
/// Its one buffer is `reference` `[references, features]`. No PyTorch equivalent: it holds
/// what `sklearn.neighbors.NearestNeighbors(metric="cosine")` would be fitted on.
///
/// ```
/// use fracture_nn::layers::{Layer, Mode};
/// use fracture_nn::tensor::Tensor4;
/// use fracture_nn::typicality::{TypicalityBank, TypicalityConfig};
/// let cfg = TypicalityConfig { references: 2, features: 2, k: 1, q95: 0.1, q99: 0.2,
///     path: "typicality".into(), mean_std: false };
/// let mut bank = TypicalityBank::from_rows(cfg, &[vec![1.0, 0.0], vec![0.0, 2.0]])?;
/// let x = Tensor4::from_vec([2, 2, 1, 1], vec![5.0, 0.0, -1.0, 0.0]).unwrap();
/// assert_eq!(bank.forward(&x, Mode::Eval).unwrap(), x);
/// let s = bank.scores().unwrap();
/// assert!(s[0].abs() < 1e-6 && (s[1] - 1.0).abs() < 1e-6);
/// # Ok::<(), fracture_nn::Error>(())
/// ```
#[derive(Debug)]
pub struct TypicalityBank {
    config: TypicalityConfig,
    reference: Buffer,
    scores: Option<Vec<f32>>,
    /// The features of the last pass, when recording (while a bank is being filled).
    recorded: Option<Vec<Vec<f32>>>,
}

impl TypicalityBank {
    /// An empty (all-zero) bank of the configured shape, to be loaded from a model file.
    pub fn new(config: TypicalityConfig) -> Result<TypicalityBank> {
        config.validate()?;
        let shape = [config.references, config.features];
        let reference = Buffer::new(Tensor4::zeros([shape[0], shape[1], 1, 1]), &shape)?;
        Ok(TypicalityBank {
            config,
            reference,
            scores: None,
            recorded: None,
        })
    }

    /// A bank holding `rows` (each normalised to unit length here).
    pub fn from_rows(config: TypicalityConfig, rows: &[Vec<f32>]) -> Result<TypicalityBank> {
        if rows.len() != config.references || rows.iter().any(|r| r.len() != config.features) {
            return Err(Error::Config(format!(
                "typicality bank: {} rows for {} references of {} features",
                rows.len(),
                config.references,
                config.features
            )));
        }
        let mut bank = TypicalityBank::new(config)?;
        bank.fill(rows);
        Ok(bank)
    }

    /// The bank's description.
    pub fn config(&self) -> &TypicalityConfig {
        &self.config
    }

    /// The unit-length reference rows, `references x features`, row-major.
    pub fn reference(&self) -> &[f32] {
        self.reference.value.as_slice()
    }

    /// The scores of the last forward pass (not kept in training mode).
    pub fn scores(&self) -> Option<&[f32]> {
        self.scores.as_deref()
    }

    /// The per-image features of an input batch: the flattened input, or the mean and the
    /// standard deviation of every channel with [`TypicalityConfig::mean_std`].
    pub fn features_of(&self, x: &Tensor4) -> Vec<Vec<f32>> {
        let [n, c, h, w] = x.shape();
        let hw = h * w;
        (0..n)
            .map(|i| {
                let img = &x.as_slice()[i * c * hw..(i + 1) * c * hw];
                if !self.config.mean_std {
                    return img.to_vec();
                }
                let mut means = Vec::with_capacity(2 * c);
                let mut sds = Vec::with_capacity(c);
                for plane in img.chunks_exact(hw.max(1)) {
                    let m = plane.iter().map(|&v| v as f64).sum::<f64>() / hw.max(1) as f64;
                    let var = plane.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>()
                        / hw.max(1) as f64;
                    means.push(m as f32);
                    sds.push(var.sqrt() as f32);
                }
                means.extend(sds);
                means
            })
            .collect()
    }

    /// Keep the features of the following passes ([`TypicalityBank::take_recorded`]).
    pub fn record(&mut self) {
        self.recorded = Some(Vec::new());
    }

    /// The features recorded since [`TypicalityBank::record`]; stops recording.
    pub fn take_recorded(&mut self) -> Vec<Vec<f32>> {
        self.recorded.take().unwrap_or_default()
    }

    /// Replaces the reference rows (normalised to unit length here) and the quantiles.
    fn fill(&mut self, rows: &[Vec<f32>]) {
        let d = self.config.features;
        for (dst, row) in self
            .reference
            .value
            .as_slice_mut()
            .chunks_exact_mut(d)
            .zip(rows)
        {
            let norm = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            let inv = if norm > 0.0 { (1.0 / norm) as f32 } else { 0.0 };
            for (o, v) in dst.iter_mut().zip(row) {
                *o = v * inv;
            }
        }
    }
}

impl Layer for TypicalityBank {
    fn kind(&self) -> &'static str {
        "TypicalityBank"
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> fracture_layers::Result<Tensor4> {
        self.forward_owned(x.clone(), mode)
    }

    fn forward_owned(&mut self, x: Tensor4, mode: Mode) -> fracture_layers::Result<Tensor4> {
        if mode.is_training() {
            self.scores = None;
            return Ok(x);
        }
        let [_, c, h, w] = x.shape();
        let d = self.config.features;
        let got = if self.config.mean_std {
            2 * c
        } else {
            c * h * w
        };
        if got != d {
            return Err(LayersError::Config {
                layer: "TypicalityBank",
                reason: format!("expected {d} features per image, got shape {:?}", x.shape()),
            });
        }
        let feats = self.features_of(&x);
        let reference = self.reference.value.as_slice();
        self.scores = Some(
            feats
                .iter()
                .map(|f| knn_score(reference, d, f, self.config.k))
                .collect(),
        );
        if let Some(r) = self.recorded.as_mut() {
            r.extend(feats);
        }
        Ok(x)
    }

    fn backward(&mut self, dy: &Tensor4) -> fracture_layers::Result<Tensor4> {
        Ok(dy.clone())
    }

    fn visit_buffers<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, &'a mut Buffer)) {
        f(
            &fracture_layers::join_name(prefix, "reference"),
            &mut self.reference,
        );
    }

    fn visit_buffers_ref<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a Buffer)) {
        f(
            &fracture_layers::join_name(prefix, "reference"),
            &self.reference,
        );
    }
}

/// The `typicality` value of a prediction record (`predict --json`, `serve`, `validate`): the
/// score and verdict, or, for a model without a bank, nulls and the reason (the JSON of
/// [`crate::prediction_record::TypicalityRecord`]).
///
/// ```
/// use fracture_nn::typicality::{record, Typicality};
/// let t = record(Some(Typicality { score: 0.5, typical: false }));
/// assert_eq!(t["typical"], false);
/// assert!(record(None)["typical"].is_null());
/// ```
pub fn record(t: Option<Typicality>) -> serde_json::Value {
    serde_json::to_value(crate::prediction_record::TypicalityRecord::from(t))
        .expect("a typicality record always converts")
}

/// The words a person reads for an atypical image.
pub const ATYPICAL_WARNING: &str =
    "this image is unlike the radiographs the model learned from: its probability means little";

/// The typicality scores of the last forward pass of `net`, if it holds a bank.
pub fn last_scores(net: &Sequential) -> Option<Vec<f32>> {
    bank_of(net).and_then(|b| b.scores().map(<[f32]>::to_vec))
}

/// The bank of a network built by [`crate::ModelConfig::build`], wherever it sits.
pub fn bank_of(net: &Sequential) -> Option<&TypicalityBank> {
    [
        TYPICALITY_NAME.to_string(),
        format!("_blocks.{TYPICALITY_NAME}"),
    ]
    .iter()
    .find_map(|p| find_in(net, p))
    .and_then(|l| l.as_any())
    .and_then(|a| a.downcast_ref::<TypicalityBank>())
}

fn bank_mut<'a>(net: &'a mut Sequential, path: &str) -> Option<&'a mut TypicalityBank> {
    find_in_mut(net, path)
        .and_then(|l| l.as_any_mut())
        .and_then(|a| a.downcast_mut::<TypicalityBank>())
}

/// Fills the classifier's typicality bank (replacing any it had): features of up to
/// [`DEFAULT_REFERENCES`] images of `train` (evenly spaced), the validation scores' 95 % and
/// 99 % quantiles from `val`. Where the bank reads is the family's choice
/// ([`crate::model::Backbone::typicality_site`]; after `pool` when it has none). Ensembles are
/// left without one (returns `false`).
pub fn attach(
    clf: &mut Classifier,
    train: &DatasetSplit,
    val: &DatasetSplit,
    batch: usize,
) -> Result<bool> {
    if clf.meta.model.members > 1 || train.is_empty() || val.is_empty() {
        return Ok(false);
    }
    remove(clf);
    let n_ref = train.len().min(DEFAULT_REFERENCES);
    let site = clf
        .meta
        .model
        .backbone()
        .typicality_site(clf.meta.model.image_size);
    let (path, features, mean_std) = match &site {
        Some(site) => (
            format!("{}.{TYPICALITY_NAME}", site.sequence),
            2 * site.channels,
            true,
        ),
        None => {
            // After `pool`: the classifier's input vector.
            let fc = clf.meta.model.classifier_prefix();
            let w = clf
                .net
                .param(&format!("{fc}weight"))
                .ok_or_else(|| Error::Config("the model has no classifier weight".into()))?;
            (TYPICALITY_NAME.to_string(), w.torch_shape()[1], false)
        }
    };
    let mut config = TypicalityConfig {
        references: n_ref,
        features,
        k: DEFAULT_K.min(n_ref),
        q95: 0.0,
        q99: 0.0,
        path: path.clone(),
        mean_std,
    };
    let bank = TypicalityBank::new(config.clone())?;
    match &site {
        Some(site) => find_in_mut(&mut clf.net, &site.sequence)
            .and_then(|l| l.as_sequential_mut())
            .ok_or_else(|| {
                Error::Config(format!(
                    "no sequence {} for the typicality bank",
                    site.sequence
                ))
            })?
            .insert_after(&site.after, TYPICALITY_NAME, Box::new(bank))?,
        None => clf
            .net
            .insert_after("pool", TYPICALITY_NAME, Box::new(bank))?,
    };
    let picks: Vec<usize> = (0..n_ref).map(|j| j * train.len() / n_ref).collect();
    bank_mut(&mut clf.net, &path)
        .expect("just inserted")
        .record();
    run(clf, train, &picks, batch)?;
    let rows = bank_mut(&mut clf.net, &path)
        .expect("just inserted")
        .take_recorded();
    bank_mut(&mut clf.net, &path)
        .expect("just inserted")
        .fill(&rows);
    let all: Vec<usize> = (0..val.len()).collect();
    let mut scores = run(clf, val, &all, batch)?;
    scores.sort_by(f32::total_cmp);
    let q =
        |p: f64| scores[((p * (scores.len() - 1) as f64).ceil() as usize).min(scores.len() - 1)];
    config.q95 = q(0.95);
    config.q99 = q(0.99);
    bank_mut(&mut clf.net, &path).expect("just inserted").config = config.clone();
    clf.meta.model.typicality = Some(config);
    Ok(true)
}

/// Removes the bank (and its description) from a classifier, e.g. before its weights are
/// trained further: a bank describes the features of the weights it was filled with.
pub fn remove(clf: &mut Classifier) {
    if let Some(t) = clf.meta.model.typicality.take() {
        let (parent, name) = match t.path.rsplit_once('.') {
            Some((p, n)) => (p.to_string(), n.to_string()),
            None => (String::new(), t.path.clone()),
        };
        if let Some(seq) = find_in_mut(&mut clf.net, &parent).and_then(|l| l.as_sequential_mut()) {
            seq.remove(&name);
        }
    }
}

/// Runs the images `idx` of `data` through the classifier in eval mode; their typicality scores.
fn run(clf: &mut Classifier, data: &DatasetSplit, idx: &[usize], batch: usize) -> Result<Vec<f32>> {
    let s = data.image_size();
    let per = s * s;
    let norm = clf.meta.normalization;
    let mut out = Vec::with_capacity(idx.len());
    for chunk in idx.chunks(batch.max(1)) {
        let mut x = vec![0f32; chunk.len() * per];
        for (dst, &i) in x.chunks_exact_mut(per).zip(chunk) {
            norm.apply_u8(data.image(i), dst);
        }
        clf.net
            .forward(&Tensor4::from_vec([chunk.len(), 1, s, s], x)?, Mode::Eval)?;
        out.extend(last_scores(&clf.net).unwrap_or_default());
    }
    Ok(out)
}

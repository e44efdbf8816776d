//! Scoring a split in eval mode ([`evaluate_split`], [`SplitScores`]) and choosing what goes
//! into the model file at the end of a run: the test-time augmentation and the operating
//! threshold, both on validation, then test scored once at that threshold.

use std::sync::Arc;

use fracture_data::{BatchLoader, DatasetSplit, Normalization};
use fracture_layers::{CrossEntropyLoss, Layer, Mode, Sequential};
use fracture_metrics::{
    roc_auc, threshold_for_sensitivity, youden_threshold, BinaryReport, OperatingPoint,
};
use fracture_tensor::Tensor4;

use crate::classifier::Classifier;
use crate::error::Result;
use crate::trainer::config::TrainConfig;
use crate::tta::{predict_probs, Tta};

/// The operating point and figures [`calibrate`] chose and measured.
pub(crate) struct Calibration {
    pub(crate) tta: Tta,
    pub(crate) tta_val_auc: Vec<(Tta, Option<f64>)>,
    pub(crate) operating_point: OperatingPoint,
    pub(crate) youden: Option<OperatingPoint>,
    pub(crate) val: BinaryReport,
    pub(crate) test: Option<BinaryReport>,
}

/// Scores `val` under each test-time augmentation candidate of `cfg` and keeps the one with the
/// highest ROC-AUC (ties keep the first, [`Tta::Off`]); sets the classifier's TTA and operating
/// threshold (the target sensitivity on `val`), then scores `test` once at that threshold.
pub(crate) fn calibrate(
    clf: &mut Classifier,
    cfg: &TrainConfig,
    val: Arc<DatasetSplit>,
    test: Option<DatasetSplit>,
) -> Result<Calibration> {
    let bs = cfg.batch_size;
    let norm = clf.meta.normalization;
    let n_val = val.len();
    let candidates = match cfg.tta {
        Some(t) => vec![t],
        None => vec![Tta::Off, Tta::HFlip],
    };
    let mut tta_val_auc = Vec::new();
    let mut chosen: Option<(Tta, SplitScores)> = None;
    for t in candidates {
        let ev = evaluate_split(&mut clf.net, Arc::clone(&val), norm, bs, t)?;
        let auc = ev.auc();
        tta_val_auc.push((t, auc));
        let better = match &chosen {
            None => true,
            Some((_, best)) => {
                auc.unwrap_or(f64::NEG_INFINITY) > best.auc().unwrap_or(f64::NEG_INFINITY)
            }
        };
        if better {
            chosen = Some((t, ev));
        }
    }
    let (tta, ev) = chosen.expect("at least one candidate");
    clf.meta.tta = tta;
    let labels = ev.positives();
    let op = threshold_for_sensitivity(&labels, &ev.scores, cfg.target_sensitivity)?;
    let youden = youden_threshold(&labels, &ev.scores).ok();
    clf.meta.threshold = op.threshold;
    clf.meta.threshold_rule = format!(
        "highest specificity with validation sensitivity >= {:.2} ({} val images)",
        cfg.target_sensitivity, n_val
    );
    let val_report = BinaryReport::new(&labels, &ev.scores, op.threshold)?;
    let test_report = match test {
        Some(t) if !t.is_empty() => {
            let te = evaluate_split(&mut clf.net, t, norm, bs, tta)?;
            Some(BinaryReport::new(
                &te.positives(),
                &te.scores,
                op.threshold,
            )?)
        }
        _ => None,
    };
    Ok(Calibration {
        tta,
        tta_val_auc,
        operating_point: op,
        youden,
        val: val_report,
        test: test_report,
    })
}

pub(crate) fn count_correct(logits: &Tensor4, labels: &[usize]) -> usize {
    let [n, k, _, _] = logits.shape();
    let l = logits.as_slice();
    (0..n)
        .filter(|&i| {
            let row = &l[i * k..(i + 1) * k];
            let arg = (0..k).fold(0, |best, j| if row[j] > row[best] { j } else { best });
            arg == labels[i]
        })
        .count()
}

/// Scores of a split under a network in eval mode.
#[derive(Clone, Debug)]
pub struct SplitScores {
    /// P(fractured) per image, in the split's order.
    pub scores: Vec<f64>,
    /// Class index per image.
    pub labels: Vec<usize>,
    /// Mean unweighted cross-entropy.
    pub mean_loss: f64,
    /// Accuracy at argmax.
    pub accuracy: f64,
    /// Typicality score per image (the image as given), when the network holds a bank
    /// ([`crate::typicality`]).
    pub typicality: Option<Vec<f32>>,
}

impl SplitScores {
    /// `true` where the image is fractured (the positive class).
    pub fn positives(&self) -> Vec<bool> {
        self.labels
            .iter()
            .map(|&l| l == fracture_metrics::FRACTURED)
            .collect()
    }

    /// ROC-AUC, `None` when the split holds one class only.
    pub fn auc(&self) -> Option<f64> {
        roc_auc(&self.positives(), &self.scores).ok()
    }
}

/// Runs `net` in eval mode over `split` (no augmentation) and returns P(fractured) per image,
/// each averaged over the views of `tta`.
///
/// The loss is the mean unweighted cross-entropy of the (averaged) probabilities.
///
/// ```
/// use fracture_nn::{evaluate_split, ModelConfig, Tta};
/// use fracture_nn::data::{DatasetSplit, Normalization, Split};
/// let split = DatasetSplit::new(Split::Val, vec!["fractured".into(), "not_fractured".into()], 32,
///     vec![128; 2 * 32 * 32], vec![0, 1], vec!["a.png".into(), "b.png".into()])?;
/// let mut net = ModelConfig::phantom(32).build(0)?;
/// let norm = Normalization { mean: 0.5, std: 0.2 };
/// let ev = evaluate_split(&mut net, split.clone(), norm, 8, Tta::Off)?;
/// assert_eq!(ev.scores.len(), 2);
/// // A uniform image is its own mirror image: flip averaging changes nothing.
/// let tta = evaluate_split(&mut net, split, norm, 8, Tta::HFlip)?;
/// assert!((ev.scores[0] - tta.scores[0]).abs() < 1e-6);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn evaluate_split(
    net: &mut Sequential,
    split: impl Into<Arc<DatasetSplit>>,
    normalization: Normalization,
    batch_size: usize,
    tta: Tta,
) -> Result<SplitScores> {
    let split = split.into();
    let loader = BatchLoader::eval(Arc::clone(&split), normalization, batch_size)?;
    let plain = CrossEntropyLoss::default();
    let mut scores = Vec::with_capacity(split.len());
    let mut labels = Vec::with_capacity(split.len());
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    let mut typicality: Option<Vec<f32>> = Some(Vec::with_capacity(split.len()));
    for batch in loader.epoch(0) {
        let x = Tensor4::from_vec(batch.shape(), batch.images)?;
        let probs = match tta {
            Tta::Off => {
                let logits = net.forward(&x, Mode::Eval)?;
                loss_sum += plain.forward(&logits, &batch.labels)? as f64 * batch.n as f64;
                correct += count_correct(&logits, &batch.labels);
                fracture_layers::softmax(&logits)?
            }
            Tta::HFlip => {
                let probs = predict_probs(net, &x, tta)?;
                let k = probs.shape()[1];
                for (i, &label) in batch.labels.iter().enumerate() {
                    let p = probs.as_slice()[i * k + label] as f64;
                    loss_sum -= p.max(1e-12).ln();
                }
                correct += count_correct(&probs, &batch.labels);
                probs
            }
        };
        let k = probs.shape()[1];
        scores.extend(
            (0..batch.n).map(|i| probs.as_slice()[i * k + fracture_metrics::FRACTURED] as f64),
        );
        labels.extend_from_slice(&batch.labels);
        typicality = match (typicality, crate::typicality::last_scores(net)) {
            (Some(mut all), Some(t)) if t.len() == batch.n => {
                all.extend(t);
                Some(all)
            }
            _ => None,
        };
    }
    let n = labels.len().max(1) as f64;
    Ok(SplitScores {
        scores,
        labels,
        mean_loss: loss_sum / n,
        accuracy: correct as f64 / n,
        typicality,
    })
}

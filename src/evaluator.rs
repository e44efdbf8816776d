//! Evaluating a model on a labelled split: the figures `fracture eval` prints.
//!
//! An [`Evaluator`] holds the choices of an evaluation (threshold and test-time augmentation,
//! by default the model's own; batch size; bootstrap resamples and their seed) and
//! [`Evaluator::evaluate`] runs the model over a [`DatasetSplit`] into an [`Evaluation`]: the
//! scores, the [`BinaryReport`] at the threshold, bootstrap 95 % intervals and, given a group
//! per image, a table of subgroups. [`Evaluation::to_json`] shapes it into the one JSON object
//! `fracture eval --json` prints.

use fracture_data::DatasetSplit;
use fracture_metrics::{bootstrap_ci, BinaryReport, BootstrapCi, ClassificationReport};
use serde_json::{json, Value};

use crate::error::Result;
use crate::localisation::LocalisationReport;
use crate::subgroups::{subgroup_table, SubgroupRow};
use crate::{evaluate_split, Classifier, Tta};

/// How to evaluate a model on a split (see the module docs).
///
/// ```
/// use fracture_nn::evaluator::Evaluator;
/// use fracture_nn::data::{phantom::PhantomConfig, Split};
/// use fracture_nn::{model::PlainNet, Classifier, ClassifierMeta, ModelConfig};
/// let mut data = PhantomConfig { size: 32, train: 8, val: 4, test: 16, ..Default::default() }.folder()?;
/// let model = ModelConfig::phantom(32).with_arch(PlainNet::new(&[4, 8]));
/// let mut clf = Classifier::new(ClassifierMeta::new(model, data.normalization()?), 0)?;
/// let ev = Evaluator { resamples: 200, ..Evaluator::default() }.evaluate(&mut clf, data.take_split(Split::Test)?, None)?;
/// assert_eq!(ev.report.n, 16);
/// assert_eq!(ev.threshold, clf.meta.threshold);
/// let v = ev.to_json("test", "model.safetensors", &[], None);
/// assert_eq!(v["split"], "test");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluator {
    /// Threshold on P(fractured); `None`: the model's operating threshold.
    pub threshold: Option<f64>,
    /// Test-time augmentation; `None`: the model's own.
    pub tta: Option<Tta>,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Bootstrap resamples of the 95 % intervals (of the whole split and of each subgroup).
    pub resamples: usize,
    /// Seed of the resampling.
    pub seed: u64,
}

impl Default for Evaluator {
    /// The model's threshold and test-time augmentation, batches of 32, 1000 resamples, seed 0.
    fn default() -> Self {
        Evaluator {
            threshold: None,
            tta: None,
            batch_size: 32,
            resamples: 1000,
            seed: 0,
        }
    }
}

/// The figures of one evaluation ([`Evaluator::evaluate`]).
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The threshold used.
    pub threshold: f64,
    /// The test-time augmentation used.
    pub tta: Tta,
    /// P(fractured) per image, in the split's order.
    pub scores: Vec<f64>,
    /// Class index per image.
    pub labels: Vec<usize>,
    /// Whether each image is of the positive class.
    pub positives: Vec<bool>,
    /// ROC-AUC, sensitivity, specificity and the rest at the threshold.
    pub report: BinaryReport,
    /// Bootstrap 95 % intervals (`None` when the split cannot be resampled, e.g. one class).
    pub ci: Option<BootstrapCi>,
    /// The subgroup column's name and one row per value, when groups were given.
    pub subgroups: Option<(String, Vec<SubgroupRow>)>,
}

impl Evaluator {
    /// Scores `data` with `clf` and computes the figures; `groups` is a column name and a
    /// value (or `None`) per image of `data`, for the subgroup table.
    pub fn evaluate(
        &self,
        clf: &mut Classifier,
        data: DatasetSplit,
        groups: Option<(&str, Vec<Option<String>>)>,
    ) -> Result<Evaluation> {
        let threshold = self.threshold.unwrap_or(clf.meta.threshold);
        let tta = self.tta.unwrap_or(clf.meta.tta);
        let ev = evaluate_split(
            &mut clf.net,
            data,
            clf.meta.normalization,
            self.batch_size,
            tta,
        )?;
        let positives = ev.positives();
        let report = BinaryReport::new(&positives, &ev.scores, threshold)?;
        let ci = bootstrap_ci(&positives, &ev.scores, threshold, self.resamples, self.seed).ok();
        let subgroups = groups.map(|(by, g)| {
            let rows = subgroup_table(
                &g,
                &positives,
                &ev.scores,
                threshold,
                self.resamples,
                self.seed,
            );
            (by.to_string(), rows)
        });
        Ok(Evaluation {
            threshold,
            tta,
            scores: ev.scores,
            labels: ev.labels,
            positives,
            report,
            ci,
            subgroups,
        })
    }
}

impl Evaluation {
    /// The per-class precision, recall and F1 at the threshold, with the model's class names
    /// and positive class.
    pub fn classification_report(
        &self,
        class_names: &[String],
        positive_class: usize,
    ) -> Result<ClassificationReport> {
        let names: Vec<&str> = class_names.iter().map(String::as_str).collect();
        let y_pred: Vec<usize> = self
            .scores
            .iter()
            .map(|&p| {
                if p >= self.threshold {
                    positive_class
                } else {
                    1 - positive_class
                }
            })
            .collect();
        Ok(ClassificationReport::new(&self.labels, &y_pred, &names)?)
    }

    /// The object `fracture eval --json` prints: the [`BinaryReport`]'s fields, `kappa`, the
    /// `split` folder name, the `skipped` files, `tta`, the `model` file, and when present
    /// `bootstrap_95ci`, `subgroups` (`{"by", "rows"}`) and `localisation`. Keys are sorted.
    pub fn to_json(
        &self,
        split: &str,
        model: &str,
        skipped: &[String],
        localisation: Option<&LocalisationReport>,
    ) -> Value {
        let mut v = to_value(&self.report);
        let obj = v.as_object_mut().expect("a report is an object");
        obj.insert("kappa".into(), json!(self.report.cohen_kappa));
        obj.insert("split".into(), json!(split));
        obj.insert("skipped".into(), json!(skipped));
        obj.insert("tta".into(), json!(self.tta.to_string()));
        obj.insert("model".into(), json!(model));
        if let Some(ci) = &self.ci {
            obj.insert("bootstrap_95ci".into(), to_value(ci));
        }
        if let Some((by, rows)) = &self.subgroups {
            obj.insert("subgroups".into(), json!({"by": by, "rows": rows}));
        }
        if let Some(l) = localisation {
            obj.insert("localisation".into(), to_value(l));
        }
        v
    }
}

/// A report struct as JSON: plain structs with string keys always convert (a non-finite
/// number becomes `null`).
fn to_value(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("a report always converts to JSON")
}

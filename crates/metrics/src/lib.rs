//! Classification metrics for fracture-nn, exact to scikit-learn.
//!
//! From labels and scores to the figures a radiologist or a reviewer reads: confusion matrix,
//! accuracy, sensitivity, specificity, PPV/NPV, F1, Cohen's kappa, ROC and PR curves, ROC-AUC,
//! average precision, operating points, bootstrap confidence intervals and a classification
//! report. Nothing here depends on the tensor crates.
//!
//! # Conventions
//! - **Positive = fractured.** Labels are `&[bool]` with `true` = fractured; class indices
//!   (0 = fractured, 1 = not_fractured, the sorted folder names) convert with
//!   [`positives_from_classes`].
//! - **Scores** are P(fractured), one finite `f64` per sample; a sample is predicted fractured
//!   when `score >= threshold`.
//! - **Zero division** gives `0.0` (scikit-learn's `zero_division=0`); metrics undefined for the
//!   input (ROC-AUC with one class, ...) return [`MetricsError`]. Bad input never panics.
//!
//! # Example
//! ```
//! use fracture_metrics::{positives_from_classes, roc_auc, youden_threshold, BinaryReport};
//! let val_labels = positives_from_classes(&[0, 1, 0, 1, 1, 0])?;
//! let val_scores = [0.9, 0.2, 0.7, 0.6, 0.1, 0.4];
//! assert!((roc_auc(&val_labels, &val_scores)? - 8.0 / 9.0).abs() < 1e-12);
//! let op = youden_threshold(&val_labels, &val_scores)?;     // chosen on val ...
//! let test_labels = positives_from_classes(&[0, 1, 1])?;
//! let report = BinaryReport::new(&test_labels, &[0.8, 0.3, 0.75], op.threshold)?; // ... applied to test
//! println!("{report}");
//! # Ok::<(), fracture_metrics::MetricsError>(())
//! ```

#![forbid(unsafe_code)]

mod binary_report;
mod bootstrap;
mod classification_report;
mod confusion;
mod error;
mod labels;
mod operating_point;
mod pr;
mod ranking;
mod roc;

pub use binary_report::BinaryReport;
pub use bootstrap::{bootstrap_ci, BootstrapCi, Interval, BOOTSTRAP_LEVEL};
pub use classification_report::{ClassRow, ClassificationReport};
pub use confusion::Confusion;
pub use error::{MetricsError, Result};
pub use labels::{positives_from_classes, CLASS_NAMES, FRACTURED, NOT_FRACTURED};
pub use operating_point::{threshold_for_sensitivity, youden_threshold, OperatingPoint};
pub use pr::{average_precision, pr_curve, PrCurve};
pub use roc::{roc_auc, roc_curve, roc_curve_all_thresholds, RocCurve};

//! # fracture-nn
//!
//! A convolutional neural network written from scratch in Rust that tells fractured from intact
//! bones in X-ray images, and the tools around it: a trainer with checkpoints that resume exactly,
//! evaluation with the metrics a radiology model is judged by, and prediction of one image or a
//! folder with a probability.
//!
//! **Research software, not a medical device.**
//!
//! This crate is the facade: it re-exports the layered crates ([`tensor`], [`layers`],
//! [`data`], [`metrics`]) and holds the model architectures ([`ModelConfig`]), the [`Trainer`]
//! and the [`Classifier`] file format. Setting [`ModelConfig::members`] above 1 trains an
//! ensemble of independently seeded networks side by side and saves them as one classifier
//! ([`ensemble`]).
//!
//! Training takes a few lines; here on a small set of synthetic phantoms, for one epoch:
//!
//! ```
//! use fracture_nn::data::{phantom::PhantomConfig, Split};
//! use fracture_nn::{FitInputs, ModelConfig, TrainConfig, Trainer};
//! let mut data = PhantomConfig { size: 32, train: 48, val: 16, test: 16, ..Default::default() }.folder()?;
//! let out_dir = tempfile::tempdir()?;
//! let trainer = Trainer::new(TrainConfig { epochs: 1, batch_size: 16, ..Default::default() }, out_dir.path());
//! let (train, val, test) = (data.take_split(Split::Train)?, data.take_split(Split::Val)?, data.take_split(Split::Test).ok());
//! let model = ModelConfig::phantom(32).with_arch(fracture_nn::model::PlainNet::new(&[8, 16]));
//! let out = trainer.fit(FitInputs::new(model, train, val).with_optional_test(test).with_data("phantoms"))?;
//! assert!(out.report.val.roc_auc.is_some() && out_dir.path().join("model.safetensors").exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! and on a folder `<root>/{train,val,test}/{fractured,not_fractured}/*.png`:
//!
//! ```no_run
//! use fracture_nn::{data::{ImageFolder, LoadOptions}, FitInputs, ModelConfig, TrainConfig, Trainer};
//! let folder = ImageFolder::load("xrays".as_ref(), &LoadOptions::new(128))?;
//! let trainer = Trainer::new(TrainConfig { epochs: 15, verbose: true, ..Default::default() }, "runs/xrays");
//! let model = ModelConfig { image_size: 128, ..Default::default() };
//! let inputs = FitInputs::new(model, folder.train()?.clone(), folder.val()?.clone())
//!     .with_optional_test(folder.test().ok().cloned())
//!     .with_data(folder.describe());
//! let out = trainer.fit(inputs)?;
//! println!("val ROC-AUC {:?}, threshold {:.3}", out.report.val.roc_auc, out.classifier.meta.threshold);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod batch_predict;
pub mod classifier;
pub mod curves;
pub mod ema;
pub mod ensemble;
pub mod error;
pub mod evaluator;
pub mod fonts;
pub mod gradcam;
pub mod localisation;
pub mod model;
pub mod onnx;
pub mod overlay;
pub mod prediction_record;
pub mod pretrained;
pub mod results_log;
pub mod run_folder;
pub mod subgroups;
pub mod summary;
pub mod trainer;
pub mod tta;
pub mod typicality;
pub mod validation;
pub mod validation_report;

pub use fracture_data as data;
pub use fracture_layers as layers;
pub use fracture_metrics as metrics;
pub use fracture_tensor as tensor;

pub use classifier::{Classifier, ClassifierMeta, Provenance, META_KEY};
pub use error::{Error, Result};
pub use gradcam::{grad_cam, CamMap, GradCam, Heatmap, Score};
pub use model::{BlockKind, Head, ModelConfig};
pub use trainer::report::{SplitSizes, TrainOutcome};
pub use trainer::{
    evaluate_split, ClassWeights, EpochRecord, FitInputs, MemberSummary, OptimizerKind, RunReport,
    SplitScores, TrainConfig, Trainer,
};
pub use tta::Tta;

/// The README's code, compiled by `cargo test --doc` so that the library example there stays
/// in step with the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

//! Ensembles of independently trained networks ([`crate::ModelConfig::members`] > 1): [`Trainer::fit`]
//! trains the members side by side, each on its own thread pool, then joins them into one
//! [`Classifier`] that averages their logits, with its test-time augmentation and operating
//! threshold chosen on validation for the ensemble as a whole.
//!
//! # Files written into the output directory
//! - `member-{i}/`: member `i`'s whole run with seed `seed + i`, exactly as a single-network run
//!   writes it (its own best model, `last.*` checkpoints, `metrics.csv`, `curves.png`,
//!   `report.json`). Resuming resumes every member from its own checkpoint (a member that had
//!   not finished an epoch starts afresh).
//! - `model.safetensors`: the ensemble, its tensors named `members.{i}.<name>`.
//! - `report.json`: the ensemble's validation and test figures and a summary of every member.
//!
//! # Threads and determinism
//! With `k` members and `T` threads in the calling rayon pool (`--threads T`), each member
//! trains on a pool of `max(1, T / k)` threads. Member `i` is then the very run a single
//! network with seed `seed + i` on `max(1, T / k)` threads gives, so the same seed and thread
//! count give the same ensemble.

use std::sync::Arc;

use fracture_layers::{Ensemble, Sequential};

use crate::classifier::Classifier;
use crate::error::{io_err, Error, Result};
use crate::trainer::report::{self, ReportParts, SplitSizes, TrainOutcome};
use crate::trainer::{calibrate, FitInputs, MemberSummary, TrainConfig};
use crate::Trainer;

impl Trainer {
    /// The trainer of member `i`: this run's settings with seed `seed + i`, writing into
    /// `member-{i}/`; only member 0 shows progress.
    fn member_trainer(&self, i: usize) -> Trainer {
        Trainer {
            config: TrainConfig {
                seed: self.config.seed.wrapping_add(i as u64),
                verbose: self.config.verbose && i == 0,
                ..self.config.clone()
            },
            out_dir: self.out_dir.join(format!("member-{i}")),
            stop_after: self.stop_after,
            init: self.init.clone(),
        }
    }

    /// [`Trainer::fit`] for [`ModelConfig::members`] > 1 (see the [module docs](self)).
    pub(crate) fn fit_ensemble(&self, inputs: FitInputs) -> Result<TrainOutcome> {
        let FitInputs {
            model,
            train,
            val,
            test,
            data,
            resume,
            train_boxes,
        } = inputs;
        let k = model.members;
        let test_len = test.as_ref().map_or(0, |t| t.len());
        let single = model.member();
        let per_member = (rayon::current_num_threads() / k).max(1);
        std::fs::create_dir_all(&self.out_dir).map_err(io_err(&self.out_dir))?;
        let trainers: Vec<Trainer> = (0..k).map(|i| self.member_trainer(i)).collect();
        if self.config.verbose {
            eprintln!(
                "training {k} ensemble members side by side on {per_member} thread(s) each (seeds {}..={}); progress shown for member 0",
                self.config.seed,
                self.config.seed.wrapping_add(k as u64 - 1)
            );
        }
        let results: Vec<Result<TrainOutcome>> = std::thread::scope(|s| {
            let handles: Vec<_> = trainers
                .iter()
                .map(|t| {
                    let member_inputs = FitInputs {
                        model: single.clone(),
                        train: Arc::clone(&train),
                        val: Arc::clone(&val),
                        test: None,
                        data: data.clone(),
                        resume: resume && t.last_path().exists(),
                        train_boxes: train_boxes.clone(),
                    };
                    s.spawn(move || {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(per_member)
                            .build()
                            .map_err(|e| {
                                Error::Config(format!(
                                    "cannot start a pool of {per_member} thread(s): {e}"
                                ))
                            })?;
                        pool.install(|| t.fit(member_inputs))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Config(
                            "the member's training thread panicked".into(),
                        ))
                    })
                })
                .collect()
        });
        let mut outcomes = Vec::with_capacity(k);
        for (i, r) in results.into_iter().enumerate() {
            outcomes.push(r.map_err(|e| Error::Member {
                index: i,
                dir: trainers[i].out_dir.clone(),
                source: Box::new(e),
            })?);
        }

        let members: Vec<MemberSummary> = outcomes
            .iter()
            .zip(&trainers)
            .map(|(o, t)| MemberSummary {
                seed: t.config.seed,
                dir: t.out_dir.clone(),
                best_epoch: o.best_epoch,
                val_auc: o.classifier.meta.provenance.val_auc,
                train_seconds: o.report.train_seconds,
            })
            .collect();
        let first = &outcomes[0];
        let mut meta = first.classifier.meta.clone();
        meta.model = model.clone();
        let mut nets = Vec::with_capacity(k);
        for o in outcomes.iter() {
            let path = o.out_dir.join("model.safetensors");
            if o.classifier.meta.normalization != meta.normalization {
                return Err(Error::ModelFile {
                    path,
                    reason: "its normalisation differs from member 0's (members must share the training split)".into(),
                });
            }
            // A member file carries its own typicality bank; the joined model has none
            // (banks are not defined for ensembles), so it is dropped here.
            let mut member = Classifier::load(&path)?;
            crate::typicality::remove(&mut member);
            if member.meta.model != single {
                return Err(Error::ModelFile {
                    path,
                    reason: "its architecture differs from the ensemble's member description"
                        .into(),
                });
            }
            nets.push(member.net);
        }
        let net = Sequential::new().with("members", Ensemble::new(nets)?)?;
        let mut clf = Classifier::from_parts(net, meta);
        let cal = calibrate(&mut clf, &self.config, val, test)?;
        // Members train side by side: the run takes as long as its slowest member.
        let train_seconds = members.iter().map(|m| m.train_seconds).fold(0.0, f64::max);
        clf.meta.provenance = report::provenance(
            &data,
            self.config.seed,
            first.report.epochs_run,
            first.best_epoch,
            cal.val.roc_auc,
        );
        let model_path = self.model_path();
        clf.save(&model_path)?;
        let sizes = SplitSizes {
            test: test_len,
            ..first.report.sizes
        };
        let parts = ReportParts {
            model,
            data,
            sizes,
            epochs_run: first.report.epochs_run,
            best_epoch: first.best_epoch,
            train_seconds,
            history: first.history.clone(),
            members,
        };
        report::finish_report(&self.config, clf, cal, parts, &self.out_dir)
    }
}

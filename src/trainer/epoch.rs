//! One epoch of a run ([`Session::run_epoch`]): the batch loop (forward, loss, divergence
//! check, backward, clipping, optimizer step, weight EMA, progress bar), then what follows it:
//! validation, the best model by validation ROC-AUC, the weight average's and the last
//! checkpoint, and the history files.

use std::sync::Arc;
use std::time::Instant;

use fracture_data::{BatchLoader, DatasetSplit};
use fracture_layers::optim::{clip_grad_norm, LrSchedule, Optimizer};
use fracture_layers::{checkpoint, CrossEntropyLoss, Layer, Mode, Sequential};
use fracture_tensor::Tensor4;
use indicatif::{ProgressBar, ProgressStyle};

use crate::classifier::{meta_entries, ClassifierMeta};
use crate::ema::WeightEma;
use crate::error::{Error, Result};
use crate::trainer::calibrate::{count_correct, evaluate_split};
use crate::trainer::checkpoints::RunState;
use crate::trainer::report::EpochRecord;
use crate::tta::Tta;
use crate::Trainer;

/// What the epochs of one run share.
pub(crate) struct Session {
    pub(crate) net: Sequential,
    pub(crate) opt: Box<dyn Optimizer>,
    pub(crate) ema: Option<WeightEma>,
    pub(crate) loss_fn: CrossEntropyLoss,
    pub(crate) loader: BatchLoader,
    /// State-dict path of the mask head trained against the loader's box targets, if any.
    pub(crate) mask_path: Option<String>,
    pub(crate) schedule: LrSchedule,
    /// State-dict prefix of the classifier, whose rate is not scaled by
    /// [`crate::TrainConfig::backbone_lr_scale`].
    pub(crate) head: String,
    pub(crate) state: RunState,
}

/// Running sums of an epoch's training batches.
struct EpochSums {
    loss: f64,
    mask_loss: f64,
    correct: usize,
    seen: usize,
    lr: f32,
}

impl Session {
    /// Runs the next epoch (`state.epochs_done`, 0-based) and everything after it: validation
    /// on `val`, the best model, checkpoints and history files.
    pub(crate) fn run_epoch(&mut self, trainer: &Trainer, val: &Arc<DatasetSplit>) -> Result<()> {
        let t0 = Instant::now();
        let sums = self.train_batches(trainer, t0)?;
        let train_secs = t0.elapsed().as_secs_f64();
        self.after_epoch(trainer, val, sums, train_secs, t0)
    }

    /// The batch loop of one epoch.
    fn train_batches(&mut self, trainer: &Trainer, t0: Instant) -> Result<EpochSums> {
        let cfg = &trainer.config;
        let epoch = self.state.epochs_done;
        let steps_per_epoch = self.loader.batches_per_epoch();
        let bar = progress_bar(cfg.verbose, steps_per_epoch, epoch + 1, cfg.epochs);
        let (head, backbone) = (self.head.clone(), cfg.backbone_lr_scale);
        let lr_scale = move |name: &str| {
            if name.starts_with(&head) {
                1.0
            } else {
                backbone
            }
        };
        let mut sums = EpochSums {
            loss: 0.0,
            mask_loss: 0.0,
            correct: 0,
            seen: 0,
            lr: cfg.lr,
        };
        for (b, mut batch) in self.loader.epoch(epoch).enumerate() {
            sums.lr = self.schedule.lr_at(epoch * steps_per_epoch + b);
            let x = Tensor4::from_vec(batch.shape(), std::mem::take(&mut batch.images))?;
            let logits = self.net.forward(&x, Mode::Train)?;
            let diverged = |loss: f32| Error::NonFiniteLoss {
                epoch: epoch + 1,
                batch: b + 1,
                loss,
            };
            if let Some(&bad) = logits.as_slice().iter().find(|v| !v.is_finite()) {
                bar.abandon();
                return Err(diverged(bad));
            }
            let (loss, dlogits) = self.loss_fn.forward_backward(&logits, &batch.labels)?;
            if !loss.is_finite() {
                bar.abandon();
                return Err(diverged(loss));
            }
            if let Some(path) = &self.mask_path {
                let l = mask_step(
                    &mut self.net,
                    path,
                    &batch,
                    cfg.mask_weight,
                    cfg.mask_pos_weight,
                )?;
                if !l.is_finite() {
                    bar.abandon();
                    return Err(diverged(l));
                }
                sums.mask_loss += l as f64 * batch.n as f64;
            }
            self.net.zero_grad();
            self.net.backward_params_only(&dlogits)?;
            if let Some(c) = cfg.grad_clip {
                clip_grad_norm(&mut self.net, c)?;
            }
            self.opt.step_groups(&mut self.net, sums.lr, &lr_scale)?;
            if let Some(e) = self.ema.as_mut() {
                e.update(&self.net)?;
            }
            sums.loss += loss as f64 * batch.n as f64;
            sums.correct += count_correct(&logits, &batch.labels);
            sums.seen += batch.n;
            let secs = t0.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {:.4}{}  acc {:.3}  {:.0} img/s",
                sums.loss / sums.seen as f64,
                if self.mask_path.is_some() {
                    format!("  mask {:.4}", sums.mask_loss / sums.seen as f64)
                } else {
                    String::new()
                },
                sums.correct as f64 / sums.seen as f64,
                sums.seen as f64 / secs
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        // The last step can break the weights without any loss showing it; validation would
        // then fail on NaN logits instead of saying that training diverged.
        let mut broken = None;
        self.net.visit_params_ref("", &mut |_, p| {
            if broken.is_none() {
                broken = p.value.as_slice().iter().copied().find(|v| !v.is_finite());
            }
        });
        if let Some(bad) = broken {
            return Err(Error::NonFiniteLoss {
                epoch: epoch + 1,
                batch: steps_per_epoch,
                loss: bad,
            });
        }
        Ok(sums)
    }

    /// Validation, the epoch's record, the best model, the weight average's and the last
    /// checkpoint, the history files.
    fn after_epoch(
        &mut self,
        trainer: &Trainer,
        val: &Arc<DatasetSplit>,
        sums: EpochSums,
        train_secs: f64,
        t0: Instant,
    ) -> Result<()> {
        let cfg = &trainer.config;
        // With a weight EMA, the averages are validated and saved; the live weights return
        // to the network before the last checkpoint is written.
        if let Some(e) = self.ema.as_mut() {
            e.swap(&mut self.net)?;
        }
        let normalization = self.state.normalization;
        let ev = evaluate_split(
            &mut self.net,
            Arc::clone(val),
            normalization,
            cfg.batch_size,
            Tta::Off,
        )
        .map_err(|e| match e {
            // Weights (or running statistics) that training broke give non-finite validation
            // logits: that is a divergence, not a fault of the validation images.
            Error::Layers(fracture_layers::LayersError::Loss(m)) if m.contains("not finite") => {
                Error::NonFiniteLoss {
                    epoch: self.state.epochs_done + 1,
                    batch: self.loader.batches_per_epoch(),
                    loss: f32::NAN,
                }
            }
            other => other,
        })?;
        let val_auc = ev.auc();
        let record = EpochRecord {
            epoch: self.state.epochs_done + 1,
            lr: sums.lr,
            train_loss: sums.loss / sums.seen.max(1) as f64,
            train_accuracy: sums.correct as f64 / sums.seen.max(1) as f64,
            val_loss: ev.mean_loss,
            val_auc,
            val_accuracy: ev.accuracy,
            images_per_s: sums.seen as f64 / train_secs.max(1e-9),
            seconds: t0.elapsed().as_secs_f64(),
        };
        if cfg.verbose {
            eprintln!(
                "epoch {:>3}/{}  loss {:.4}  acc {:.3}  val loss {:.4}  val AUC {}  val acc {:.3}  {:.0} img/s  {:.1}s",
                record.epoch,
                cfg.epochs,
                record.train_loss,
                record.train_accuracy,
                record.val_loss,
                val_auc.map_or("n/a".into(), |a| format!("{a:.4}")),
                record.val_accuracy,
                record.images_per_s,
                record.seconds
            );
        }
        let state = &mut self.state;
        state.history.push(record);
        state.epochs_done += 1;
        state.train_seconds += t0.elapsed().as_secs_f64();
        // `>` keeps the earliest epoch on ties; a run whose val set has one class keeps the latest.
        let improved = match (val_auc, state.best_auc) {
            (Some(a), Some(b)) => a > b,
            (Some(_), None) => true,
            (None, _) => state.best_auc.is_none(),
        };
        if improved {
            state.best_auc = val_auc;
            state.best_epoch = state.epochs_done;
            let mut meta = ClassifierMeta::new(state.model.clone(), normalization);
            meta.provenance = trainer.provenance(state);
            checkpoint::save_model(trainer.model_path(), &self.net, &meta_entries(&meta))?;
        }
        if let Some(e) = self.ema.as_mut() {
            let epoch_meta: checkpoint::Metadata =
                [("epochs_done".to_string(), state.epochs_done.to_string())]
                    .into_iter()
                    .collect();
            checkpoint::save_model(trainer.last_ema_path(), &self.net, &epoch_meta)?;
            e.swap(&mut self.net)?;
            state.ema_updates = e.updates();
        }
        trainer.save_last(&self.net, self.opt.as_ref(), state)?;
        trainer.write_history_files(&state.history)
    }
}

/// The box-mask loss of the batch the network just ran forward on: reads the mask head's
/// logits at `path`, computes `weight * BCE(logits, batch.masks)` and hands its gradient to the
/// head for the coming backward pass. Returns the unweighted loss.
fn mask_step(
    net: &mut Sequential,
    path: &str,
    batch: &fracture_data::Batch,
    weight: f32,
    pos_weight: f32,
) -> Result<f32> {
    let head = fracture_layers::find_in_mut(net, path)
        .and_then(|l| l.as_any_mut())
        .and_then(|a| a.downcast_mut::<fracture_layers::MaskHead>())
        .ok_or_else(|| Error::Config(format!("the model has no mask head at {path}")))?;
    let logits = head
        .logits()
        .ok_or_else(|| Error::Config("the mask head produced no logits".into()))?;
    let (loss, mut grad) = fracture_layers::mask_bce_with_logits(
        logits,
        &batch.masks,
        &batch.mask_weights,
        pos_weight,
    )?;
    for g in grad.as_slice_mut() {
        *g *= weight;
    }
    head.set_logit_grad(grad)?;
    Ok(loss)
}

/// The epoch's progress bar on stderr (hidden unless `verbose`).
fn progress_bar(verbose: bool, len: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !verbose {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}

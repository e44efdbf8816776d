//! Learning-rate schedules as pure functions of the step (or epoch) index.

use crate::error::{LayersError, Result};

/// A learning rate as a function of a step or epoch index `t = 0, 1, 2, ...` (the caller
/// decides which; `warmup` and `total` are counted in the same unit).
///
/// PyTorch equivalents: constant; `StepLR(step_size, gamma)`; `LinearLR` warm-up followed by
/// `CosineAnnealingLR(T_max = total - warmup, eta_min = min_lr)`.
///
/// ```
/// use fracture_layers::optim::LrSchedule;
/// let s = LrSchedule::Cosine { lr: 0.1, min_lr: 0.0, warmup: 2, total: 12 };
/// assert_eq!(s.lr_at(0), 0.05);              // warm-up: lr * (t + 1) / warmup
/// assert_eq!(s.lr_at(2), 0.1);               // cosine starts at lr
/// assert!((s.lr_at(7) - 0.05).abs() < 1e-7); // half way
/// assert_eq!(s.lr_at(12), 0.0);              // min_lr from `total` on
/// let step = LrSchedule::Step { lr: 1.0, step_size: 10, gamma: 0.5 };
/// assert_eq!((step.lr_at(9), step.lr_at(10), step.lr_at(25)), (1.0, 0.5, 0.25));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// `lr` throughout.
    Constant {
        /// The learning rate.
        lr: f32,
    },
    /// `lr * gamma^(t / step_size)` (integer division).
    Step {
        /// Initial learning rate.
        lr: f32,
        /// Steps (or epochs) between decays, `> 0`.
        step_size: usize,
        /// Decay factor.
        gamma: f32,
    },
    /// Linear warm-up `lr * (t + 1) / warmup` for `t < warmup`, then cosine decay from `lr` to
    /// `min_lr` over `total - warmup`, and `min_lr` from `t = total` on.
    Cosine {
        /// Peak learning rate.
        lr: f32,
        /// Final learning rate.
        min_lr: f32,
        /// Warm-up length (0 for none).
        warmup: usize,
        /// Total length, `> warmup`.
        total: usize,
    },
}

impl LrSchedule {
    /// The learning rate at index `t`.
    pub fn lr_at(&self, t: usize) -> f32 {
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::Step {
                lr,
                step_size,
                gamma,
            } => {
                let k = (t / step_size.max(1)).min(i32::MAX as usize) as i32;
                (lr as f64 * (gamma as f64).powi(k)) as f32
            }
            LrSchedule::Cosine {
                lr,
                min_lr,
                warmup,
                total,
            } => {
                if t < warmup {
                    return (lr as f64 * (t + 1) as f64 / warmup as f64) as f32;
                }
                let span = total.saturating_sub(warmup).max(1) as f64;
                let progress = ((t - warmup) as f64 / span).min(1.0);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                (min_lr as f64 + (lr as f64 - min_lr as f64) * cos) as f32
            }
        }
    }

    /// Checks that rates are finite and non-negative and lengths consistent.
    pub fn validate(&self) -> Result<()> {
        let bad = |r: String| Err(LayersError::config("LrSchedule", r));
        let ok_rate = |v: f32| v.is_finite() && v >= 0.0;
        match *self {
            LrSchedule::Constant { lr } if !ok_rate(lr) => {
                bad(format!("lr must be finite and >= 0, got {lr}"))
            }
            LrSchedule::Step {
                lr,
                step_size,
                gamma,
            } => {
                if !ok_rate(lr) || !ok_rate(gamma) {
                    bad(format!(
                        "lr and gamma must be finite and >= 0, got {lr}, {gamma}"
                    ))
                } else if step_size == 0 {
                    bad("step_size must be positive".to_string())
                } else {
                    Ok(())
                }
            }
            LrSchedule::Cosine {
                lr,
                min_lr,
                warmup,
                total,
            } => {
                if !ok_rate(lr) || !ok_rate(min_lr) {
                    bad(format!(
                        "lr and min_lr must be finite and >= 0, got {lr}, {min_lr}"
                    ))
                } else if total <= warmup {
                    bad(format!("total ({total}) must exceed warmup ({warmup})"))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}

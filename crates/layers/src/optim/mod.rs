//! Optimizers over a model's named parameters, learning-rate schedules and gradient clipping.
//!
//! Optimizers read [`Param::grad`](crate::Param) (accumulated by `backward`; reset it with
//! [`Layer::zero_grad`]) and keep their per-parameter state under the
//! parameter's state-dict name. [`OptimizerState`] is that state in plain form; the
//! [`checkpoint`](crate::checkpoint) module saves and loads it beside the model so that training
//! resumes exactly. The learning rate is an argument of every `step`, typically
//! [`LrSchedule::lr_at`] of the step or epoch.

mod adamw;
mod clip;
mod schedule;
mod sgd;
mod slots;

use std::collections::BTreeMap;

pub use adamw::{AdamW, AdamWConfig};
pub use clip::{clip_grad_norm, grad_norm};
pub use schedule::LrSchedule;
pub use sgd::{Sgd, SgdConfig};

use crate::error::{LayersError, Result};
use crate::layer::{Layer, Param};

/// A first-order optimizer that updates a model's parameters in place from their gradients.
///
/// ```
/// use fracture_layers::optim::{Optimizer, Sgd, SgdConfig};
/// use fracture_layers::{Layer, LinearConfig};
/// use rand::SeedableRng;
/// let mut fc = LinearConfig::new(2, 1).init(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap();
/// fc.weight_mut().grad.as_slice_mut().fill(1.0);
/// let before = fc.weight().value.clone();
/// let mut opt: Box<dyn Optimizer> = Box::new(Sgd::new(SgdConfig::default()).unwrap());
/// opt.step(&mut fc, 0.5).unwrap();
/// assert_eq!(fc.weight().value.as_slice()[0], before.as_slice()[0] - 0.5);
/// assert_eq!(opt.state().kind, "sgd");
/// ```
pub trait Optimizer: Send {
    /// One update of every parameter of `model` with learning rate `lr`. Validates everything
    /// (lr, gradient sizes, state sizes, no state for unknown parameters) before changing
    /// anything.
    fn step(&mut self, model: &mut dyn Layer, lr: f32) -> Result<()> {
        self.step_groups(model, lr, &|_| 1.0)
    }

    /// As [`Optimizer::step`], with parameter `name`'s learning rate `lr * scale(name)`:
    /// parameter groups, as PyTorch's `param_groups` (e.g. a lower rate for pretrained layers
    /// than for a new classifier). Weight decay follows each parameter's own rate. Scales must
    /// be finite and `>= 0`.
    fn step_groups(
        &mut self,
        model: &mut dyn Layer,
        lr: f32,
        scale: &dyn Fn(&str) -> f32,
    ) -> Result<()>;

    /// The optimizer's state (per-parameter buffers and step counts, and its config as JSON).
    fn state(&self) -> OptimizerState;

    /// Replaces the per-parameter state with `state` (hyper-parameters stay those of `self`).
    /// Errors if `state` comes from another kind of optimizer or names an unknown slot.
    fn load_state(&mut self, state: OptimizerState) -> Result<()>;
}

/// One parameter's optimizer state.
///
/// ```
/// use fracture_layers::optim::{Optimizer, Sgd, SgdConfig};
/// use fracture_layers::LinearConfig;
/// use rand::SeedableRng;
/// let mut fc = LinearConfig::new(2, 1).init(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap();
/// let mut opt = Sgd::new(SgdConfig { momentum: 0.9, ..Default::default() }).unwrap();
/// opt.step(&mut fc, 0.1).unwrap();
/// let s = &opt.state().params["weight"];
/// assert_eq!((s.step, s.shape.as_slice()), (1, &[1, 2][..]));
/// assert_eq!(s.slots["momentum_buffer"].len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ParamState {
    /// Number of updates applied to this parameter.
    pub step: u64,
    /// The parameter's PyTorch shape (shape of every slot).
    pub shape: Vec<usize>,
    /// Named buffers (`momentum_buffer`; `exp_avg`, `exp_avg_sq`), each of the parameter's size.
    pub slots: BTreeMap<String, Vec<f32>>,
}

/// An optimizer's whole state, keyed by parameter name; what checkpoints save.
///
/// ```
/// use fracture_layers::optim::OptimizerState;
/// let s = OptimizerState { kind: "sgd".into(), ..Default::default() };
/// assert!(s.params.is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Default)]
pub struct OptimizerState {
    /// `"sgd"` or `"adamw"`.
    pub kind: String,
    /// The optimizer's hyper-parameters as JSON (informative; not restored by `load_state`).
    pub config_json: String,
    /// Per-parameter state by state-dict name.
    pub params: BTreeMap<String, ParamState>,
}

/// Checks `lr`, every gradient's size and every existing state's shape, and that `state` holds
/// nothing for parameters the model does not have.
fn validate<T>(
    kind: &'static str,
    params: &[(String, &mut Param)],
    lr: f32,
    scale: &dyn Fn(&str) -> f32,
    state: &BTreeMap<String, T>,
    shape_of: impl Fn(&T) -> &[usize],
) -> Result<()> {
    if !(lr.is_finite() && lr >= 0.0) {
        return Err(LayersError::config(
            kind,
            format!("learning rate must be finite and >= 0, got {lr}"),
        ));
    }
    let mut known = 0;
    for (name, p) in params {
        let k = scale(name);
        if !(k.is_finite() && k >= 0.0) {
            return Err(LayersError::config(
                kind,
                format!("learning-rate scale of {name} must be finite and >= 0, got {k}"),
            ));
        }
        if p.grad.len() != p.value.len() {
            return Err(LayersError::Param {
                name: name.clone(),
                reason: format!(
                    "gradient has {} values, the parameter {}",
                    p.grad.len(),
                    p.value.len()
                ),
            });
        }
        if let Some(s) = state.get(name) {
            known += 1;
            if shape_of(s) != p.torch_shape() {
                return Err(LayersError::Param {
                    name: name.clone(),
                    reason: format!(
                        "{kind} state has shape {:?}, the parameter {:?}",
                        shape_of(s),
                        p.torch_shape()
                    ),
                });
            }
        }
    }
    if known != state.len() {
        let stale = state
            .keys()
            .find(|k| !params.iter().any(|(n, _)| n == *k))
            .cloned()
            .unwrap_or_default();
        return Err(LayersError::Param {
            name: stale,
            reason: format!(
                "{kind} has state for this parameter but the model has no such parameter"
            ),
        });
    }
    Ok(())
}

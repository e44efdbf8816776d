//! Stochastic gradient descent with momentum, Nesterov and weight decay (PyTorch semantics).

use std::collections::BTreeMap;

use crate::error::{LayersError, Result};
use crate::layer::Layer;

use super::slots::{self, SlotReader, SlotState};
use super::{validate, Optimizer, OptimizerState};

/// Hyper-parameters of [`Sgd`] (the learning rate is given to each step).
///
/// PyTorch equivalent: `torch.optim.SGD(params, lr, momentum, dampening, weight_decay,
/// nesterov)`. Default: all zero / false (plain SGD).
///
/// ```
/// let c = fracture_layers::optim::SgdConfig { momentum: 0.9, nesterov: true, ..Default::default() };
/// assert_eq!(c.weight_decay, 0.0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdConfig {
    /// Momentum factor `mu` in `[0, 1)`.
    pub momentum: f32,
    /// Dampening `tau` of the momentum in `[0, 1]`.
    pub dampening: f32,
    /// L2 penalty `wd >= 0`, added to the gradient: `g = grad + wd * p`.
    pub weight_decay: f32,
    /// Nesterov momentum (needs `momentum > 0` and `dampening == 0`).
    pub nesterov: bool,
}

#[derive(Clone, Debug)]
struct SgdParam {
    step: u64,
    shape: Vec<usize>,
    momentum_buffer: Option<Vec<f32>>,
}

impl SlotState for SgdParam {
    const NAME: &'static str = "SGD";
    const KIND: &'static str = "sgd";

    fn step(&self) -> u64 {
        self.step
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn slots(&self) -> Vec<(&'static str, &[f32])> {
        self.momentum_buffer
            .iter()
            .map(|b| ("momentum_buffer", b.as_slice()))
            .collect()
    }

    fn read(step: u64, shape: Vec<usize>, slots: &mut SlotReader) -> Result<Self> {
        Ok(SgdParam {
            step,
            shape,
            momentum_buffer: slots.optional("momentum_buffer")?,
        })
    }
}

/// SGD: for each parameter `p` with gradient `grad`,
/// `g = grad + wd*p`; with momentum, `b = g` on the first step, then `b = mu*b + (1-tau)*g`, and
/// `g = g + mu*b` (Nesterov) or `g = b`; finally `p = p - lr*g`. Arithmetic per element in f64.
///
/// ```
/// use fracture_layers::optim::{Optimizer, Sgd, SgdConfig};
/// use fracture_layers::{Layer, LinearConfig};
/// use rand::SeedableRng;
/// let mut fc = LinearConfig::new(1, 1).init(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap();
/// fc.weight_mut().value.as_slice_mut()[0] = 1.0;
/// let mut opt = Sgd::new(SgdConfig { momentum: 0.9, ..Default::default() }).unwrap();
/// for _ in 0..2 {
///     fc.zero_grad();
///     fc.weight_mut().grad.as_slice_mut()[0] = 1.0;
///     opt.step(&mut fc, 0.1).unwrap();
/// }
/// // 1 - 0.1 * 1 - 0.1 * (0.9 + 1)
/// assert!((fc.weight().value.as_slice()[0] - 0.71).abs() < 1e-6);
/// ```
#[derive(Clone, Debug)]
pub struct Sgd {
    config: SgdConfig,
    state: BTreeMap<String, SgdParam>,
}

impl Sgd {
    /// An optimizer with `config`, after checking it.
    pub fn new(config: SgdConfig) -> Result<Self> {
        let c = &config;
        let bad = |r: String| Err(LayersError::config("SGD", r));
        if !(0.0..1.0).contains(&c.momentum) {
            return bad(format!("momentum must be in [0, 1), got {}", c.momentum));
        }
        if !(0.0..=1.0).contains(&c.dampening) {
            return bad(format!("dampening must be in [0, 1], got {}", c.dampening));
        }
        if !(c.weight_decay.is_finite() && c.weight_decay >= 0.0) {
            return bad(format!(
                "weight_decay must be finite and >= 0, got {}",
                c.weight_decay
            ));
        }
        if c.nesterov && (c.momentum <= 0.0 || c.dampening != 0.0) {
            return bad("Nesterov momentum requires momentum > 0 and zero dampening".to_string());
        }
        Ok(Sgd {
            config,
            state: BTreeMap::new(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

impl Optimizer for Sgd {
    fn step_groups(
        &mut self,
        model: &mut dyn Layer,
        lr: f32,
        scale: &dyn Fn(&str) -> f32,
    ) -> Result<()> {
        let mut params = model.named_params_mut();
        validate("SGD", &params, lr, scale, &self.state, |s| &s.shape)?;
        let base_lr = lr as f64;
        let mu = self.config.momentum as f64;
        let damp = 1.0 - self.config.dampening as f64;
        let wd = self.config.weight_decay as f64;
        let nesterov = self.config.nesterov;
        for (name, p) in params.iter_mut() {
            let lr = base_lr * scale(name) as f64;
            let st = self.state.entry(name.clone()).or_insert_with(|| SgdParam {
                step: 0,
                shape: p.torch_shape().to_vec(),
                momentum_buffer: None,
            });
            let first = st.momentum_buffer.is_none();
            if mu != 0.0 && first {
                st.momentum_buffer = Some(vec![0.0; p.len()]);
            }
            let (value, grad) = (p.value.as_slice_mut(), p.grad.as_slice());
            match &mut st.momentum_buffer {
                Some(buf) => {
                    for ((v, &g), b) in value.iter_mut().zip(grad).zip(buf.iter_mut()) {
                        let g = g as f64 + wd * *v as f64;
                        let nb = if first { g } else { mu * *b as f64 + damp * g };
                        *b = nb as f32;
                        let d = if nesterov { g + mu * nb } else { nb };
                        *v = (*v as f64 - lr * d) as f32;
                    }
                }
                None => {
                    for (v, &g) in value.iter_mut().zip(grad) {
                        let g = g as f64 + wd * *v as f64;
                        *v = (*v as f64 - lr * g) as f32;
                    }
                }
            }
            st.step += 1;
        }
        Ok(())
    }

    fn state(&self) -> OptimizerState {
        slots::export(
            serde_json::to_string(&self.config).unwrap_or_default(),
            &self.state,
        )
    }

    fn load_state(&mut self, state: OptimizerState) -> Result<()> {
        self.state = slots::import(state)?;
        Ok(())
    }
}

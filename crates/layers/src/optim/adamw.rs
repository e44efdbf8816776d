//! Adam with decoupled weight decay (PyTorch `AdamW` semantics).

use std::collections::BTreeMap;

use crate::error::{LayersError, Result};
use crate::layer::Layer;

use super::slots::{self, SlotReader, SlotState};
use super::{validate, Optimizer, OptimizerState};

/// Hyper-parameters of [`AdamW`] (the learning rate is given to each step).
///
/// PyTorch equivalent: `torch.optim.AdamW(params, lr, betas=(beta1, beta2), eps,
/// weight_decay)` (amsgrad off). Default: PyTorch's `(0.9, 0.999)`, `1e-8`, `0.01`.
///
/// ```
/// let c = fracture_layers::optim::AdamWConfig::default();
/// assert_eq!((c.beta1, c.beta2, c.eps, c.weight_decay), (0.9, 0.999, 1e-8, 0.01));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// Decay of the first moment, in `[0, 1)`.
    pub beta1: f32,
    /// Decay of the second moment, in `[0, 1)`.
    pub beta2: f32,
    /// Added to the denominator, `> 0`.
    pub eps: f32,
    /// Decoupled weight decay `wd >= 0`: `p = p * (1 - lr*wd)` before the Adam update.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

#[derive(Clone, Debug)]
struct AdamParam {
    step: u64,
    shape: Vec<usize>,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

impl SlotState for AdamParam {
    const NAME: &'static str = "AdamW";
    const KIND: &'static str = "adamw";

    fn step(&self) -> u64 {
        self.step
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn slots(&self) -> Vec<(&'static str, &[f32])> {
        vec![("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)]
    }

    fn read(step: u64, shape: Vec<usize>, slots: &mut SlotReader) -> Result<Self> {
        Ok(AdamParam {
            step,
            shape,
            exp_avg: slots.required("exp_avg")?,
            exp_avg_sq: slots.required("exp_avg_sq")?,
        })
    }
}

/// AdamW: at step `t` of a parameter, `p = p*(1 - lr*wd)`, `m = b1*m + (1-b1)*g`,
/// `v = b2*v + (1-b2)*g^2`, `p = p - lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`.
/// Arithmetic per element in f64; state kept in f32 (as PyTorch).
///
/// ```
/// use fracture_layers::optim::{AdamW, AdamWConfig, Optimizer};
/// use fracture_layers::{Layer, LinearConfig};
/// use rand::SeedableRng;
/// let mut fc = LinearConfig::new(1, 1).init(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap();
/// fc.weight_mut().value.as_slice_mut()[0] = 1.0;
/// fc.weight_mut().grad.as_slice_mut()[0] = 3.0;
/// let mut opt = AdamW::new(AdamWConfig { weight_decay: 0.0, ..Default::default() }).unwrap();
/// opt.step(&mut fc, 0.1).unwrap();
/// // The first Adam step moves each weight by about lr * sign(grad).
/// assert!((fc.weight().value.as_slice()[0] - 0.9).abs() < 1e-6);
/// ```
#[derive(Clone, Debug)]
pub struct AdamW {
    config: AdamWConfig,
    state: BTreeMap<String, AdamParam>,
}

impl AdamW {
    /// An optimizer with `config`, after checking it.
    pub fn new(config: AdamWConfig) -> Result<Self> {
        let c = &config;
        let bad = |r: String| Err(LayersError::config("AdamW", r));
        if !(0.0..1.0).contains(&c.beta1) || !(0.0..1.0).contains(&c.beta2) {
            return bad(format!(
                "betas must be in [0, 1), got ({}, {})",
                c.beta1, c.beta2
            ));
        }
        if !(c.eps.is_finite() && c.eps > 0.0) {
            return bad(format!("eps must be finite and > 0, got {}", c.eps));
        }
        if !(c.weight_decay.is_finite() && c.weight_decay >= 0.0) {
            return bad(format!(
                "weight_decay must be finite and >= 0, got {}",
                c.weight_decay
            ));
        }
        Ok(AdamW {
            config,
            state: BTreeMap::new(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }
}

impl Optimizer for AdamW {
    fn step_groups(
        &mut self,
        model: &mut dyn Layer,
        lr: f32,
        scale: &dyn Fn(&str) -> f32,
    ) -> Result<()> {
        let mut params = model.named_params_mut();
        validate("AdamW", &params, lr, scale, &self.state, |s| &s.shape)?;
        let base_lr = lr as f64;
        let (b1, b2) = (self.config.beta1 as f64, self.config.beta2 as f64);
        let eps = self.config.eps as f64;
        for (name, p) in params.iter_mut() {
            let lr = base_lr * scale(name) as f64;
            let decay = 1.0 - lr * self.config.weight_decay as f64;
            let st = self.state.entry(name.clone()).or_insert_with(|| AdamParam {
                step: 0,
                shape: p.torch_shape().to_vec(),
                exp_avg: vec![0.0; p.len()],
                exp_avg_sq: vec![0.0; p.len()],
            });
            st.step += 1;
            let t = st.step.min(i32::MAX as u64) as i32;
            let step_size = lr / (1.0 - b1.powi(t));
            let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
            let (value, grad) = (p.value.as_slice_mut(), p.grad.as_slice());
            let moments = st.exp_avg.iter_mut().zip(st.exp_avg_sq.iter_mut());
            for ((v, &g), (m, s)) in value.iter_mut().zip(grad).zip(moments) {
                let g = g as f64;
                let nm = b1 * *m as f64 + (1.0 - b1) * g;
                let ns = b2 * *s as f64 + (1.0 - b2) * g * g;
                *m = nm as f32;
                *s = ns as f32;
                let pv = *v as f64 * decay;
                *v = (pv - step_size * nm / (ns.sqrt() / bc2_sqrt + eps)) as f32;
            }
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

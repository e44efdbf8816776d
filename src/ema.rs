//! An exponential moving average of a network's weights (Polyak averaging), the "model EMA" of
//! timm's `ModelEmaV2` or `torch.optim.swa_utils.AveragedModel` with an EMA `avg_fn`.
//!
//! After every optimizer step the shadow copy moves a little towards the live weights:
//! `shadow = d * shadow + (1 - d) * live`, with `d = min(decay, (1 + t) / (10 + t))` at update
//! `t` so that the first updates are not dominated by the random initialisation. Batch-norm
//! running statistics are averaged the same way. The shadow weights fluctuate less from step to
//! step than the live ones, which makes choosing the best epoch on a small validation split less
//! of a lottery; the trainer evaluates and saves them ([`crate::TrainConfig::ema_decay`]).

use fracture_layers::{Layer, Sequential};

use crate::error::{Error, Result};

/// The averaged copy of every parameter and buffer of a network, in visiting order.
///
/// ```
/// use fracture_nn::{ema::WeightEma, ModelConfig};
/// use fracture_nn::layers::Layer;
/// let mut net = ModelConfig::phantom(16).build(1)?;
/// let mut ema = WeightEma::new(&net, 0.9)?;
/// let before = net.named_params()[0].1.value.as_slice()[0];
/// net.named_params_mut()[0].1.value.as_slice_mut()[0] = before + 1.0;
/// ema.update(&net)?; // first update: d = min(0.9, 1/10) = 0.1
/// ema.swap(&mut net)?; // the network now holds the averages
/// let avg = net.named_params()[0].1.value.as_slice()[0];
/// assert!((avg - (before + 0.9)).abs() < 1e-5);
/// ema.swap(&mut net)?; // and the live weights again
/// assert_eq!(net.named_params()[0].1.value.as_slice()[0], before + 1.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct WeightEma {
    decay: f32,
    updates: u64,
    shadow: Vec<Vec<f32>>,
}

impl WeightEma {
    /// Starts the average at the network's current weights. `decay` must lie in `[0, 1)`.
    pub fn new(net: &Sequential, decay: f32) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            return Err(Error::Config(format!(
                "the weight EMA decay must lie in [0, 1), got {decay}"
            )));
        }
        Ok(WeightEma {
            decay,
            updates: 0,
            shadow: values(net),
        })
    }

    /// Continues an average saved earlier: `averaged` holds the averages (e.g. a network loaded
    /// from the run's `last.ema.safetensors`), `updates` how many steps went into them.
    pub fn resume(averaged: &Sequential, decay: f32, updates: u64) -> Result<Self> {
        let mut ema = WeightEma::new(averaged, decay)?;
        ema.updates = updates;
        Ok(ema)
    }

    /// Updates applied so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The decay used by the next update.
    pub fn current_decay(&self) -> f32 {
        let t = self.updates as f32;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Errors (naming the first tensor that differs) unless `net` has the averaged layout.
    fn check(&self, net: &Sequential) -> Result<()> {
        let have = lengths(net);
        let mismatch = have
            .iter()
            .zip(&self.shadow)
            .find(|((_, n), s)| *n != s.len())
            .map(|((name, _), _)| name.clone())
            .or_else(|| (have.len() != self.shadow.len()).then(|| "the tensor count".into()));
        match mismatch {
            Some(name) => Err(Error::Config(format!(
                "the weight EMA does not match the network at {name}"
            ))),
            None => Ok(()),
        }
    }

    /// Moves the averages towards `net`'s weights and buffers.
    pub fn update(&mut self, net: &Sequential) -> Result<()> {
        self.check(net)?;
        let d = self.current_decay();
        let mut slots = self.shadow.iter_mut();
        let mut step = |live: &[f32]| {
            if let Some(s) = slots.next() {
                for (a, &b) in s.iter_mut().zip(live) {
                    *a = d * *a + (1.0 - d) * b;
                }
            }
        };
        net.visit_params_ref("", &mut |_, p| step(p.value.as_slice()));
        net.visit_buffers_ref("", &mut |_, b| step(b.value.as_slice()));
        self.updates += 1;
        Ok(())
    }

    /// Exchanges the averages with the network's weights and buffers; calling it twice restores
    /// the network.
    pub fn swap(&mut self, net: &mut Sequential) -> Result<()> {
        self.check(net)?;
        let mut slots = self.shadow.iter_mut();
        let mut exchange = |live: &mut [f32]| {
            if let Some(s) = slots.next() {
                s.swap_with_slice(live);
            }
        };
        net.visit_params("", &mut |_, p| exchange(p.value.as_slice_mut()));
        net.visit_buffers("", &mut |_, b| exchange(b.value.as_slice_mut()));
        Ok(())
    }
}

fn lengths(net: &Sequential) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    net.visit_params_ref("", &mut |n, p| out.push((n.to_string(), p.value.len())));
    net.visit_buffers_ref("", &mut |n, b| out.push((n.to_string(), b.value.len())));
    out
}

fn values(net: &Sequential) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    net.visit_params_ref("", &mut |_, p| out.push(p.value.as_slice().to_vec()));
    net.visit_buffers_ref("", &mut |_, b| out.push(b.value.as_slice().to_vec()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelConfig;

    fn first(net: &Sequential) -> f32 {
        net.named_params()[0].1.value.as_slice()[0]
    }

    #[test]
    fn average_follows_the_formula_over_several_updates() {
        let mut net = ModelConfig::phantom(16).build(2).unwrap();
        let mut ema = WeightEma::new(&net, 0.5).unwrap();
        let mut want = first(&net);
        for t in 0..6u64 {
            let live = want + 1.0 + t as f32;
            net.named_params_mut()[0].1.value.as_slice_mut()[0] = live;
            let d = 0.5f32.min((1.0 + t as f32) / (10.0 + t as f32));
            want = d * want + (1.0 - d) * live;
            ema.update(&net).unwrap();
        }
        assert_eq!(ema.updates(), 6);
        ema.swap(&mut net).unwrap();
        assert!((first(&net) - want).abs() < 1e-5);
    }

    #[test]
    fn mismatched_network_is_an_error() {
        let small = ModelConfig::phantom(16).build(2).unwrap();
        let mut other = ModelConfig::phantom(16)
            .with_arch(crate::model::PlainNet::new(&[8, 8, 8, 8]))
            .build(2)
            .unwrap();
        let mut ema = WeightEma::new(&small, 0.9).unwrap();
        assert!(ema.update(&other).is_err());
        assert!(ema.swap(&mut other).is_err());
        assert!(WeightEma::new(&small, 1.0).is_err());
    }
}

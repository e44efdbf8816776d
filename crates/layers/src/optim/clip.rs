//! Gradient clipping by the global L2 norm.

use crate::error::{LayersError, Result};
use crate::layer::Layer;

/// The L2 norm of all parameter gradients together (summed in f64, in walk order).
///
/// ```
/// use fracture_layers::{Layer, LinearConfig};
/// use rand::SeedableRng;
/// let mut fc = LinearConfig::new(1, 1).init(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap();
/// fc.weight_mut().grad.as_slice_mut()[0] = 3.0;
/// fc.bias_mut().unwrap().grad.as_slice_mut()[0] = 4.0;
/// assert_eq!(fracture_layers::optim::grad_norm(&fc), 5.0);
/// ```
pub fn grad_norm(model: &dyn Layer) -> f32 {
    let mut sq = 0.0f64;
    model.visit_params_ref("", &mut |_, p| {
        sq += p
            .grad
            .as_slice()
            .iter()
            .map(|&g| g as f64 * g as f64)
            .sum::<f64>();
    });
    sq.sqrt() as f32
}

/// Scales all gradients by `max_norm / (norm + 1e-6)` when their global norm exceeds
/// `max_norm`; returns the norm before clipping. A non-finite norm is returned unchanged and the
/// gradients are left as they are (check it to skip the step).
///
/// PyTorch equivalent: `torch.nn.utils.clip_grad_norm_(params, max_norm)`.
///
/// ```
/// use fracture_layers::{Layer, LinearConfig};
/// use rand::SeedableRng;
/// let mut fc = LinearConfig::new(1, 1).init(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap();
/// fc.weight_mut().grad.as_slice_mut()[0] = 3.0;
/// fc.bias_mut().unwrap().grad.as_slice_mut()[0] = 4.0;
/// let norm = fracture_layers::optim::clip_grad_norm(&mut fc, 1.0).unwrap();
/// assert_eq!(norm, 5.0);
/// assert!((fracture_layers::optim::grad_norm(&fc) - 1.0).abs() < 1e-5);
/// ```
pub fn clip_grad_norm(model: &mut dyn Layer, max_norm: f32) -> Result<f32> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(LayersError::config(
            "clip_grad_norm",
            format!("max_norm must be finite and > 0, got {max_norm}"),
        ));
    }
    let norm = grad_norm(model);
    if norm.is_finite() && norm > max_norm {
        let scale = (max_norm as f64 / (norm as f64 + 1e-6)) as f32;
        model.visit_params("", &mut |_, p| {
            for g in p.grad.as_slice_mut() {
                *g *= scale;
            }
        });
    }
    Ok(norm)
}

//! Seeded weight initialisation.
//!
//! Layers draw their weights from a caller-owned [`ChaCha8Rng`], so one seed fixes a whole
//! network. Conv and linear weights use Kaiming/He normal initialisation with `fan_in` and the
//! ReLU gain (PyTorch `nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")`):
//! `w ~ N(0, 2 / fan_in)`; biases start at zero.

use fracture_tensor::Tensor4;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// A tensor of `shape` with entries drawn from `N(0, 2 / fan_in)`, in row-major order.
///
/// ```
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
/// let w = fracture_layers::init::kaiming_normal([64, 16, 3, 3], 16 * 9, &mut rng);
/// let var = w.as_slice().iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
/// assert!((var - 2.0 / 144.0).abs() < 0.002);
/// ```
pub fn kaiming_normal(shape: [usize; 4], fan_in: usize, rng: &mut ChaCha8Rng) -> Tensor4 {
    let std = (2.0 / fan_in.max(1) as f64).sqrt();
    let mut t = Tensor4::zeros(shape);
    for v in t.as_slice_mut() {
        let z: f64 = rng.sample(StandardNormal);
        *v = (z * std) as f32;
    }
    t
}

//! Inverted dropout with its own seeded random stream.

use fracture_tensor::Tensor4;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{LayersError, Result};
use crate::layer::{Layer, Mode, Param, RngStream};

/// Configuration of a [`Dropout`] layer.
///
/// PyTorch equivalent: `nn.Dropout(p)`. Default `p = 0.5`.
///
/// ```
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let drop = fracture_layers::DropoutConfig::new(0.3).init(&mut rng).unwrap();
/// assert_eq!(drop.config().p, 0.3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DropoutConfig {
    /// Probability of zeroing each element, in `[0, 1]` (default 0.5).
    pub p: f32,
}

impl Default for DropoutConfig {
    fn default() -> Self {
        DropoutConfig { p: 0.5 }
    }
}

impl DropoutConfig {
    /// Dropout with probability `p`.
    pub fn new(p: f32) -> Self {
        DropoutConfig { p }
    }

    /// Builds the layer; its mask seed is the next `u64` of `rng`, so one network seed fixes it.
    pub fn init(&self, rng: &mut ChaCha8Rng) -> Result<Dropout> {
        if !(0.0..=1.0).contains(&self.p) {
            return Err(LayersError::config(
                "Dropout",
                format!("p must be in [0, 1], got {}", self.p),
            ));
        }
        Ok(Dropout {
            config: *self,
            stream: RngStream {
                seed: rng.next_u64(),
                counter: 0,
            },
            cache: None,
        })
    }
}

/// Inverted dropout, any shape: in training each element is zeroed with probability `p` and the
/// survivors are scaled by `1 / (1 - p)`; in evaluation it is the identity.
///
/// PyTorch equivalent: `nn.Dropout`. No parameters. The `k`-th training forward pass draws its
/// mask from ChaCha8 seeded with the layer's seed on stream `k`, so masks are reproducible
/// whatever the thread count; the counter `k` is saved in checkpoints (see
/// [`Layer::visit_rng_streams`]) so that a resumed run draws the same masks.
///
/// ```
/// use fracture_layers::{DropoutConfig, Layer, Mode};
/// use fracture_tensor::Tensor4;
/// use rand::SeedableRng;
/// let mut drop = DropoutConfig::new(0.5).init(&mut rand_chacha::ChaCha8Rng::seed_from_u64(3)).unwrap();
/// let x = Tensor4::from_vec([1, 1000, 1, 1], vec![1.0; 1000]).unwrap();
/// let y = drop.forward(&x, Mode::Train).unwrap();
/// assert!(y.as_slice().iter().all(|&v| v == 0.0 || v == 2.0));
/// assert_eq!(drop.forward(&x, Mode::Eval).unwrap(), x);
/// ```
#[derive(Debug)]
pub struct Dropout {
    config: DropoutConfig,
    stream: RngStream,
    /// `Some(mask)` after a training forward, `Some(empty)` after an `EvalWithGrad` one.
    cache: Option<Vec<f32>>,
}

impl Dropout {
    /// The config it was built from.
    pub fn config(&self) -> &DropoutConfig {
        &self.config
    }
    /// Its random stream: seed, and number of training forward passes so far.
    pub fn rng_stream(&self) -> RngStream {
        self.stream
    }
}

impl Layer for Dropout {
    fn kind(&self) -> &'static str {
        "Dropout"
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        if !mode.is_training() {
            self.cache = if mode.caches() {
                Some(Vec::new())
            } else {
                None
            };
            return Ok(x.clone());
        }
        let p = self.config.p;
        let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
        let mut rng = ChaCha8Rng::seed_from_u64(self.stream.seed);
        rng.set_stream(self.stream.counter);
        self.stream.counter += 1;
        let mask: Vec<f32> = (0..x.len())
            .map(|_| if rng.gen::<f32>() < p { 0.0 } else { scale })
            .collect();
        let mut y = x.clone();
        for (v, m) in y.as_slice_mut().iter_mut().zip(&mask) {
            *v *= m;
        }
        self.cache = Some(mask);
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        let mask = self
            .cache
            .take()
            .ok_or(LayersError::NoForwardCache { layer: "Dropout" })?;
        if mask.is_empty() {
            return Ok(dy.clone());
        }
        if mask.len() != dy.len() {
            return Err(LayersError::shape(
                "Dropout",
                format!(
                    "upstream gradient with {} elements, as the input",
                    mask.len()
                ),
                &dy.shape(),
            ));
        }
        let mut dx = dy.clone();
        for (v, m) in dx.as_slice_mut().iter_mut().zip(&mask) {
            *v *= m;
        }
        Ok(dx)
    }

    fn visit_params<'a>(&'a mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &'a mut Param)) {}

    fn visit_params_ref<'a>(&'a self, _prefix: &str, _f: &mut dyn FnMut(&str, &'a Param)) {}

    fn visit_rng_streams(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut RngStream)) {
        f(prefix, &mut self.stream);
    }

    fn visit_rng_streams_ref(&self, prefix: &str, f: &mut dyn FnMut(&str, &RngStream)) {
        f(prefix, &self.stream);
    }

    fn clear_cache(&mut self) {
        self.cache = None;
    }
}

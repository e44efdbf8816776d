//! Fully connected layer `y = x W^T + b`.

use fracture_tensor::{sgemm, Tensor4};
use rand_chacha::ChaCha8Rng;

use crate::error::{LayersError, Result};
use crate::init::kaiming_normal;
use crate::layer::{join_name, Layer, Mode, Param};

/// Configuration of a [`Linear`] layer.
///
/// PyTorch equivalent: `nn.Linear(in_features, out_features, bias=bias)` with weights from
/// `kaiming_normal_(mode="fan_in")` and a zero bias.
///
/// ```
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let fc = fracture_layers::LinearConfig::new(256, 2).init(&mut rng).unwrap();
/// assert_eq!(fc.weight().torch_shape(), &[2, 256]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinearConfig {
    /// Input features `F_in` (default 1).
    pub in_features: usize,
    /// Output features `F_out` (default 1).
    pub out_features: usize,
    /// Whether to add a bias (default `true`).
    pub bias: bool,
}

impl Default for LinearConfig {
    fn default() -> Self {
        LinearConfig {
            in_features: 1,
            out_features: 1,
            bias: true,
        }
    }
}

impl LinearConfig {
    /// `in_features -> out_features` with a bias.
    pub fn new(in_features: usize, out_features: usize) -> Self {
        LinearConfig {
            in_features,
            out_features,
            bias: true,
        }
    }

    /// The same config with or without a bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Builds the layer with Kaiming-normal weights (fan_in) and a zero bias.
    pub fn init(&self, rng: &mut ChaCha8Rng) -> Result<Linear> {
        if self.in_features == 0 || self.out_features == 0 {
            return Err(LayersError::config(
                "Linear",
                format!(
                    "in_features and out_features must be positive, got {} -> {}",
                    self.in_features, self.out_features
                ),
            ));
        }
        let (fi, fo) = (self.in_features, self.out_features);
        let weight = Param::new(kaiming_normal([fo, fi, 1, 1], fi, rng), &[fo, fi])?;
        let bias = if self.bias {
            Some(Param::new(Tensor4::zeros([fo, 1, 1, 1]), &[fo])?)
        } else {
            None
        };
        Ok(Linear {
            config: *self,
            weight,
            bias,
            cache: None,
        })
    }
}

/// Fully connected layer: `[N, F_in, 1, 1] -> [N, F_out, 1, 1]`, `y = x W^T + b`.
///
/// PyTorch equivalent: `nn.Linear`. Weight stored as `[F_out, F_in, 1, 1]` (PyTorch shape
/// `[F_out, F_in]`, name `weight`), bias as `[F_out, 1, 1, 1]` (`[F_out]`, name `bias`).
/// Feed it the output of [`crate::Flatten`] or [`crate::GlobalAvgPool`].
///
/// ```
/// use fracture_layers::{Layer, LinearConfig, Mode};
/// use fracture_tensor::Tensor4;
/// use rand::SeedableRng;
/// let mut fc = LinearConfig::new(2, 1).init(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap();
/// fc.weight_mut().value = Tensor4::from_vec([1, 2, 1, 1], vec![1.0, -1.0]).unwrap();
/// let y = fc.forward(&Tensor4::from_vec([1, 2, 1, 1], vec![3.0, 1.0]).unwrap(), Mode::Eval).unwrap();
/// assert_eq!(y.as_slice(), &[2.0]);
/// ```
#[derive(Debug)]
pub struct Linear {
    config: LinearConfig,
    weight: Param,
    bias: Option<Param>,
    cache: Option<Tensor4>,
}

impl Linear {
    /// The config it was built from.
    pub fn config(&self) -> &LinearConfig {
        &self.config
    }
    /// Weight `[F_out, F_in, 1, 1]`.
    pub fn weight(&self) -> &Param {
        &self.weight
    }
    /// Mutable weight.
    pub fn weight_mut(&mut self) -> &mut Param {
        &mut self.weight
    }
    /// Bias `[F_out, 1, 1, 1]`, if any.
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }
    /// Mutable bias, if any.
    pub fn bias_mut(&mut self) -> Option<&mut Param> {
        self.bias.as_mut()
    }

    fn check_input(&self, x: &Tensor4) -> Result<()> {
        let s = x.shape();
        if s[1] != self.config.in_features || s[2] != 1 || s[3] != 1 || s[0] == 0 {
            return Err(LayersError::shape(
                "Linear",
                format!(
                    "input [N>0, {}, 1, 1] (flatten or pool first)",
                    self.config.in_features
                ),
                &s,
            ));
        }
        Ok(())
    }
}

impl Layer for Linear {
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn kind(&self) -> &'static str {
        "Linear"
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        self.check_input(x)?;
        let n = x.shape()[0];
        let (fi, fo) = (self.config.in_features, self.config.out_features);
        let mut y = Tensor4::zeros([n, fo, 1, 1]);
        if let Some(b) = &self.bias {
            for row in y.as_slice_mut().chunks_exact_mut(fo) {
                row.copy_from_slice(b.value.as_slice());
            }
        }
        // y[N, fo] = x[N, fi] * W^T, W^T[k, j] = W[j, k]
        sgemm(
            n,
            fi,
            fo,
            1.0,
            x.as_slice(),
            fi as isize,
            1,
            self.weight.value.as_slice(),
            1,
            fi as isize,
            1.0,
            y.as_slice_mut(),
            fo as isize,
            1,
        )?;
        self.cache = if mode.caches() { Some(x.clone()) } else { None };
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        let x = self
            .cache
            .take()
            .ok_or(LayersError::NoForwardCache { layer: "Linear" })?;
        let n = x.shape()[0];
        let (fi, fo) = (self.config.in_features, self.config.out_features);
        if dy.shape() != [n, fo, 1, 1] {
            return Err(LayersError::shape(
                "Linear",
                format!("upstream gradient [{n}, {fo}, 1, 1]"),
                &dy.shape(),
            ));
        }
        // dW[fo, fi] += dy^T[fo, N] * x[N, fi]
        sgemm(
            fo,
            n,
            fi,
            1.0,
            dy.as_slice(),
            1,
            fo as isize,
            x.as_slice(),
            fi as isize,
            1,
            1.0,
            self.weight.grad.as_slice_mut(),
            fi as isize,
            1,
        )?;
        if let Some(b) = &mut self.bias {
            let g = b.grad.as_slice_mut();
            for row in dy.as_slice().chunks_exact(fo) {
                for (a, v) in g.iter_mut().zip(row) {
                    *a += *v;
                }
            }
        }
        // dx[N, fi] = dy[N, fo] * W[fo, fi]
        let mut dx = Tensor4::zeros([n, fi, 1, 1]);
        sgemm(
            n,
            fo,
            fi,
            1.0,
            dy.as_slice(),
            fo as isize,
            1,
            self.weight.value.as_slice(),
            fi as isize,
            1,
            0.0,
            dx.as_slice_mut(),
            fi as isize,
            1,
        )?;
        Ok(dx)
    }

    fn visit_params<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, &'a mut Param)) {
        f(&join_name(prefix, "weight"), &mut self.weight);
        if let Some(b) = &mut self.bias {
            f(&join_name(prefix, "bias"), b);
        }
    }

    fn visit_params_ref<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a Param)) {
        f(&join_name(prefix, "weight"), &self.weight);
        if let Some(b) = &self.bias {
            f(&join_name(prefix, "bias"), b);
        }
    }

    fn clear_cache(&mut self) {
        self.cache = None;
    }
}

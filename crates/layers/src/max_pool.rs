//! Max pooling over spatial windows.

use fracture_tensor::{max_pool2d_backward, max_pool2d_forward_into, PoolParams, Tensor4};

use crate::error::{LayersError, Result};
use crate::layer::{Layer, Mode, Param};

/// Configuration of a [`MaxPool2d`] layer.
///
/// PyTorch equivalent: `nn.MaxPool2d(kernel_size, stride, padding)`; padding counts as `-inf`.
/// Default: 2x2 window, stride 2, no padding.
///
/// ```
/// let pool = fracture_layers::MaxPool2dConfig::new(3).with_stride(2).with_padding(1).init().unwrap();
/// assert_eq!(pool.config().kernel_size, [3, 3]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MaxPool2dConfig {
    /// Window `[KH, KW]` (default `[2, 2]`).
    pub kernel_size: [usize; 2],
    /// Step `[SH, SW]` (default `[2, 2]`).
    pub stride: [usize; 2],
    /// Implicit `-inf` border `[PH, PW]` (default `[0, 0]`); at most half the window.
    pub padding: [usize; 2],
}

impl Default for MaxPool2dConfig {
    fn default() -> Self {
        MaxPool2dConfig::new(2)
    }
}

impl MaxPool2dConfig {
    /// A `k x k` window with stride `k` (PyTorch's default stride) and no padding.
    pub fn new(k: usize) -> Self {
        MaxPool2dConfig {
            kernel_size: [k, k],
            stride: [k, k],
            padding: [0, 0],
        }
    }
    /// Same config with stride `s` in both directions.
    pub fn with_stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    /// Same config with padding `p` on every side.
    pub fn with_padding(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
    /// Builds the layer after checking window, stride and padding.
    pub fn init(&self) -> Result<MaxPool2d> {
        let [kh, kw] = self.kernel_size;
        if kh == 0 || kw == 0 || self.stride.contains(&0) {
            return Err(LayersError::config(
                "MaxPool2d",
                format!("kernel and stride must be positive, got {self:?}"),
            ));
        }
        if 2 * self.padding[0] > kh || 2 * self.padding[1] > kw {
            return Err(LayersError::config(
                "MaxPool2d",
                format!("padding must be at most half the window (as PyTorch), got {self:?}"),
            ));
        }
        Ok(MaxPool2d {
            config: *self,
            cache: None,
            spare_argmax: Vec::new(),
        })
    }
    fn params(&self) -> PoolParams {
        PoolParams {
            kernel: self.kernel_size,
            stride: self.stride,
            padding: self.padding,
        }
    }
}

/// Max pooling: `[N, C, H, W] -> [N, C, (H + 2P - K) / S + 1, (W + 2P - K) / S + 1]`.
///
/// PyTorch equivalent: `nn.MaxPool2d`. No parameters; the gradient goes to the first maximum
/// of each window.
///
/// ```
/// use fracture_layers::{Layer, MaxPool2dConfig, Mode};
/// use fracture_tensor::Tensor4;
/// let mut pool = MaxPool2dConfig::new(2).init().unwrap();
/// let x = Tensor4::from_vec([1, 1, 2, 2], vec![1.0, 4.0, 3.0, 2.0]).unwrap();
/// assert_eq!(pool.forward(&x, Mode::Eval).unwrap().as_slice(), &[4.0]);
/// ```
#[derive(Debug)]
pub struct MaxPool2d {
    config: MaxPool2dConfig,
    cache: Option<(Vec<u32>, [usize; 4])>,
    /// The argmax allocation of the last backward, reused by the next forward.
    spare_argmax: Vec<u32>,
}

impl MaxPool2d {
    /// The config it was built from.
    pub fn config(&self) -> &MaxPool2dConfig {
        &self.config
    }
}

impl Layer for MaxPool2d {
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn kind(&self) -> &'static str {
        "MaxPool2d"
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        // The argmax allocation of the last backward is reused (its old values are ignored).
        let mut argmax = std::mem::take(&mut self.spare_argmax);
        let mut y = Tensor4::zeros([0, 0, 0, 0]);
        max_pool2d_forward_into(x, self.config.params(), &mut y, &mut argmax)?;
        self.cache = if mode.caches() {
            Some((argmax, x.shape()))
        } else {
            self.spare_argmax = argmax;
            None
        };
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        let (argmax, shape) = self
            .cache
            .take()
            .ok_or(LayersError::NoForwardCache { layer: "MaxPool2d" })?;
        let dx = max_pool2d_backward(dy, &argmax, shape)?;
        self.spare_argmax = argmax;
        Ok(dx)
    }

    fn visit_params<'a>(&'a mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &'a mut Param)) {}

    fn visit_params_ref<'a>(&'a self, _prefix: &str, _f: &mut dyn FnMut(&str, &'a Param)) {}

    fn clear_cache(&mut self) {
        self.cache = None;
    }
}

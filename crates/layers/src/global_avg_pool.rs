//! Global average pooling: the mean of each channel plane.

use fracture_tensor::{global_avg_pool_backward, global_avg_pool_forward, Tensor4};

use crate::error::{LayersError, Result};
use crate::layer::{Layer, Mode, Param};

/// Mean over H and W: `[N, C, H, W] -> [N, C, 1, 1]`.
///
/// PyTorch equivalent: `nn.AdaptiveAvgPool2d(1)` followed by `flatten(1)` (or
/// `x.mean(dim=(2, 3))`). No parameters.
///
/// ```
/// use fracture_layers::{GlobalAvgPool, Layer, Mode};
/// use fracture_tensor::Tensor4;
/// let mut gap = GlobalAvgPool::new();
/// let y = gap.forward(&Tensor4::from_vec([1, 1, 2, 2], vec![1.0, 2.0, 3.0, 6.0]).unwrap(), Mode::Eval).unwrap();
/// assert_eq!((y.shape(), y.as_slice()), ([1, 1, 1, 1], &[3.0][..]));
/// ```
#[derive(Debug, Default)]
pub struct GlobalAvgPool {
    cache: Option<[usize; 4]>,
}

impl GlobalAvgPool {
    /// A global average pooling layer.
    pub fn new() -> Self {
        GlobalAvgPool::default()
    }
}

impl Layer for GlobalAvgPool {
    fn kind(&self) -> &'static str {
        "GlobalAvgPool"
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        let s = x.shape();
        if s[2] == 0 || s[3] == 0 {
            return Err(LayersError::shape(
                "GlobalAvgPool",
                "input with H, W > 0",
                &s,
            ));
        }
        let y = global_avg_pool_forward(x);
        self.cache = if mode.caches() { Some(s) } else { None };
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        let shape = self.cache.take().ok_or(LayersError::NoForwardCache {
            layer: "GlobalAvgPool",
        })?;
        Ok(global_avg_pool_backward(dy, shape)?)
    }

    fn visit_params<'a>(&'a mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &'a mut Param)) {}

    fn visit_params_ref<'a>(&'a self, _prefix: &str, _f: &mut dyn FnMut(&str, &'a Param)) {}

    fn clear_cache(&mut self) {
        self.cache = None;
    }
}

//! Flattening of the channel and spatial axes into features.

use fracture_tensor::Tensor4;

use crate::error::{LayersError, Result};
use crate::layer::{Layer, Mode, Param};

/// `[N, C, H, W] -> [N, C*H*W, 1, 1]` (row-major, so feature `c*H*W + h*W + w`).
///
/// PyTorch equivalent: `nn.Flatten()` (start_dim 1). No parameters.
///
/// ```
/// use fracture_layers::{Flatten, Layer, Mode};
/// use fracture_tensor::Tensor4;
/// let y = Flatten::new().forward(&Tensor4::zeros([2, 3, 4, 5]), Mode::Eval).unwrap();
/// assert_eq!(y.shape(), [2, 60, 1, 1]);
/// ```
#[derive(Debug, Default)]
pub struct Flatten {
    cache: Option<[usize; 4]>,
}

impl Flatten {
    /// A flatten layer.
    pub fn new() -> Self {
        Flatten::default()
    }
}

impl Layer for Flatten {
    fn kind(&self) -> &'static str {
        "Flatten"
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        let [n, c, h, w] = x.shape();
        let y = x.clone().reshape([n, c * h * w, 1, 1])?;
        self.cache = if mode.caches() { Some(x.shape()) } else { None };
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        let shape = self
            .cache
            .take()
            .ok_or(LayersError::NoForwardCache { layer: "Flatten" })?;
        let [n, c, h, w] = shape;
        if dy.shape() != [n, c * h * w, 1, 1] {
            return Err(LayersError::shape(
                "Flatten",
                format!("upstream gradient [{n}, {}, 1, 1]", c * h * w),
                &dy.shape(),
            ));
        }
        Ok(dy.clone().reshape(shape)?)
    }

    fn visit_params<'a>(&'a mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &'a mut Param)) {}

    fn visit_params_ref<'a>(&'a self, _prefix: &str, _f: &mut dyn FnMut(&str, &'a Param)) {}

    fn clear_cache(&mut self) {
        self.cache = None;
    }
}

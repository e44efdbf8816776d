//! Rectified linear unit.

use fracture_tensor::{relu_backward, relu_forward, Tensor4};

use crate::error::{LayersError, Result};
use crate::layer::{Layer, Mode, Param};

/// `y = max(x, 0)` elementwise, any shape.
///
/// PyTorch equivalent: `nn.ReLU()`. No parameters. The gradient at exactly 0 is 0, as PyTorch.
///
/// ```
/// use fracture_layers::{Layer, Mode, Relu};
/// use fracture_tensor::Tensor4;
/// let mut relu = Relu::new();
/// let y = relu.forward(&Tensor4::from_vec([1, 2, 1, 1], vec![-1.0, 2.0]).unwrap(), Mode::Eval).unwrap();
/// assert_eq!(y.as_slice(), &[0.0, 2.0]);
/// ```
#[derive(Debug, Default)]
pub struct Relu {
    /// The output of the last caching forward pass.
    cache: Option<Tensor4>,
}

impl Relu {
    /// A ReLU layer.
    pub fn new() -> Self {
        Relu::default()
    }
}

impl Layer for Relu {
    fn kind(&self) -> &'static str {
        "ReLU"
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        let y = relu_forward(x);
        self.cache = if mode.caches() { Some(y.clone()) } else { None };
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        let y = self
            .cache
            .take()
            .ok_or(LayersError::NoForwardCache { layer: "ReLU" })?;
        Ok(relu_backward(&y, dy)?)
    }

    fn visit_params<'a>(&'a mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &'a mut Param)) {}

    fn visit_params_ref<'a>(&'a self, _prefix: &str, _f: &mut dyn FnMut(&str, &'a Param)) {}

    fn clear_cache(&mut self) {
        self.cache = None;
    }
}

//! Rectified linear units: ReLU and ReLU6 (the same layer with an upper bound).

use fracture_tensor::{relu6_forward_inplace, relu_forward_inplace, Tensor4};
use rayon::prelude::*;

use crate::error::{LayersError, Result};
use crate::layer::{Layer, Mode, Param};

/// Elements per parallel task (a multiple of 64, so mask words never straddle tasks).
const CHUNK: usize = 1 << 14;

/// `y = max(x, 0)` elementwise, any shape.
///
/// PyTorch equivalent: `nn.ReLU()`. No parameters. The gradient is `dy` where `x > 0` and 0
/// elsewhere (also at exactly 0 and for NaN), as PyTorch. For backward it keeps one bit per
/// element rather than a copy of the activation.
///
/// ```
/// use fracture_layers::{Layer, Mode, Relu};
/// use fracture_tensor::Tensor4;
/// let mut relu = Relu::new();
/// let x = Tensor4::from_vec([1, 3, 1, 1], vec![-1.0, 2.0, 0.0]).unwrap();
/// let y = relu.forward(&x, Mode::Train).unwrap();
/// assert_eq!(y.as_slice(), &[0.0, 2.0, 0.0]);
/// let dx = relu.backward(&Tensor4::from_vec([1, 3, 1, 1], vec![5.0; 3]).unwrap()).unwrap();
/// assert_eq!(dx.as_slice(), &[0.0, 5.0, 0.0]);
/// ```
///
/// [`Relu::relu6`] builds ReLU6, `y = min(max(x, 0), 6)` (PyTorch `nn.ReLU6()`, the activation
/// of MobileNet and EfficientNet-Lite), whose gradient is `dy` where `0 < x < 6` (0 at exactly
/// 0 and 6, as PyTorch).
///
/// ```
/// use fracture_layers::{Layer, Mode, Relu};
/// use fracture_tensor::Tensor4;
/// let mut relu6 = Relu::relu6();
/// let x = Tensor4::from_vec([1, 3, 1, 1], vec![-1.0, 2.0, 8.0]).unwrap();
/// assert_eq!(relu6.forward(&x, Mode::Train).unwrap().as_slice(), &[0.0, 2.0, 6.0]);
/// let dx = relu6.backward(&Tensor4::from_vec([1, 3, 1, 1], vec![5.0; 3]).unwrap()).unwrap();
/// assert_eq!(dx.as_slice(), &[0.0, 5.0, 0.0]);
/// assert_eq!(relu6.kind(), "ReLU6");
/// ```
#[derive(Debug)]
pub struct Relu {
    /// Upper bound of the output: infinity for ReLU, 6 for ReLU6.
    cap: f32,
    /// Input shape and the bit mask `x > 0` (bit `i % 64` of word `i / 64`) of the last caching
    /// forward pass.
    cache: Option<([usize; 4], Vec<u64>)>,
    /// The mask allocation of the last backward, reused by the next forward.
    spare_mask: Vec<u64>,
}

impl Default for Relu {
    fn default() -> Self {
        Relu {
            cap: f32::INFINITY,
            cache: None,
            spare_mask: Vec::new(),
        }
    }
}

impl Relu {
    /// A ReLU layer.
    pub fn new() -> Self {
        Relu::default()
    }

    /// A ReLU6 layer: outputs clamped to `[0, 6]`.
    pub fn relu6() -> Self {
        Relu {
            cap: 6.0,
            ..Relu::default()
        }
    }

    /// The output's upper bound (infinity for ReLU, 6 for ReLU6).
    pub fn cap(&self) -> f32 {
        self.cap
    }
}

impl Layer for Relu {
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn kind(&self) -> &'static str {
        if self.cap.is_finite() {
            "ReLU6"
        } else {
            "ReLU"
        }
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        if !mode.caches() {
            self.cache = None;
            let mut y = x.clone();
            if self.cap.is_finite() {
                relu6_forward_inplace(&mut y);
            } else {
                relu_forward_inplace(&mut y);
            }
            return Ok(y);
        }
        // One pass: read x, write y and the mask (no copy-then-clamp).
        // Every element of y and of the mask is written below: recycled buffers are fine.
        let mut y = Tensor4::for_overwrite(x.shape());
        let mut mask = std::mem::take(&mut self.spare_mask);
        mask.resize(x.len().div_ceil(64), 0);
        let (cap, open) = (self.cap, self.cap.is_infinite());
        y.as_slice_mut()
            .par_chunks_mut(CHUNK)
            .zip(x.as_slice().par_chunks(CHUNK))
            .zip(mask.par_chunks_mut(CHUNK / 64))
            .for_each(|((ys, xs), ms)| {
                for ((yw, xw), m) in ys.chunks_mut(64).zip(xs.chunks(64)).zip(ms.iter_mut()) {
                    // Branch-free: signs are unpredictable. NaN passes through, as relu_forward.
                    let mut bits = 0u64;
                    for (i, (o, &v)) in yw.iter_mut().zip(xw).enumerate() {
                        bits |= ((v > 0.0 && (open || v < cap)) as u64) << i;
                        let r = if v < 0.0 { 0.0 } else { v };
                        *o = if r > cap { cap } else { r };
                    }
                    *m = bits;
                }
            });
        self.cache = Some((x.shape(), mask));
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        let (shape, mask) = self
            .cache
            .take()
            .ok_or(LayersError::NoForwardCache { layer: "ReLU" })?;
        if dy.shape() != shape {
            return Err(LayersError::shape(
                "ReLU",
                format!("upstream gradient of the input's shape {shape:?}"),
                &dy.shape(),
            ));
        }
        let mut dx = Tensor4::for_overwrite(shape);
        dx.as_slice_mut()
            .par_chunks_mut(CHUNK)
            .zip(dy.as_slice().par_chunks(CHUNK))
            .zip(mask.par_chunks(CHUNK / 64))
            .for_each(|((ds, gs), ms)| {
                for ((dw, gw), &bits) in ds.chunks_mut(64).zip(gs.chunks(64)).zip(ms) {
                    for (i, (o, &g)) in dw.iter_mut().zip(gw).enumerate() {
                        *o = if bits >> i & 1 == 0 { 0.0 } else { g };
                    }
                }
            });
        Ok(dx)
    }

    fn visit_params<'a>(&'a mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &'a mut Param)) {}

    fn visit_params_ref<'a>(&'a self, _prefix: &str, _f: &mut dyn FnMut(&str, &'a Param)) {}

    fn clear_cache(&mut self) {
        self.cache = None;
    }
}

/// The activation a block applies after its batch norms.
///
/// ```
/// use fracture_layers::Activation;
/// assert_eq!(Activation::default(), Activation::Relu);
/// assert_eq!(Activation::Relu6.cap(), 6.0);
/// assert_eq!(serde_json::to_string(&Activation::Relu6).unwrap(), "\"relu6\"");
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(x, 0)` (PyTorch `nn.ReLU`).
    #[default]
    Relu,
    /// `min(max(x, 0), 6)` (PyTorch `nn.ReLU6`), the activation of MobileNet and
    /// EfficientNet-Lite.
    Relu6,
}

impl Activation {
    /// The upper bound of the output: infinity for ReLU, 6 for ReLU6.
    pub fn cap(self) -> f32 {
        match self {
            Activation::Relu => f32::INFINITY,
            Activation::Relu6 => 6.0,
        }
    }

    /// The activation as a stand-alone layer.
    pub fn layer(self) -> Relu {
        match self {
            Activation::Relu => Relu::new(),
            Activation::Relu6 => Relu::relu6(),
        }
    }
}

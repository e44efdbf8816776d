//! ReLU and ReLU6 forward (out of place and in place) and backward.

use rayon::prelude::*;

use crate::error::{Result, TensorError};
use crate::tensor::Tensor4;

/// Elements per rayon task: large enough that scheduling costs nothing, small enough to split
/// a layer's activations across cores.
const CHUNK: usize = 1 << 15;

pub(crate) fn check_same_shape(op: &'static str, y: &Tensor4, dy: &Tensor4) -> Result<()> {
    if y.shape() != dy.shape() {
        return Err(TensorError::ShapeMismatch {
            op,
            what: "dy vs y".into(),
            expected: format!("{:?}", y.shape()),
            got: format!("{:?}", dy.shape()),
        });
    }
    Ok(())
}

/// `y = max(x, 0)` element-wise (NaN stays NaN).
///
/// PyTorch equivalent: `torch.relu(x)`.
///
/// ```
/// use fracture_tensor::{relu_forward, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 1, 3], vec![-1.0, 0.0, 2.0])?;
/// assert_eq!(relu_forward(&x).as_slice(), &[0.0, 0.0, 2.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn relu_forward(x: &Tensor4) -> Tensor4 {
    let mut y = x.clone();
    relu_forward_inplace(&mut y);
    y
}

/// `x = max(x, 0)` in place.
///
/// ```
/// use fracture_tensor::{relu_forward_inplace, Tensor4};
/// let mut x = Tensor4::from_vec([1, 1, 1, 2], vec![-1.0, 2.0])?;
/// relu_forward_inplace(&mut x);
/// assert_eq!(x.as_slice(), &[0.0, 2.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn relu_forward_inplace(x: &mut Tensor4) {
    x.as_slice_mut().par_chunks_mut(CHUNK).for_each(|ch| {
        for v in ch {
            *v = if *v < 0.0 { 0.0 } else { *v };
        }
    });
}

/// ReLU backward from the forward *output* `y`: `dx = dy` where `y > 0`, else 0.
///
/// ```
/// use fracture_tensor::{relu_backward, Tensor4};
/// let y = Tensor4::from_vec([1, 1, 1, 2], vec![0.0, 2.0])?;
/// let dy = Tensor4::from_vec([1, 1, 1, 2], vec![5.0, 5.0])?;
/// assert_eq!(relu_backward(&y, &dy)?.as_slice(), &[0.0, 5.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn relu_backward(y: &Tensor4, dy: &Tensor4) -> Result<Tensor4> {
    check_same_shape("relu_backward", y, dy)?;
    let mut dx = dy.clone();
    mask_by_positive(y, &mut dx);
    Ok(dx)
}

/// ReLU backward in place: `dy` becomes `dx` (zeroed where `y <= 0`), saving an allocation.
///
/// ```
/// use fracture_tensor::{relu_backward_inplace, Tensor4};
/// let y = Tensor4::from_vec([1, 1, 1, 2], vec![0.0, 2.0])?;
/// let mut g = Tensor4::from_vec([1, 1, 1, 2], vec![5.0, 5.0])?;
/// relu_backward_inplace(&y, &mut g)?;
/// assert_eq!(g.as_slice(), &[0.0, 5.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn relu_backward_inplace(y: &Tensor4, dy: &mut Tensor4) -> Result<()> {
    check_same_shape("relu_backward_inplace", y, dy)?;
    mask_by_positive(y, dy);
    Ok(())
}

/// `d = d` where `y > 0`, else 0, in parallel chunks.
fn mask_by_positive(y: &Tensor4, d: &mut Tensor4) {
    d.as_slice_mut()
        .par_chunks_mut(CHUNK)
        .zip(y.as_slice().par_chunks(CHUNK))
        .for_each(|(d, yc)| {
            for (d, &v) in d.iter_mut().zip(yc) {
                *d = if v > 0.0 { *d } else { 0.0 };
            }
        });
}

/// `y = min(max(x, 0), 6)` element-wise in place (NaN stays NaN).
///
/// PyTorch equivalent: `torch.nn.functional.relu6(x)`, the activation of MobileNet and
/// EfficientNet-Lite.
///
/// ```
/// use fracture_tensor::{relu6_forward_inplace, Tensor4};
/// let mut x = Tensor4::from_vec([1, 1, 1, 3], vec![-1.0, 2.0, 7.5])?;
/// relu6_forward_inplace(&mut x);
/// assert_eq!(x.as_slice(), &[0.0, 2.0, 6.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn relu6_forward_inplace(x: &mut Tensor4) {
    x.as_slice_mut().par_chunks_mut(CHUNK).for_each(|ch| {
        for v in ch {
            *v = relu6(*v);
        }
    });
}

/// ReLU6 of one value: `if x < 0 { 0 } else if x > 6 { 6 } else { x }` (NaN passes through).
#[inline(always)]
pub(crate) fn relu6(v: f32) -> f32 {
    let r = if v < 0.0 { 0.0 } else { v };
    if r > 6.0 {
        6.0
    } else {
        r
    }
}

/// ReLU6 backward in place from the forward *output* `y`: `dy` becomes `dx`, kept where
/// `0 < y < 6` and zeroed elsewhere. At exactly 0 and 6 the gradient is 0, as PyTorch's
/// (`hardtanh_backward`): an output of 6 (or 0) means the input was at or beyond the bound.
///
/// ```
/// use fracture_tensor::{relu6_backward_inplace, Tensor4};
/// let y = Tensor4::from_vec([1, 1, 1, 3], vec![0.0, 2.0, 6.0])?;
/// let mut g = Tensor4::from_vec([1, 1, 1, 3], vec![5.0, 5.0, 5.0])?;
/// relu6_backward_inplace(&y, &mut g)?;
/// assert_eq!(g.as_slice(), &[0.0, 5.0, 0.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn relu6_backward_inplace(y: &Tensor4, dy: &mut Tensor4) -> Result<()> {
    check_same_shape("relu6_backward_inplace", y, dy)?;
    dy.as_slice_mut()
        .par_chunks_mut(CHUNK)
        .zip(y.as_slice().par_chunks(CHUNK))
        .for_each(|(d, yc)| {
            for (d, &v) in d.iter_mut().zip(yc) {
                *d = if v > 0.0 && v < 6.0 { *d } else { 0.0 };
            }
        });
    Ok(())
}

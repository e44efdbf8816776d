//! ReLU forward (out of place and in place) and backward.

use crate::error::{Result, TensorError};
use crate::tensor::Tensor4;

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
    crate::naive::relu_forward(x)
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
    let mut y = crate::naive::relu_forward(x);
    std::mem::swap(x, &mut y);
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
    crate::naive::relu_backward(y, dy)
}

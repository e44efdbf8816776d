//! [`Tensor4`]: a 4-D f32 tensor in NCHW order, always stored in standard (C-contiguous) layout.
//!
//! 2-D activations (the input of a linear layer, logits) are `Tensor4`s of shape `[N, F, 1, 1]`;
//! there is no separate 2-D type.

use ndarray::Array4;

use crate::error::{Result, TensorError};
use crate::recycle;

/// A 4-D f32 tensor in NCHW order on an [`ndarray::Array4<f32>`], kept in standard
/// (row-major, C-contiguous) layout so that [`as_slice`](Tensor4::as_slice) always works.
///
/// ```
/// use fracture_tensor::Tensor4;
/// let t = Tensor4::from_vec([1, 2, 2, 2], (0..8).map(|v| v as f32).collect())?;
/// assert_eq!(t.shape(), [1, 2, 2, 2]);
/// assert_eq!(t.array()[[0, 1, 0, 1]], 5.0);
/// let t = t.reshape([1, 8, 1, 1])?;
/// assert_eq!(t.as_slice()[7], 7.0);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
///
/// Large buffers (from 256 KiB) are recycled: a dropped tensor hands its buffer to a
/// process-wide pool that the next tensor of the same size takes it from, which saves the page
/// faults of fresh allocations (see [`crate::pooled_bytes`], [`crate::set_pool_limit_bytes`]).
#[derive(Debug, PartialEq)]
pub struct Tensor4 {
    data: Array4<f32>,
}

impl Clone for Tensor4 {
    fn clone(&self) -> Self {
        match self.data.as_slice() {
            Some(src) => {
                let mut v = recycle::take(src.len());
                v.copy_from_slice(src);
                Self::wrap(self.shape(), v)
            }
            None => Self {
                data: self.data.clone(),
            },
        }
    }
}

impl Drop for Tensor4 {
    fn drop(&mut self) {
        if self.data.len() * 4 >= recycle::MIN_POOLED_BYTES {
            let a = std::mem::replace(&mut self.data, Array4::zeros([0, 0, 0, 0]));
            recycle::give(a.into_raw_vec_and_offset().0);
        }
    }
}

fn count(shape: [usize; 4]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor4 {
    /// A tensor of the given shape filled with zeros.
    ///
    /// ```
    /// let t = fracture_tensor::Tensor4::zeros([2, 3, 4, 5]);
    /// assert_eq!(t.len(), 120);
    /// assert!(t.as_slice().iter().all(|&v| v == 0.0));
    /// ```
    pub fn zeros(shape: [usize; 4]) -> Self {
        match count(shape) {
            Some(n) => Self::wrap(shape, recycle::zeroed(n)),
            None => Self {
                data: Array4::zeros(shape),
            },
        }
    }

    /// A tensor of the given shape whose values are **unspecified** (left over from a recycled
    /// buffer, always initialised memory): for kernels that overwrite every element, where
    /// [`Tensor4::zeros`] would write the buffer twice. Never read an element before writing it.
    ///
    /// ```
    /// let mut t = fracture_tensor::Tensor4::for_overwrite([1, 2, 3, 4]);
    /// t.as_slice_mut().fill(1.5);
    /// assert_eq!(t.as_slice()[23], 1.5);
    /// ```
    pub fn for_overwrite(shape: [usize; 4]) -> Self {
        match count(shape) {
            Some(n) => Self::wrap(shape, recycle::take(n)),
            None => Self {
                data: Array4::zeros(shape),
            },
        }
    }

    /// `data.len()` must be the product of `shape` (callers guarantee it).
    fn wrap(shape: [usize; 4], data: Vec<f32>) -> Self {
        match Array4::from_shape_vec(shape, data) {
            Ok(data) => Self { data },
            // Unreachable for callers that pass a matching length.
            Err(_) => Self {
                data: Array4::zeros(shape),
            },
        }
    }

    /// Wraps a row-major (NCHW) buffer. Fails if `data.len()` is not the product of `shape`.
    ///
    /// ```
    /// use fracture_tensor::Tensor4;
    /// assert!(Tensor4::from_vec([1, 1, 1, 3], vec![1.0, 2.0, 3.0]).is_ok());
    /// assert!(Tensor4::from_vec([1, 1, 1, 3], vec![1.0]).is_err());
    /// ```
    pub fn from_vec(shape: [usize; 4], data: Vec<f32>) -> Result<Self> {
        let expected = count(shape).ok_or_else(|| TensorError::InvalidParameter {
            op: "Tensor4::from_vec",
            name: "shape",
            value: format!("{shape:?}"),
            reason: "element count overflows usize".into(),
        })?;
        if expected != data.len() {
            return Err(TensorError::LengthMismatch {
                op: "Tensor4::from_vec",
                what: format!("data for shape {shape:?}"),
                expected,
                got: data.len(),
            });
        }
        let data =
            Array4::from_shape_vec(shape, data).map_err(|e| TensorError::InvalidParameter {
                op: "Tensor4::from_vec",
                name: "shape",
                value: format!("{shape:?}"),
                reason: e.to_string(),
            })?;
        Ok(Self { data })
    }

    /// Wraps an ndarray, copying it into standard layout if it is not already (for example a
    /// transposed view turned owned).
    ///
    /// ```
    /// use fracture_tensor::Tensor4;
    /// let a = ndarray::Array4::<f32>::from_shape_fn([1, 2, 3, 1], |(_, c, h, _)| (c * 10 + h) as f32);
    /// let t = Tensor4::from_array(a.permuted_axes([0, 2, 1, 3]));
    /// assert_eq!(t.shape(), [1, 3, 2, 1]);
    /// assert_eq!(t.as_slice(), &[0.0, 10.0, 1.0, 11.0, 2.0, 12.0]);
    /// ```
    pub fn from_array(a: Array4<f32>) -> Self {
        let d = a.dim();
        let shape = [d.0, d.1, d.2, d.3];
        let n = a.len();
        let data: Vec<f32> = if a.is_standard_layout() {
            let (mut v, offset) = a.into_raw_vec_and_offset();
            match offset {
                Some(o) if n > 0 => {
                    v.drain(..o);
                    v.truncate(n);
                    v
                }
                _ => Vec::new(),
            }
        } else {
            a.iter().copied().collect()
        };
        match Array4::from_shape_vec(shape, data) {
            Ok(data) => Self { data },
            // Unreachable: `data` holds exactly `n` elements in logical order.
            Err(_) => Self::zeros(shape),
        }
    }

    /// The shape `[N, C, H, W]`.
    ///
    /// ```
    /// assert_eq!(fracture_tensor::Tensor4::zeros([1, 2, 3, 4]).shape(), [1, 2, 3, 4]);
    /// ```
    pub fn shape(&self) -> [usize; 4] {
        let d = self.data.dim();
        [d.0, d.1, d.2, d.3]
    }

    /// Number of elements.
    ///
    /// ```
    /// assert_eq!(fracture_tensor::Tensor4::zeros([1, 2, 3, 4]).len(), 24);
    /// ```
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when some dimension is zero.
    ///
    /// ```
    /// assert!(fracture_tensor::Tensor4::zeros([0, 2, 3, 4]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements in NCHW row-major order.
    ///
    /// # Panics
    /// Only if the layout invariant was broken through [`array_mut`](Tensor4::array_mut) by a
    /// stride-changing call such as `swap_axes` (see there).
    ///
    /// ```
    /// let t = fracture_tensor::Tensor4::zeros([1, 1, 2, 2]);
    /// assert_eq!(t.as_slice().len(), 4);
    /// ```
    pub fn as_slice(&self) -> &[f32] {
        self.data
            .as_slice()
            .expect("Tensor4 invariant: standard layout (do not swap axes through array_mut)")
    }

    /// The elements in NCHW row-major order, mutably.
    ///
    /// ```
    /// let mut t = fracture_tensor::Tensor4::zeros([1, 1, 2, 2]);
    /// t.as_slice_mut()[3] = 1.0;
    /// assert_eq!(t.array()[[0, 0, 1, 1]], 1.0);
    /// ```
    pub fn as_slice_mut(&mut self) -> &mut [f32] {
        self.restore_layout();
        self.data
            .as_slice_mut()
            .expect("Tensor4 invariant: standard layout restored above")
    }

    /// The underlying array.
    ///
    /// ```
    /// let t = fracture_tensor::Tensor4::zeros([1, 1, 2, 2]);
    /// assert_eq!(t.array().sum(), 0.0);
    /// ```
    pub fn array(&self) -> &Array4<f32> {
        &self.data
    }

    /// The underlying array, mutably, for element-wise edits. Do not change its layout
    /// (`swap_axes`, `invert_axis`, assigning a non-standard array): the kernels rely on
    /// standard layout and [`as_slice`](Tensor4::as_slice) panics if it is broken.
    ///
    /// ```
    /// let mut t = fracture_tensor::Tensor4::zeros([1, 1, 2, 2]);
    /// t.array_mut().fill(2.0);
    /// assert_eq!(t.as_slice(), &[2.0; 4]);
    /// ```
    pub fn array_mut(&mut self) -> &mut Array4<f32> {
        &mut self.data
    }

    /// The elements in NCHW row-major order, by value (no copy when possible).
    ///
    /// ```
    /// let t = fracture_tensor::Tensor4::zeros([1, 1, 1, 2]);
    /// assert_eq!(t.into_vec(), vec![0.0, 0.0]);
    /// ```
    pub fn into_vec(mut self) -> Vec<f32> {
        let a = std::mem::replace(&mut self.data, Array4::zeros([0, 0, 0, 0]));
        let mut t = Self::from_array(a);
        let a = std::mem::replace(&mut t.data, Array4::zeros([0, 0, 0, 0]));
        a.into_raw_vec_and_offset().0
    }

    /// Same elements, new shape (the element count must match).
    ///
    /// ```
    /// let t = fracture_tensor::Tensor4::zeros([2, 3, 4, 5]);
    /// assert_eq!(t.clone().reshape([2, 60, 1, 1])?.shape(), [2, 60, 1, 1]);
    /// assert!(t.reshape([2, 61, 1, 1]).is_err());
    /// # Ok::<(), fracture_tensor::TensorError>(())
    /// ```
    pub fn reshape(self, shape: [usize; 4]) -> Result<Self> {
        let from = self.shape();
        let expected = self.len();
        if count(shape) != Some(expected) {
            return Err(TensorError::ShapeMismatch {
                op: "Tensor4::reshape",
                what: format!("new shape {shape:?} for a tensor of shape {from:?}"),
                expected: format!("{expected} elements"),
                got: count(shape).map_or_else(|| "overflow".into(), |c| format!("{c} elements")),
            });
        }
        Self::from_vec(shape, self.into_vec())
    }

    /// Takes the tensor's storage as a vector of exactly `len` elements, leaving `self` empty
    /// (`[0, 0, 0, 0]`). The allocation is reused when possible; contents are unspecified.
    pub(crate) fn take_buffer(&mut self, len: usize) -> Vec<f32> {
        let mut v = std::mem::replace(self, Self::zeros([0, 0, 0, 0])).into_vec();
        if v.len() == len {
            v
        } else if v.capacity() >= len {
            v.resize(len, 0.0);
            v
        } else {
            // A recycled (or fresh) buffer is cheaper than growing (no copy of old values).
            recycle::give(v);
            recycle::take(len)
        }
    }

    fn restore_layout(&mut self) {
        if !self.data.is_standard_layout() {
            let a = std::mem::replace(&mut self.data, Array4::zeros([0, 0, 0, 0]));
            *self = Self::from_array(a);
        }
    }
}

/// Refuses an output whose element count overflows or could never be allocated.
pub(crate) fn check_alloc(op: &'static str, out: [usize; 4]) -> Result<()> {
    let bytes = out
        .iter()
        .try_fold(4usize, |acc, &d| acc.checked_mul(d))
        .filter(|&b| b <= isize::MAX as usize);
    if bytes.is_none() {
        return Err(TensorError::InvalidParameter {
            op,
            name: "output shape",
            value: format!("{out:?}"),
            reason: "the output would not fit in memory (check stride and padding)".into(),
        });
    }
    Ok(())
}

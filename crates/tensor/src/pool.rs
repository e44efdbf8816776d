//! Max pooling (padding counts as -inf) and global average pooling, forward and backward.

use rayon::prelude::*;

use crate::error::{Result, TensorError};
use crate::sum::sum_f32;
use crate::tensor::Tensor4;

/// Window size, stride and padding of a max pooling, each as `[height, width]`.
///
/// PyTorch equivalent: `torch.nn.functional.max_pool2d(x, kernel, stride, padding)` with
/// `ceil_mode=False`, `dilation=1`. As in PyTorch, padding may be at most half the kernel, so
/// every window holds at least one real input element.
///
/// ```
/// use fracture_tensor::PoolParams;
/// let p = PoolParams::square(3, 2, 1);
/// assert_eq!(p, PoolParams { kernel: [3, 3], stride: [2, 2], padding: [1, 1] });
/// assert_eq!(PoolParams::default(), PoolParams::square(2, 2, 0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolParams {
    /// Window size `[kh, kw]`, at least 1.
    pub kernel: [usize; 2],
    /// Step between windows `[sh, sw]`, at least 1.
    pub stride: [usize; 2],
    /// Implicit -inf padding on each side `[ph, pw]`, at most half the kernel.
    pub padding: [usize; 2],
}

impl PoolParams {
    /// Same kernel, stride and padding along both axes.
    ///
    /// ```
    /// let p = fracture_tensor::PoolParams::square(2, 2, 0);
    /// assert_eq!(p.kernel, [2, 2]);
    /// ```
    pub fn square(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [padding; 2],
        }
    }
}

impl Default for PoolParams {
    /// The usual 2x2, stride 2, no padding.
    fn default() -> Self {
        Self::square(2, 2, 0)
    }
}

/// Output shape `[N, C, OH, OW]` of a max pooling of `x: [N, C, H, W]`, with
/// `OH = (H + 2 ph - kh) / sh + 1`. Errors on zero kernel or stride, padding larger than half
/// the kernel, and with [`TensorError::EmptyOutput`] when the output would have no elements.
///
/// ```
/// use fracture_tensor::{max_pool2d_output_shape, PoolParams};
/// assert_eq!(max_pool2d_output_shape([2, 3, 9, 8], PoolParams::square(3, 2, 1))?, [2, 3, 5, 4]);
/// assert!(max_pool2d_output_shape([1, 1, 1, 1], PoolParams::square(2, 2, 0)).is_err());
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn max_pool2d_output_shape(x: [usize; 4], p: PoolParams) -> Result<[usize; 4]> {
    pool_output_shape("max_pool2d", x, p)
}

pub(crate) fn pool_output_shape(
    op: &'static str,
    x: [usize; 4],
    p: PoolParams,
) -> Result<[usize; 4]> {
    let invalid = |name, value: String, reason: &str| TensorError::InvalidParameter {
        op,
        name,
        value,
        reason: reason.into(),
    };
    if p.kernel.contains(&0) {
        return Err(invalid(
            "kernel",
            format!("{:?}", p.kernel),
            "must be at least 1",
        ));
    }
    if p.stride.contains(&0) {
        return Err(invalid(
            "stride",
            format!("{:?}", p.stride),
            "must be at least 1",
        ));
    }
    if p.padding[0] > p.kernel[0] / 2 || p.padding[1] > p.kernel[1] / 2 {
        return Err(invalid(
            "padding",
            format!("{:?}", p.padding),
            &format!(
                "must be at most half the kernel {:?} (as in PyTorch)",
                p.kernel
            ),
        ));
    }
    let [n, c, h, w] = x;
    let empty = |detail: String| TensorError::EmptyOutput {
        op,
        input: x,
        detail,
    };
    if x.contains(&0) {
        return Err(empty("the input has a zero-sized dimension".into()));
    }
    if u32::try_from(h.saturating_mul(w)).is_err() {
        return Err(invalid(
            "input plane",
            format!("{h}x{w}"),
            "argmax indices are u32; the plane is too large",
        ));
    }
    let dim = |size: usize, pad: usize, k: usize, s: usize, axis: &str| -> Result<usize> {
        let padded = size
            .checked_add(pad.saturating_mul(2))
            .ok_or_else(|| empty(format!("padding {pad} overflows")))?;
        if padded < k {
            return Err(empty(format!(
                "kernel {axis} {k} is larger than the padded input {axis} {size} + 2*{pad} = {padded}"
            )));
        }
        Ok((padded - k) / s + 1)
    };
    let oh = dim(h, p.padding[0], p.kernel[0], p.stride[0], "height")?;
    let ow = dim(w, p.padding[1], p.kernel[1], p.stride[1], "width")?;
    let out = [n, c, oh, ow];
    crate::tensor::check_alloc(op, out)?;
    Ok(out)
}

/// Checks the inputs of a max-pool backward; returns `x_shape`'s (n, c) plane size.
pub(crate) fn check_max_pool_backward(
    op: &'static str,
    dy: &Tensor4,
    argmax: &[u32],
    x_shape: [usize; 4],
) -> Result<usize> {
    let d = dy.shape();
    if d[0] != x_shape[0] || d[1] != x_shape[1] {
        return Err(TensorError::ShapeMismatch {
            op,
            what: "batch and channels of dy vs x_shape".into(),
            expected: format!(
                "[{}, {}, _, _] (x_shape {x_shape:?})",
                x_shape[0], x_shape[1]
            ),
            got: format!("{d:?}"),
        });
    }
    if argmax.len() != dy.len() {
        return Err(TensorError::LengthMismatch {
            op,
            what: format!("argmax for dy of shape {d:?}"),
            expected: dy.len(),
            got: argmax.len(),
        });
    }
    let plane = x_shape[2].saturating_mul(x_shape[3]);
    if let Some((position, &index)) = argmax
        .iter()
        .enumerate()
        .find(|(_, &i)| i as usize >= plane)
    {
        return Err(TensorError::IndexOutOfRange {
            op,
            position,
            index: index as usize,
            plane_len: plane,
        });
    }
    Ok(plane)
}

/// Checks the inputs of a global-average-pool backward.
pub(crate) fn check_gap_backward(
    op: &'static str,
    dy: &Tensor4,
    x_shape: [usize; 4],
) -> Result<()> {
    let expected = [x_shape[0], x_shape[1], 1, 1];
    if dy.shape() != expected {
        return Err(TensorError::ShapeMismatch {
            op,
            what: format!("dy for x_shape {x_shape:?}"),
            expected: format!("{expected:?}"),
            got: format!("{:?}", dy.shape()),
        });
    }
    Ok(())
}

/// Max pooling forward. Returns `y [N, C, OH, OW]` and, for every element of `y`, the flat
/// index `h * W + w` of the chosen input inside its (n, c) plane (the first maximum in
/// row-major window order, as PyTorch; NaN wins over numbers).
///
/// ```
/// use fracture_tensor::{max_pool2d_forward, PoolParams, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 2, 2], vec![1.0, 4.0, 3.0, 2.0])?;
/// let (y, argmax) = max_pool2d_forward(&x, PoolParams::square(2, 2, 0))?;
/// assert_eq!((y.as_slice(), argmax.as_slice()), (&[4.0][..], &[1u32][..]));
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn max_pool2d_forward(x: &Tensor4, p: PoolParams) -> Result<(Tensor4, Vec<u32>)> {
    let out = pool_output_shape("max_pool2d_forward", x.shape(), p)?;
    // Every element is written, as `max_pool2d_forward_into` relies on.
    let mut y = crate::recycle::take(out.iter().product());
    let mut arg = vec![0u32; y.len()];
    max_pool_kernel(x, p, out, &mut y, &mut arg);
    Ok((Tensor4::from_vec(out, y)?, arg))
}

/// [`max_pool2d_forward`] writing into `y` and `argmax`, reusing their allocations (they are
/// resized to the output; old values are ignored).
///
/// ```
/// use fracture_tensor::{max_pool2d_forward_into, PoolParams, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 2, 2], vec![1.0, 4.0, 3.0, 2.0])?;
/// let (mut y, mut argmax) = (Tensor4::zeros([0, 0, 0, 0]), Vec::new());
/// max_pool2d_forward_into(&x, PoolParams::square(2, 2, 0), &mut y, &mut argmax)?;
/// assert_eq!((y.as_slice(), argmax.as_slice()), (&[4.0][..], &[1u32][..]));
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn max_pool2d_forward_into(
    x: &Tensor4,
    p: PoolParams,
    y: &mut Tensor4,
    argmax: &mut Vec<u32>,
) -> Result<()> {
    let out = pool_output_shape("max_pool2d_forward_into", x.shape(), p)?;
    let len = out.iter().product();
    let mut buf = y.take_buffer(len);
    argmax.resize(len, 0);
    max_pool_kernel(x, p, out, &mut buf, argmax);
    *y = Tensor4::from_vec(out, buf)?;
    Ok(())
}

/// The clipped input range `[lo, hi)` of window `i` along one axis.
fn window(i: usize, stride: usize, pad: usize, k: usize, size: usize) -> (usize, usize) {
    let start = i * stride;
    let lo = start.saturating_sub(pad);
    let hi = (start + k).saturating_sub(pad).min(size);
    (lo, hi.max(lo))
}

/// Max pooling of every (n, c) plane in parallel; `out` is the checked output shape.
fn max_pool_kernel(x: &Tensor4, p: PoolParams, out: [usize; 4], y: &mut [f32], arg: &mut [u32]) {
    let [_, _, h, w] = x.shape();
    let [_, _, oh, ow] = out;
    let ohw = oh * ow;
    let hwin: Vec<(usize, usize)> = (0..oh)
        .map(|r| window(r, p.stride[0], p.padding[0], p.kernel[0], h))
        .collect();
    let wwin: Vec<(usize, usize)> = (0..ow)
        .map(|j| window(j, p.stride[1], p.padding[1], p.kernel[1], w))
        .collect();
    let two_by_two = p.kernel == [2, 2] && p.stride == [2, 2] && p.padding == [0, 0];
    y.par_chunks_mut(ohw)
        .zip(arg.par_chunks_mut(ohw))
        .zip(x.as_slice().par_chunks(h * w))
        .with_min_len(4)
        .for_each(|((yp, ap), xp)| {
            if two_by_two {
                max_pool_plane_2x2(xp, w, ow, yp, ap);
            } else {
                max_pool_plane(xp, w, &hwin, &wwin, yp, ap);
            }
        });
}

/// Keeps `(v, i)` if `v` beats the current best: a larger value, or the first NaN. Written
/// without branches (the outcome is data-dependent and would mispredict half the time).
#[inline(always)]
fn pick(best: &mut f32, idx: &mut usize, v: f32, i: usize) {
    let take = (v > *best) | (v.is_nan() & !best.is_nan());
    *best = if take { v } else { *best };
    *idx = if take { i } else { *idx };
}

/// Max pooling of one plane (`w` wide) with precomputed clipped windows per output row/column.
fn max_pool_plane(
    xp: &[f32],
    w: usize,
    hwin: &[(usize, usize)],
    wwin: &[(usize, usize)],
    yp: &mut [f32],
    ap: &mut [u32],
) {
    let ow = wwin.len();
    for ((yrow, arow), &(h0, h1)) in yp
        .chunks_exact_mut(ow)
        .zip(ap.chunks_exact_mut(ow))
        .zip(hwin)
    {
        for ((yv, av), &(w0, w1)) in yrow.iter_mut().zip(arow.iter_mut()).zip(wwin) {
            let mut best = f32::NEG_INFINITY;
            let mut best_i = h0 * w + w0;
            for ih in h0..h1 {
                let base = ih * w;
                for (iw, &v) in xp[base + w0..base + w1].iter().enumerate() {
                    pick(&mut best, &mut best_i, v, base + w0 + iw);
                }
            }
            *yv = best;
            // The plane size fits u32 (checked by `pool_output_shape`).
            *av = best_i as u32;
        }
    }
}

/// The common 2x2, stride 2, unpadded case: each output reads two pairs of adjacent inputs.
fn max_pool_plane_2x2(xp: &[f32], w: usize, ow: usize, yp: &mut [f32], ap: &mut [u32]) {
    for (r, (yrow, arow)) in yp
        .chunks_exact_mut(ow)
        .zip(ap.chunks_exact_mut(ow))
        .enumerate()
    {
        let (i0, i1) = (2 * r * w, (2 * r + 1) * w);
        let top = xp[i0..i0 + w].chunks_exact(2);
        let bottom = xp[i1..i1 + w].chunks_exact(2);
        for (j, ((yv, av), (t, b))) in yrow
            .iter_mut()
            .zip(arow.iter_mut())
            .zip(top.zip(bottom))
            .enumerate()
        {
            // Same order as the general case: the first element is taken unconditionally.
            let (mut best, mut idx) = (t[0], i0 + 2 * j);
            pick(&mut best, &mut idx, t[1], i0 + 2 * j + 1);
            pick(&mut best, &mut idx, b[0], i1 + 2 * j);
            pick(&mut best, &mut idx, b[1], i1 + 2 * j + 1);
            *yv = best;
            *av = idx as u32;
        }
    }
}

/// Max pooling backward: routes each `dy` element to the input position recorded in `argmax`
/// (summing where windows overlap) and returns `dx` of shape `x_shape`.
///
/// ```
/// use fracture_tensor::{max_pool2d_backward, max_pool2d_forward, PoolParams, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 2, 2], vec![1.0, 4.0, 3.0, 2.0])?;
/// let (_, argmax) = max_pool2d_forward(&x, PoolParams::square(2, 2, 0))?;
/// let dy = Tensor4::from_vec([1, 1, 1, 1], vec![7.0])?;
/// let dx = max_pool2d_backward(&dy, &argmax, x.shape())?;
/// assert_eq!(dx.as_slice(), &[0.0, 7.0, 0.0, 0.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn max_pool2d_backward(dy: &Tensor4, argmax: &[u32], x_shape: [usize; 4]) -> Result<Tensor4> {
    let plane = check_max_pool_backward("max_pool2d_backward", dy, argmax, x_shape)?;
    // Cleared by the scatter, as `max_pool2d_backward_into` relies on.
    let mut dx = crate::recycle::take(x_shape.iter().product());
    max_pool_scatter(dy, argmax, plane, &mut dx);
    Tensor4::from_vec(x_shape, dx)
}

/// [`max_pool2d_backward`] writing into `dx`, reusing its allocation (resized to `x_shape`;
/// old values are ignored).
///
/// ```
/// use fracture_tensor::{max_pool2d_backward_into, Tensor4};
/// let dy = Tensor4::from_vec([1, 1, 1, 1], vec![7.0])?;
/// let mut dx = Tensor4::from_vec([1, 1, 1, 2], vec![9.0, 9.0])?;
/// max_pool2d_backward_into(&dy, &[2], [1, 1, 2, 2], &mut dx)?;
/// assert_eq!(dx.as_slice(), &[0.0, 0.0, 7.0, 0.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn max_pool2d_backward_into(
    dy: &Tensor4,
    argmax: &[u32],
    x_shape: [usize; 4],
    dx: &mut Tensor4,
) -> Result<()> {
    let plane = check_max_pool_backward("max_pool2d_backward_into", dy, argmax, x_shape)?;
    let mut buf = dx.take_buffer(x_shape.iter().product());
    max_pool_scatter(dy, argmax, plane, &mut buf);
    *dx = Tensor4::from_vec(x_shape, buf)?;
    Ok(())
}

/// Zeroes each `plane`-sized slice of `dx` and adds `dy` at the argmax positions.
fn max_pool_scatter(dy: &Tensor4, argmax: &[u32], plane: usize, dx: &mut [f32]) {
    let ohw = dy.shape()[2] * dy.shape()[3];
    if plane == 0 || ohw == 0 {
        dx.fill(0.0);
        return;
    }
    dx.par_chunks_mut(plane)
        .zip(dy.as_slice().par_chunks(ohw))
        .zip(argmax.par_chunks(ohw))
        .with_min_len(4)
        .for_each(|((dxp, dyp), ap)| {
            dxp.fill(0.0);
            for (&g, &i) in dyp.iter().zip(ap) {
                // In range: checked by `check_max_pool_backward`.
                dxp[i as usize] += g;
            }
        });
}

/// Global average pooling forward: `[N, C, H, W] -> [N, C, 1, 1]`, the mean of each plane.
/// An empty plane (`H * W == 0`) gives NaN (0 / 0).
///
/// PyTorch equivalent: `x.mean(dim=(2, 3), keepdim=True)`.
///
/// ```
/// use fracture_tensor::{global_avg_pool_forward, Tensor4};
/// let x = Tensor4::from_vec([1, 2, 1, 2], vec![1.0, 3.0, 10.0, 20.0])?;
/// assert_eq!(global_avg_pool_forward(&x).as_slice(), &[2.0, 15.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn global_avg_pool_forward(x: &Tensor4) -> Tensor4 {
    let [n, c, h, w] = x.shape();
    let hw = h * w;
    let mut y = Tensor4::zeros([n, c, 1, 1]);
    if hw == 0 {
        y.as_slice_mut().fill(f32::NAN);
        return y;
    }
    y.as_slice_mut()
        .par_iter_mut()
        .zip(x.as_slice().par_chunks(hw))
        .with_min_len(64)
        .for_each(|(yv, xp)| *yv = sum_f32(xp) / hw as f32);
    y
}

/// Global average pooling backward: `dy [N, C, 1, 1]` spread evenly over each plane of
/// `x_shape`: `dx = dy / (H * W)`.
///
/// ```
/// use fracture_tensor::{global_avg_pool_backward, Tensor4};
/// let dy = Tensor4::from_vec([1, 1, 1, 1], vec![4.0])?;
/// let dx = global_avg_pool_backward(&dy, [1, 1, 2, 2])?;
/// assert_eq!(dx.as_slice(), &[1.0; 4]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn global_avg_pool_backward(dy: &Tensor4, x_shape: [usize; 4]) -> Result<Tensor4> {
    check_gap_backward("global_avg_pool_backward", dy, x_shape)?;
    let hw = x_shape[2] * x_shape[3];
    let mut dx = Tensor4::zeros(x_shape);
    if hw == 0 {
        return Ok(dx);
    }
    dx.as_slice_mut()
        .par_chunks_mut(hw)
        .zip(dy.as_slice().par_iter())
        .with_min_len(64)
        .for_each(|(plane, &g)| plane.fill(g / hw as f32));
    Ok(dx)
}

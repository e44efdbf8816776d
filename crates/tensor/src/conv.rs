//! 2-D convolution (PyTorch `nn.functional.conv2d`, zero padding, no dilation, any `groups`):
//! parameters, output shape, and the public forward / backward entry points (allocating, and
//! `_into` variants that reuse the caller's output buffers). The work itself is in
//! `conv_gemm` (im2col + GEMM, one group) and `conv_direct` (direct kernels for grouped and
//! depthwise convolutions); the reference loops are in [`naive`](crate::naive).

use crate::conv_direct;
use crate::conv_gemm;
use crate::error::{Result, TensorError};
use crate::tensor::Tensor4;
use crate::workspace::ConvWorkspace;

/// Stride, zero padding (as `[height, width]`) and number of groups of a convolution.
///
/// PyTorch equivalent: the `stride`, `padding` and `groups` arguments of
/// `torch.nn.functional.conv2d`. With `groups = g`, the `C` input channels and `O` output
/// channels are split into `g` equal groups and output group `i` sees only input group `i`:
/// the weight is `[O, C / g, KH, KW]`, and both `C` and `O` must be multiples of `g`.
/// `groups == C` is a depthwise convolution (EfficientNet, MobileNet).
///
/// ```
/// use fracture_tensor::ConvParams;
/// let p = ConvParams::default();
/// assert_eq!((p.stride, p.padding, p.groups), ([1, 1], [0, 0], 1));
/// let same = ConvParams { padding: [1, 1], ..ConvParams::default() };
/// assert_eq!(same.stride, [1, 1]);
/// let depthwise = ConvParams { padding: [1, 1], groups: 32, ..ConvParams::default() };
/// assert_eq!(depthwise.groups, 32);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvParams {
    /// Step between neighbouring windows, `[sh, sw]`; must be at least 1.
    pub stride: [usize; 2],
    /// Zeros added on each side of the input, `[ph, pw]`.
    pub padding: [usize; 2],
    /// Number of channel groups (at least 1; 1 is an ordinary convolution).
    pub groups: usize,
}

impl Default for ConvParams {
    fn default() -> Self {
        Self {
            stride: [1, 1],
            padding: [0, 0],
            groups: 1,
        }
    }
}

/// Output shape `[N, O, OH, OW]` of a convolution of `x: [N, C, H, W]` by
/// `w: [O, C / groups, KH, KW]`, with `OH = (H + 2 ph - KH) / sh + 1` (and likewise for `OW`).
///
/// Errors: channel mismatch, zero stride, zero groups or channels not divisible by the groups,
/// zero-sized kernel/channels, and
/// [`TensorError::EmptyOutput`] when the output would have no elements (kernel larger than the
/// padded input, empty batch, no output channels, empty input plane).
///
/// ```
/// use fracture_tensor::{conv2d_output_shape, ConvParams};
/// let p = ConvParams { stride: [2, 2], padding: [1, 1], groups: 1 };
/// assert_eq!(conv2d_output_shape([8, 3, 32, 31], [16, 3, 3, 3], p)?, [8, 16, 16, 16]);
/// assert!(conv2d_output_shape([1, 3, 2, 2], [4, 3, 5, 5], ConvParams::default()).is_err());
/// // Depthwise: 32 groups of one channel each, weight [32, 1, 3, 3].
/// let dw = ConvParams { padding: [1, 1], groups: 32, ..ConvParams::default() };
/// assert_eq!(conv2d_output_shape([8, 32, 56, 56], [32, 1, 3, 3], dw)?, [8, 32, 56, 56]);
/// assert!(conv2d_output_shape([8, 32, 56, 56], [32, 32, 3, 3], dw).is_err());
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn conv2d_output_shape(x: [usize; 4], w: [usize; 4], p: ConvParams) -> Result<[usize; 4]> {
    output_shape("conv2d", x, w, p)
}

pub(crate) fn output_shape(
    op: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    p: ConvParams,
) -> Result<[usize; 4]> {
    let [n, c, h, wd] = x;
    let [o, wc, kh, kw] = w;
    if p.stride.contains(&0) {
        return Err(TensorError::InvalidParameter {
            op,
            name: "stride",
            value: format!("{:?}", p.stride),
            reason: "both strides must be at least 1".into(),
        });
    }
    if kh == 0 || kw == 0 {
        return Err(TensorError::InvalidParameter {
            op,
            name: "kernel size",
            value: format!("{kh}x{kw} (w shape {w:?})"),
            reason: "the kernel must be at least 1x1".into(),
        });
    }
    if c == 0 {
        return Err(TensorError::InvalidParameter {
            op,
            name: "input channels",
            value: format!("0 (x shape {x:?})"),
            reason: "x must have at least one channel".into(),
        });
    }
    let g = p.groups;
    if g == 0 {
        return Err(TensorError::InvalidParameter {
            op,
            name: "groups",
            value: "0".into(),
            reason: "there must be at least one group".into(),
        });
    }
    if c % g != 0 || o % g != 0 {
        return Err(TensorError::InvalidParameter {
            op,
            name: "groups",
            value: format!("{g} (x shape {x:?}, w shape {w:?})"),
            reason: format!(
                "input channels ({c}) and output channels ({o}) must both be multiples of groups"
            ),
        });
    }
    if g == 1 && wc != c {
        return Err(TensorError::ShapeMismatch {
            op,
            what: "input channels of w [O, C, KH, KW] vs x [N, C, H, W]".into(),
            expected: format!("{c} (x shape {x:?})"),
            got: format!("{wc} (w shape {w:?})"),
        });
    }
    if wc != c / g {
        return Err(TensorError::ShapeMismatch {
            op,
            what: format!(
                "input channels per group of w [O, C / groups, KH, KW] vs x [N, C, H, W] with groups = {g}"
            ),
            expected: format!("{} (x shape {x:?})", c / g),
            got: format!("{wc} (w shape {w:?})"),
        });
    }
    let empty = |detail: String| TensorError::EmptyOutput {
        op,
        input: x,
        detail,
    };
    if n == 0 || o == 0 || h == 0 || wd == 0 {
        return Err(empty(format!(
            "zero-sized batch, output channels or input plane (x {x:?}, w {w:?})"
        )));
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
    let oh = dim(h, p.padding[0], kh, p.stride[0], "height")?;
    let ow = dim(wd, p.padding[1], kw, p.stride[1], "width")?;
    let out = [n, o, oh, ow];
    crate::tensor::check_alloc(op, out)?;
    Ok(out)
}

/// Checks the inputs of a forward convolution and returns the output shape.
pub(crate) fn check_forward(
    op: &'static str,
    x: &Tensor4,
    w: &Tensor4,
    b: Option<&[f32]>,
    p: ConvParams,
) -> Result<[usize; 4]> {
    let out = output_shape(op, x.shape(), w.shape(), p)?;
    if let Some(b) = b {
        if b.len() != out[1] {
            return Err(TensorError::LengthMismatch {
                op,
                what: format!("bias for w of shape {:?}", w.shape()),
                expected: out[1],
                got: b.len(),
            });
        }
    }
    Ok(out)
}

/// Checks the inputs of a backward convolution and returns the output (= `dy`) shape.
pub(crate) fn check_backward(
    op: &'static str,
    x: &Tensor4,
    w: &Tensor4,
    dy: &Tensor4,
    p: ConvParams,
) -> Result<[usize; 4]> {
    let out = output_shape(op, x.shape(), w.shape(), p)?;
    if dy.shape() != out {
        return Err(TensorError::ShapeMismatch {
            op,
            what: "dy (must equal the forward output shape)".into(),
            expected: format!("{out:?}"),
            got: format!("{:?}", dy.shape()),
        });
    }
    Ok(out)
}

/// Forward into `y` by the path for `p.groups`: im2col + GEMM for one group (unchanged), the
/// direct kernel otherwise.
fn forward_dispatch(
    x: &Tensor4,
    w: &Tensor4,
    b: Option<&[f32]>,
    p: ConvParams,
    out: [usize; 4],
    ws: &mut ConvWorkspace,
    y: &mut [f32],
) -> Result<()> {
    if p.groups == 1 {
        conv_gemm::forward(x, w, b, p, out, ws, y)
    } else {
        conv_direct::forward(x, w, b, p, out, ws, y);
        Ok(())
    }
}

/// Backward by the path for `p.groups` (see [`forward_dispatch`]).
#[allow(clippy::too_many_arguments)]
fn backward_dispatch(
    x: &Tensor4,
    w: &Tensor4,
    dy: &Tensor4,
    p: ConvParams,
    out: [usize; 4],
    ws: &mut ConvWorkspace,
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
) -> Result<()> {
    if p.groups == 1 {
        conv_gemm::backward(x, w, dy, p, out, ws, dx, dw, db)
    } else {
        conv_direct::backward(x, w, dy, p, out, ws, dx, dw, db);
        Ok(())
    }
}

/// Gradients of a convolution with respect to its input, weights and bias.
///
/// ```
/// use fracture_tensor::{conv2d_backward, ConvParams, ConvWorkspace, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0])?;
/// let w = Tensor4::from_vec([1, 1, 1, 1], vec![2.0])?;
/// let dy = Tensor4::from_vec([1, 1, 2, 2], vec![1.0; 4])?;
/// let g = conv2d_backward(&x, &w, &dy, ConvParams::default(), true, &mut ConvWorkspace::default())?;
/// assert_eq!(g.dw.as_slice(), &[10.0]);
/// assert_eq!(g.db, vec![4.0]);
/// assert_eq!(g.dx.unwrap().as_slice(), &[2.0; 4]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2dGrads {
    /// Gradient with respect to `x`, `[N, C, H, W]`; `None` when not requested.
    pub dx: Option<Tensor4>,
    /// Gradient with respect to `w`, `[O, C / groups, KH, KW]`.
    pub dw: Tensor4,
    /// Gradient with respect to the bias, length `O` (sums of `dy` over N, OH, OW).
    pub db: Vec<f32>,
}

/// Convolution forward: `x [N, C, H, W]`, `w [O, C / groups, KH, KW]`, optional bias `b` of
/// length `O` -> `y [N, O, OH, OW]`.
///
/// One group: im2col + GEMM, parallel over the batch (or, for fewer images than threads, over
/// output channels). Several groups (depthwise included): a direct kernel, parallel over the
/// `(image, output channel)` planes, vectorised along the output rows. Bit-identical whatever
/// the number of rayon threads.
///
/// PyTorch equivalent: `torch.nn.functional.conv2d(x, w, b, stride, padding, groups=groups)`.
///
/// ```
/// use fracture_tensor::{conv2d_forward, ConvParams, ConvWorkspace, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 3, 3], (1..=9).map(|v| v as f32).collect())?;
/// let w = Tensor4::from_vec([1, 1, 2, 2], vec![1.0; 4])?;
/// let y = conv2d_forward(&x, &w, Some(&[0.5]), ConvParams::default(), &mut ConvWorkspace::default())?;
/// assert_eq!(y.as_slice(), &[12.5, 16.5, 24.5, 28.5]);
/// // Depthwise (groups = channels): each channel has its own 1x1 kernel here.
/// let x = Tensor4::from_vec([1, 2, 1, 2], vec![1.0, 2.0, 3.0, 4.0])?;
/// let w = Tensor4::from_vec([2, 1, 1, 1], vec![10.0, -1.0])?;
/// let p = ConvParams { groups: 2, ..ConvParams::default() };
/// let y = conv2d_forward(&x, &w, None, p, &mut ConvWorkspace::default())?;
/// assert_eq!(y.as_slice(), &[10.0, 20.0, -3.0, -4.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn conv2d_forward(
    x: &Tensor4,
    w: &Tensor4,
    b: Option<&[f32]>,
    p: ConvParams,
    ws: &mut ConvWorkspace,
) -> Result<Tensor4> {
    let out = check_forward("conv2d_forward", x, w, b, p)?;
    // Every element is written by the GEMM (beta = 0), as `conv2d_forward_into` relies on.
    let mut y = crate::recycle::take(out.iter().product());
    forward_dispatch(x, w, b, p, out, ws, &mut y)?;
    Tensor4::from_vec(out, y)
}

/// [`conv2d_forward`] writing into `y`, whose allocation is reused when it already holds the
/// output's number of elements (it is reshaped to the output shape; its old values are ignored).
/// Saves the page faults of a fresh multi-megabyte buffer on every call.
///
/// ```
/// use fracture_tensor::{conv2d_forward_into, ConvParams, ConvWorkspace, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0])?;
/// let w = Tensor4::from_vec([1, 1, 1, 1], vec![2.0])?;
/// let mut y = Tensor4::zeros([0, 0, 0, 0]);
/// conv2d_forward_into(&x, &w, None, ConvParams::default(), &mut ConvWorkspace::default(), &mut y)?;
/// assert_eq!(y.as_slice(), &[2.0, 4.0, 6.0, 8.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn conv2d_forward_into(
    x: &Tensor4,
    w: &Tensor4,
    b: Option<&[f32]>,
    p: ConvParams,
    ws: &mut ConvWorkspace,
    y: &mut Tensor4,
) -> Result<()> {
    let out = check_forward("conv2d_forward_into", x, w, b, p)?;
    let mut buf = y.take_buffer(out.iter().product());
    let r = forward_dispatch(x, w, b, p, out, ws, &mut buf);
    *y = Tensor4::from_vec(out, buf)?;
    r
}

/// Convolution backward: given the forward inputs and the upstream gradient `dy` (shape of the
/// forward output), returns `dw`, `db` and, if `need_dx`, `dx`.
///
/// One group: `dw = sum_n dy_n * col_n^T` is split into a fixed set of chunks of the long
/// inner dimension `N * OH * OW` (by batch index, or by output rows for batches under 8) that
/// run in parallel; the partial sums are added in chunk order, so the result does not depend on
/// the thread count. `dx` is `col2im(W^T * dy_n)` per image; `db` sums `dy`.
///
/// Several groups (depthwise included): direct kernels; one partial `dw` and `db` per
/// `(image, output channel)` plane, added over the batch in image order (again independent of
/// the thread count), and `dx` scattered plane by plane.
///
/// PyTorch equivalent: the gradients autograd computes for
/// `torch.nn.functional.conv2d(x, w, b, stride, padding, groups=groups)`.
///
/// ```
/// use fracture_tensor::{conv2d_backward, ConvParams, ConvWorkspace, Tensor4};
/// let x = Tensor4::zeros([2, 3, 8, 8]);
/// let w = Tensor4::zeros([4, 3, 3, 3]);
/// let dy = Tensor4::zeros([2, 4, 6, 6]);
/// let g = conv2d_backward(&x, &w, &dy, ConvParams::default(), false, &mut ConvWorkspace::default())?;
/// assert!(g.dx.is_none());
/// assert_eq!(g.dw.shape(), [4, 3, 3, 3]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn conv2d_backward(
    x: &Tensor4,
    w: &Tensor4,
    dy: &Tensor4,
    p: ConvParams,
    need_dx: bool,
    ws: &mut ConvWorkspace,
) -> Result<Conv2dGrads> {
    let out = check_backward("conv2d_backward", x, w, dy, p)?;
    let mut dx = if need_dx {
        // Fully written, as `conv2d_backward_into` relies on.
        crate::recycle::take(x.len())
    } else {
        Vec::new()
    };
    let mut dw = vec![0.0f32; w.len()];
    let mut db = vec![0.0f32; out[1]];
    let dx_slice = need_dx.then_some(dx.as_mut_slice());
    backward_dispatch(x, w, dy, p, out, ws, dx_slice, &mut dw, &mut db)?;
    Ok(Conv2dGrads {
        dx: if need_dx {
            Some(Tensor4::from_vec(x.shape(), dx)?)
        } else {
            None
        },
        dw: Tensor4::from_vec(w.shape(), dw)?,
        db,
    })
}

/// [`conv2d_backward`] writing into `grads`, reusing its buffers when they already have the
/// right sizes (old values are ignored). With `need_dx == false`, `grads.dx` is set to `None`.
///
/// ```
/// use fracture_tensor::{conv2d_backward_into, Conv2dGrads, ConvParams, ConvWorkspace, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 1, 2], vec![1.0, 2.0])?;
/// let w = Tensor4::from_vec([1, 1, 1, 1], vec![3.0])?;
/// let dy = Tensor4::from_vec([1, 1, 1, 2], vec![1.0, 1.0])?;
/// let mut g = Conv2dGrads { dx: None, dw: Tensor4::zeros([1, 1, 1, 1]), db: vec![] };
/// let mut ws = ConvWorkspace::default();
/// conv2d_backward_into(&x, &w, &dy, ConvParams::default(), true, &mut ws, &mut g)?;
/// assert_eq!((g.dw.as_slice(), g.db.as_slice()), (&[3.0][..], &[2.0][..]));
/// assert_eq!(g.dx.as_ref().unwrap().as_slice(), &[3.0, 3.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn conv2d_backward_into(
    x: &Tensor4,
    w: &Tensor4,
    dy: &Tensor4,
    p: ConvParams,
    need_dx: bool,
    ws: &mut ConvWorkspace,
    grads: &mut Conv2dGrads,
) -> Result<()> {
    let out = check_backward("conv2d_backward_into", x, w, dy, p)?;
    let mut dx = match (need_dx, grads.dx.take()) {
        (true, Some(mut t)) => Some(t.take_buffer(x.len())),
        (true, None) => Some(vec![0.0f32; x.len()]),
        (false, _) => None,
    };
    let mut dw = grads.dw.take_buffer(w.len());
    grads.db.resize(out[1], 0.0);
    let r = backward_dispatch(
        x,
        w,
        dy,
        p,
        out,
        ws,
        dx.as_deref_mut(),
        &mut dw,
        &mut grads.db,
    );
    grads.dw = Tensor4::from_vec(w.shape(), dw)?;
    grads.dx = dx.map(|v| Tensor4::from_vec(x.shape(), v)).transpose()?;
    r
}

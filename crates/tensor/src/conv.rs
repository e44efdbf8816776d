//! 2-D convolution (PyTorch `nn.functional.conv2d`, zero padding, no dilation or groups):
//! parameters, output shape, forward and backward.

use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::{Result, TensorError};
use crate::gemm::sgemm;
use crate::im2col::{col2im_channel, im2col_channel, Geom};
use crate::sum::sum_f32;
use crate::tensor::Tensor4;

/// Number of partial weight gradients `conv2d_backward` splits its long inner dimension
/// (N * OH * OW) into. Fixed, so the reduction order never depends on the thread count.
const DW_CHUNKS: usize = 8;

/// Stride and zero padding of a convolution, as `[height, width]`.
///
/// PyTorch equivalent: the `stride` and `padding` arguments of `torch.nn.functional.conv2d`.
///
/// ```
/// use fracture_tensor::ConvParams;
/// let p = ConvParams::default();
/// assert_eq!((p.stride, p.padding), ([1, 1], [0, 0]));
/// let same = ConvParams { padding: [1, 1], ..ConvParams::default() };
/// assert_eq!(same.stride, [1, 1]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvParams {
    /// Step between neighbouring windows, `[sh, sw]`; must be at least 1.
    pub stride: [usize; 2],
    /// Zeros added on each side of the input, `[ph, pw]`.
    pub padding: [usize; 2],
}

impl Default for ConvParams {
    fn default() -> Self {
        Self {
            stride: [1, 1],
            padding: [0, 0],
        }
    }
}

/// Output shape `[N, O, OH, OW]` of a convolution of `x: [N, C, H, W]` by `w: [O, C, KH, KW]`,
/// with `OH = (H + 2 ph - KH) / sh + 1` (and likewise for `OW`).
///
/// Errors: channel mismatch, zero stride or zero-sized kernel/channels, and
/// [`TensorError::EmptyOutput`] when the output would have no elements (kernel larger than the
/// padded input, empty batch, no output channels, empty input plane).
///
/// ```
/// use fracture_tensor::{conv2d_output_shape, ConvParams};
/// let p = ConvParams { stride: [2, 2], padding: [1, 1] };
/// assert_eq!(conv2d_output_shape([8, 3, 32, 31], [16, 3, 3, 3], p)?, [8, 16, 16, 16]);
/// assert!(conv2d_output_shape([1, 3, 2, 2], [4, 3, 5, 5], ConvParams::default()).is_err());
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
    if wc != c {
        return Err(TensorError::ShapeMismatch {
            op,
            what: "input channels of w [O, C, KH, KW] vs x [N, C, H, W]".into(),
            expected: format!("{c} (x shape {x:?})"),
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
    Ok([n, o, oh, ow])
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

/// Reusable scratch memory for [`conv2d_forward`] and [`conv2d_backward`] (im2col columns,
/// per-task partial weight gradients). Keep one per layer (or per thread of control) and pass it
/// on every call, so the hot path does not allocate once the buffers have grown to size.
///
/// ```
/// use fracture_tensor::{conv2d_forward, ConvParams, ConvWorkspace, Tensor4};
/// let mut ws = ConvWorkspace::default();
/// let x = Tensor4::zeros([1, 1, 4, 4]);
/// let w = Tensor4::zeros([2, 1, 3, 3]);
/// for _ in 0..3 {
///     let y = conv2d_forward(&x, &w, None, ConvParams::default(), &mut ws)?;
///     assert_eq!(y.shape(), [1, 2, 2, 2]);
/// }
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
#[derive(Default)]
pub struct ConvWorkspace {
    /// One im2col / col2im buffer per rayon worker thread, picked by thread index. The mutex is
    /// never contended (a task holds it only while it runs on that thread and does not yield).
    bufs: Vec<Mutex<Vec<f32>>>,
    /// `DW_CHUNKS` partial weight gradients, `[chunk][O * C * KH * KW]`.
    partials: Vec<f32>,
}

impl std::fmt::Debug for ConvWorkspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lens: Vec<usize> = self
            .bufs
            .iter()
            .map(|b| b.lock().map_or(0, |b| b.len()))
            .collect();
        f.debug_struct("ConvWorkspace")
            .field("buffer_lens", &lens)
            .field("partials_len", &self.partials.len())
            .finish()
    }
}

impl ConvWorkspace {
    /// Makes sure there are `count` buffers of at least `len` elements (only grows).
    fn prepare(&mut self, count: usize, len: usize) {
        while self.bufs.len() < count {
            self.bufs.push(Mutex::new(Vec::new()));
        }
        for b in &mut self.bufs {
            let b = b.get_mut().unwrap_or_else(|e| e.into_inner());
            if b.len() < len {
                b.resize(len, 0.0);
            }
        }
    }
}

/// Runs `f` with the scratch buffer of the current rayon worker thread.
fn with_buf<R>(bufs: &[Mutex<Vec<f32>>], f: impl FnOnce(&mut [f32]) -> R) -> R {
    let i = rayon::current_thread_index().unwrap_or(0) % bufs.len().max(1);
    let mut guard = bufs[i].lock().unwrap_or_else(|e| e.into_inner());
    f(&mut guard)
}

/// Sizes shared by the fast kernels.
struct Dims {
    n: usize,
    c: usize,
    o: usize,
    /// `KH * KW`.
    kk: usize,
    /// `C * KH * KW`, the GEMM inner dimension of the forward pass.
    k: usize,
    /// `H * W`.
    hw: usize,
    /// `OH * OW`.
    np: usize,
    /// 1x1 kernel, stride 1, no padding: the input plane is already the im2col matrix.
    pointwise: bool,
    g: Geom,
}

fn dims(x: [usize; 4], w: [usize; 4], p: ConvParams, out: [usize; 4]) -> Dims {
    let [n, c, h, wd] = x;
    let [o, _, kh, kw] = w;
    let g = Geom {
        h,
        w: wd,
        kh,
        kw,
        sh: p.stride[0],
        sw: p.stride[1],
        ph: p.padding[0],
        pw: p.padding[1],
        oh: out[2],
        ow: out[3],
    };
    Dims {
        n,
        c,
        o,
        kk: kh * kw,
        k: c * kh * kw,
        hw: h * wd,
        np: out[2] * out[3],
        pointwise: kh == 1 && kw == 1 && p.stride == [1, 1] && p.padding == [0, 0],
        g,
    }
}

/// im2col of a whole image for output rows `oh0..oh0 + rows` into `col`
/// (`C * KH * KW` rows of `rows * OW`).
fn im2col_image(x_img: &[f32], d: &Dims, oh0: usize, rows: usize, col: &mut [f32]) {
    let block = d.kk * rows * d.g.ow;
    for (plane, cb) in x_img.chunks_exact(d.hw).zip(col.chunks_exact_mut(block)) {
        im2col_channel(plane, &d.g, oh0, rows, cb);
    }
}

/// `y[o, :] = bias[o] + W[o, :] * col` for `rows` output channels.
fn forward_gemm(
    w: &[f32],
    col: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
    rows: usize,
    k: usize,
    np: usize,
) -> Result<()> {
    let beta = match b {
        Some(b) => {
            for (row, &bv) in y.chunks_exact_mut(np).zip(b) {
                row.fill(bv);
            }
            1.0
        }
        None => 0.0,
    };
    sgemm(
        rows,
        k,
        np,
        1.0,
        w,
        k as isize,
        1,
        col,
        np as isize,
        1,
        beta,
        y,
        np as isize,
        1,
    )
}

/// One chunk of the weight-gradient reduction: images `n0..n1`, output rows `oh0..oh1` of each.
#[derive(Clone, Copy, Debug)]
struct DwChunk {
    n0: usize,
    n1: usize,
    oh0: usize,
    oh1: usize,
}

/// The fixed split of the dw inner dimension (N * OH * OW) into at most [`DW_CHUNKS`] chunks:
/// by batch index when the batch is large enough, else by output rows within each image.
/// Depends only on the shape, never on the thread count.
fn dw_chunks(n: usize, oh: usize) -> Vec<DwChunk> {
    if n >= DW_CHUNKS {
        (0..DW_CHUNKS)
            .map(|i| DwChunk {
                n0: i * n / DW_CHUNKS,
                n1: (i + 1) * n / DW_CHUNKS,
                oh0: 0,
                oh1: oh,
            })
            .collect()
    } else {
        let split = DW_CHUNKS.div_ceil(n).min(oh);
        (0..n)
            .flat_map(|ni| {
                (0..split).map(move |j| DwChunk {
                    n0: ni,
                    n1: ni + 1,
                    oh0: j * oh / split,
                    oh1: (j + 1) * oh / split,
                })
            })
            .collect()
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
    /// Gradient with respect to `w`, `[O, C, KH, KW]`.
    pub dw: Tensor4,
    /// Gradient with respect to the bias, length `O` (sums of `dy` over N, OH, OW).
    pub db: Vec<f32>,
}

/// Convolution forward: `x [N, C, H, W]`, `w [O, C, KH, KW]`, optional bias `b` of length `O`
/// -> `y [N, O, OH, OW]`.
///
/// PyTorch equivalent: `torch.nn.functional.conv2d(x, w, b, stride, padding)`.
///
/// ```
/// use fracture_tensor::{conv2d_forward, ConvParams, ConvWorkspace, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 3, 3], (1..=9).map(|v| v as f32).collect())?;
/// let w = Tensor4::from_vec([1, 1, 2, 2], vec![1.0; 4])?;
/// let y = conv2d_forward(&x, &w, Some(&[0.5]), ConvParams::default(), &mut ConvWorkspace::default())?;
/// assert_eq!(y.as_slice(), &[12.5, 16.5, 24.5, 28.5]);
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
    let d = dims(x.shape(), w.shape(), p, out);
    let (xs, wsl) = (x.as_slice(), w.as_slice());
    let (o, k, np) = (d.o, d.k, d.np);
    let col_len = if d.pointwise { 0 } else { k * np };
    let mut y = vec![0.0f32; d.n * o * np];
    let threads = rayon::current_num_threads().max(1);
    if d.n >= threads {
        // Parallel over the batch; each task uses its worker thread's buffer.
        ws.prepare(threads, col_len);
        let bufs = &ws.bufs;
        y.par_chunks_mut(o * np)
            .zip(xs.par_chunks(d.c * d.hw))
            .try_for_each(|(y_img, x_img)| {
                if d.pointwise {
                    return forward_gemm(wsl, x_img, b, y_img, o, k, np);
                }
                with_buf(bufs, |col| {
                    let col = &mut col[..col_len];
                    im2col_image(x_img, &d, 0, d.g.oh, col);
                    forward_gemm(wsl, col, b, y_img, o, k, np)
                })
            })?;
    } else {
        // Fewer images than threads: parallel im2col over channels, then the GEMM split by
        // output channels.
        ws.prepare(1, col_len);
        let col = ws.bufs[0].get_mut().unwrap_or_else(|e| e.into_inner());
        let col = &mut col[..col_len];
        let ob = o.div_ceil(threads);
        for (y_img, x_img) in y.chunks_exact_mut(o * np).zip(xs.chunks_exact(d.c * d.hw)) {
            let colm: &[f32] = if d.pointwise {
                x_img
            } else {
                let block = d.kk * np;
                col.par_chunks_mut(block)
                    .zip(x_img.par_chunks(d.hw))
                    .for_each(|(cb, plane)| im2col_channel(plane, &d.g, 0, d.g.oh, cb));
                col
            };
            y_img
                .par_chunks_mut(ob * np)
                .enumerate()
                .try_for_each(|(bi, yb)| {
                    let (o0, rows) = (bi * ob, yb.len() / np);
                    let wb = &wsl[o0 * k..(o0 + rows) * k];
                    forward_gemm(wb, colm, b.map(|b| &b[o0..o0 + rows]), yb, rows, k, np)
                })?;
        }
    }
    Tensor4::from_vec(out, y)
}

/// Convolution backward: given the forward inputs and the upstream gradient `dy` (shape of the
/// forward output), returns `dw`, `db` and, if `need_dx`, `dx`.
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
    let d = dims(x.shape(), w.shape(), p, out);
    let (xs, wsl, dys) = (x.as_slice(), w.as_slice(), dy.as_slice());
    let (o, k, np, ow) = (d.o, d.k, d.np, d.g.ow);
    let threads = rayon::current_num_threads().max(1);
    let col_len = if d.pointwise { 0 } else { k * np };
    ws.prepare(threads, col_len);

    // db: per output channel, image sums in f32 lanes combined in f64, in batch order.
    let db: Vec<f32> = (0..o)
        .into_par_iter()
        .map(|oi| {
            let acc: f64 = (0..d.n)
                .map(|ni| f64::from(sum_f32(&dys[(ni * o + oi) * np..][..np])))
                .sum();
            acc as f32
        })
        .collect();

    // dw = sum over chunks of dy_chunk * col_chunk^T; partials reduced in chunk order.
    let chunks = dw_chunks(d.n, d.g.oh);
    let part_len = o * k;
    let parts_len = chunks.len() * part_len;
    if ws.partials.len() < parts_len {
        ws.partials.resize(parts_len, 0.0);
    }
    let bufs = &ws.bufs;
    ws.partials[..parts_len]
        .par_chunks_mut(part_len)
        .zip(chunks.par_iter())
        .try_for_each(|(part, ch)| {
            with_buf(bufs, |col| {
                let rows = ch.oh1 - ch.oh0;
                let cols = rows * ow;
                for ni in ch.n0..ch.n1 {
                    let beta = if ni == ch.n0 { 0.0 } else { 1.0 };
                    // A = dy_img[:, oh0 * OW ..][.. cols], an O x cols block with row stride np.
                    let a = &dys[ni * o * np + ch.oh0 * ow..(ni + 1) * o * np];
                    let x_img = &xs[ni * d.c * d.hw..][..d.c * d.hw];
                    // B = col^T (cols x K), read through swapped strides.
                    let (bm, csb): (&[f32], usize) = if d.pointwise {
                        (&x_img[ch.oh0 * ow..], d.hw)
                    } else {
                        let col = &mut col[..k * cols];
                        im2col_image(x_img, &d, ch.oh0, rows, col);
                        (col, cols)
                    };
                    sgemm(
                        o,
                        cols,
                        k,
                        1.0,
                        a,
                        np as isize,
                        1,
                        bm,
                        1,
                        csb as isize,
                        beta,
                        part,
                        k as isize,
                        1,
                    )?;
                }
                Ok::<(), TensorError>(())
            })
        })?;
    let partials = &ws.partials[..parts_len];
    let mut dw = vec![0.0f32; part_len];
    const REDUCE_BLOCK: usize = 4096;
    dw.par_chunks_mut(REDUCE_BLOCK)
        .enumerate()
        .for_each(|(bi, dst)| {
            let (off, len) = (bi * REDUCE_BLOCK, dst.len());
            for part in partials.chunks_exact(part_len) {
                for (acc, v) in dst.iter_mut().zip(&part[off..off + len]) {
                    *acc += *v;
                }
            }
        });

    let dx = if need_dx {
        Some(Tensor4::from_vec(
            x.shape(),
            conv_dx(&d, wsl, dys, bufs, threads)?,
        )?)
    } else {
        None
    };
    Ok(Conv2dGrads {
        dx,
        dw: Tensor4::from_vec(w.shape(), dw)?,
        db,
    })
}

/// dx = col2im(W^T * dy) per image (for a pointwise conv, W^T * dy is dx itself).
fn conv_dx(
    d: &Dims,
    wsl: &[f32],
    dys: &[f32],
    bufs: &[Mutex<Vec<f32>>],
    threads: usize,
) -> Result<Vec<f32>> {
    let (o, k, np, kk, hw) = (d.o, d.k, d.np, d.kk, d.hw);
    let img = d.c * hw;
    let mut dx = vec![0.0f32; d.n * img];
    // dcol (or dx) rows r0.. = W^T[r0.., :] * dy_img; W^T is read through swapped strides.
    let dcol_gemm = |r0: usize, rows: usize, dy_img: &[f32], out: &mut [f32]| {
        sgemm(
            rows,
            o,
            np,
            1.0,
            &wsl[r0..],
            1,
            k as isize,
            dy_img,
            np as isize,
            1,
            0.0,
            out,
            np as isize,
            1,
        )
    };
    if d.n >= threads {
        dx.par_chunks_mut(img)
            .zip(dys.par_chunks(o * np))
            .try_for_each(|(dx_img, dy_img)| {
                if d.pointwise {
                    return dcol_gemm(0, k, dy_img, dx_img);
                }
                with_buf(bufs, |dcol| {
                    let dcol = &mut dcol[..k * np];
                    dcol_gemm(0, k, dy_img, dcol)?;
                    for (cb, plane) in dcol.chunks_exact(kk * np).zip(dx_img.chunks_exact_mut(hw)) {
                        col2im_channel(cb, &d.g, plane);
                    }
                    Ok(())
                })
            })?;
    } else {
        // Fewer images than threads: split the GEMM by rows, then col2im by channel.
        let rb = k.div_ceil(threads);
        let mut guard = bufs[0].lock().unwrap_or_else(|e| e.into_inner());
        for (dx_img, dy_img) in dx.chunks_exact_mut(img).zip(dys.chunks_exact(o * np)) {
            if d.pointwise {
                dx_img
                    .par_chunks_mut(rb * np)
                    .enumerate()
                    .try_for_each(|(bi, out)| dcol_gemm(bi * rb, out.len() / np, dy_img, out))?;
                continue;
            }
            let dcol = &mut guard[..k * np];
            dcol.par_chunks_mut(rb * np)
                .enumerate()
                .try_for_each(|(bi, out)| dcol_gemm(bi * rb, out.len() / np, dy_img, out))?;
            let dcol: &[f32] = dcol;
            dx_img
                .par_chunks_mut(hw)
                .zip(dcol.par_chunks(kk * np))
                .for_each(|(plane, cb)| col2im_channel(cb, &d.g, plane));
        }
    }
    Ok(dx)
}

//! Naive reference kernels: plain nested loops, obviously correct, single-threaded.
//!
//! They are the oracle the fast kernels are tested against (and a fallback when debugging).
//! Sums are accumulated in f64 so the oracle is at least as accurate as the fast path. Inputs are
//! validated exactly as in the fast kernels, so the same bad input gives the same error.

use crate::batch_stats::BatchStats;
use crate::bn_act_pool::{
    check_dy, check_forward as check_bn_act_pool, BnActPoolGrads, BnActPoolParams, BnActStats,
};
use crate::conv::{check_backward, check_forward, Conv2dGrads, ConvParams};
use crate::error::Result;
use crate::pool::{check_gap_backward, check_max_pool_backward, pool_output_shape, PoolParams};
use crate::relu::check_same_shape;
use crate::tensor::Tensor4;

/// Direct convolution by seven nested loops, any number of groups; same contract as
/// [`conv2d_forward`](crate::conv2d_forward).
///
/// Grouped convolution (PyTorch's `groups`): output channel `oi` belongs to group
/// `oi / (O / groups)` and sums over that group's `C / groups` input channels only, input
/// channel `gi * C / groups + ci` meeting weight `w[oi, ci]`.
///
/// ```
/// use fracture_tensor::{naive, ConvParams, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0])?;
/// let w = Tensor4::from_vec([1, 1, 1, 1], vec![3.0])?;
/// let y = naive::conv2d_forward(&x, &w, Some(&[1.0]), ConvParams::default())?;
/// assert_eq!(y.as_slice(), &[4.0, 7.0, 10.0, 13.0]);
/// // Two groups of one channel: each output sees only its own input channel.
/// let x = Tensor4::from_vec([1, 2, 1, 1], vec![1.0, 2.0])?;
/// let w = Tensor4::from_vec([2, 1, 1, 1], vec![3.0, 5.0])?;
/// let p = ConvParams { groups: 2, ..ConvParams::default() };
/// assert_eq!(naive::conv2d_forward(&x, &w, None, p)?.as_slice(), &[3.0, 10.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn conv2d_forward(
    x: &Tensor4,
    w: &Tensor4,
    b: Option<&[f32]>,
    p: ConvParams,
) -> Result<Tensor4> {
    let [n, o, oh, ow] = check_forward("naive::conv2d_forward", x, w, b, p)?;
    let [_, _, h, wd] = x.shape();
    // Input channels per group (the weight's second dimension) and output channels per group.
    let [_, c, kh, kw] = w.shape();
    let og = o / p.groups;
    let (xa, wa) = (x.array(), w.array());
    let mut y = Tensor4::zeros([n, o, oh, ow]);
    let ya = y.array_mut();
    for ni in 0..n {
        for oi in 0..o {
            for yi in 0..oh {
                for xi in 0..ow {
                    let mut acc = b.map_or(0.0, |b| f64::from(b[oi]));
                    for ci in 0..c {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let ih = (yi * p.stride[0] + ki) as isize - p.padding[0] as isize;
                                let iw = (xi * p.stride[1] + kj) as isize - p.padding[1] as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                    continue;
                                }
                                let xc = oi / og * c + ci;
                                let xv = xa[[ni, xc, ih as usize, iw as usize]];
                                acc += f64::from(xv) * f64::from(wa[[oi, ci, ki, kj]]);
                            }
                        }
                    }
                    ya[[ni, oi, yi, xi]] = acc as f32;
                }
            }
        }
    }
    Ok(y)
}

/// Convolution backward by direct nested loops, any number of groups (indexed as in
/// [`conv2d_forward`]); same contract as [`conv2d_backward`](crate::conv2d_backward).
///
/// ```
/// use fracture_tensor::{naive, ConvParams, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 1, 2], vec![1.0, 2.0])?;
/// let w = Tensor4::from_vec([1, 1, 1, 1], vec![3.0])?;
/// let dy = Tensor4::from_vec([1, 1, 1, 2], vec![1.0, 1.0])?;
/// let g = naive::conv2d_backward(&x, &w, &dy, ConvParams::default(), true)?;
/// assert_eq!((g.dw.as_slice(), g.db.as_slice()), (&[3.0][..], &[2.0][..]));
/// assert_eq!(g.dx.unwrap().as_slice(), &[3.0, 3.0]);
/// // Depthwise, two channels: each weight's gradient sees only its own channel.
/// let x = Tensor4::from_vec([1, 2, 1, 1], vec![1.0, 2.0])?;
/// let w = Tensor4::from_vec([2, 1, 1, 1], vec![3.0, 5.0])?;
/// let dy = Tensor4::from_vec([1, 2, 1, 1], vec![1.0, 1.0])?;
/// let p = ConvParams { groups: 2, ..ConvParams::default() };
/// let g = naive::conv2d_backward(&x, &w, &dy, p, true)?;
/// assert_eq!((g.dw.as_slice(), g.dx.unwrap().as_slice()), (&[1.0, 2.0][..], &[3.0, 5.0][..]));
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn conv2d_backward(
    x: &Tensor4,
    w: &Tensor4,
    dy: &Tensor4,
    p: ConvParams,
    need_dx: bool,
) -> Result<Conv2dGrads> {
    let [n, o, oh, ow] = check_backward("naive::conv2d_backward", x, w, dy, p)?;
    let xs = x.shape();
    let [_, xc_count, h, wd] = xs;
    let ws = w.shape();
    // Input channels per group (the weight's second dimension) and output channels per group.
    let [_, c, kh, kw] = ws;
    let og = o / p.groups;
    let (xa, wa, dya) = (x.array(), w.array(), dy.array());
    let mut dx = vec![0.0f64; x.len()];
    let mut dw = vec![0.0f64; w.len()];
    let mut db = vec![0.0f64; o];
    for ni in 0..n {
        for oi in 0..o {
            for yi in 0..oh {
                for xi in 0..ow {
                    let g = f64::from(dya[[ni, oi, yi, xi]]);
                    db[oi] += g;
                    for ci in 0..c {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let ih = (yi * p.stride[0] + ki) as isize - p.padding[0] as isize;
                                let iw = (xi * p.stride[1] + kj) as isize - p.padding[1] as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                    continue;
                                }
                                let (ih, iw) = (ih as usize, iw as usize);
                                let xc = oi / og * c + ci;
                                let wi = ((oi * c + ci) * kh + ki) * kw + kj;
                                let xi_flat = ((ni * xc_count + xc) * h + ih) * wd + iw;
                                dw[wi] += g * f64::from(xa[[ni, xc, ih, iw]]);
                                dx[xi_flat] += g * f64::from(wa[[oi, ci, ki, kj]]);
                            }
                        }
                    }
                }
            }
        }
    }
    let to32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
    Ok(Conv2dGrads {
        dx: if need_dx {
            Some(Tensor4::from_vec(xs, to32(dx))?)
        } else {
            None
        },
        dw: Tensor4::from_vec(ws, to32(dw))?,
        db: to32(db),
    })
}

/// Max pooling forward by nested loops; same contract as
/// [`max_pool2d_forward`](crate::max_pool2d_forward).
///
/// ```
/// use fracture_tensor::{naive, PoolParams, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 1, 3], vec![1.0, 5.0, 2.0])?;
/// let p = PoolParams { kernel: [1, 2], stride: [1, 1], padding: [0, 0] };
/// let (y, arg) = naive::max_pool2d_forward(&x, p)?;
/// assert_eq!((y.as_slice(), arg.as_slice()), (&[5.0, 5.0][..], &[1u32, 1][..]));
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn max_pool2d_forward(x: &Tensor4, p: PoolParams) -> Result<(Tensor4, Vec<u32>)> {
    let [n, c, oh, ow] = pool_output_shape("naive::max_pool2d_forward", x.shape(), p)?;
    let [_, _, h, wd] = x.shape();
    let xa = x.array();
    let mut y = Tensor4::zeros([n, c, oh, ow]);
    let mut arg = vec![0u32; y.len()];
    let ya = y.array_mut();
    for ni in 0..n {
        for ci in 0..c {
            for yi in 0..oh {
                for xi in 0..ow {
                    let mut best = f32::NEG_INFINITY;
                    let mut best_idx: Option<usize> = None;
                    for ki in 0..p.kernel[0] {
                        for kj in 0..p.kernel[1] {
                            let ih = (yi * p.stride[0] + ki) as isize - p.padding[0] as isize;
                            let iw = (xi * p.stride[1] + kj) as isize - p.padding[1] as isize;
                            if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                continue;
                            }
                            let v = xa[[ni, ci, ih as usize, iw as usize]];
                            if best_idx.is_none() || v > best || (v.is_nan() && !best.is_nan()) {
                                best = v;
                                best_idx = Some(ih as usize * wd + iw as usize);
                            }
                        }
                    }
                    ya[[ni, ci, yi, xi]] = best;
                    // Every window holds a real element (padding <= kernel / 2 is checked).
                    arg[((ni * c + ci) * oh + yi) * ow + xi] = best_idx.unwrap_or(0) as u32;
                }
            }
        }
    }
    Ok((y, arg))
}

/// Max pooling backward by a scatter loop; same contract as
/// [`max_pool2d_backward`](crate::max_pool2d_backward).
///
/// ```
/// use fracture_tensor::{naive, Tensor4};
/// let dy = Tensor4::from_vec([1, 1, 1, 2], vec![1.0, 2.0])?;
/// let dx = naive::max_pool2d_backward(&dy, &[1, 1], [1, 1, 1, 3])?;
/// assert_eq!(dx.as_slice(), &[0.0, 3.0, 0.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn max_pool2d_backward(dy: &Tensor4, argmax: &[u32], x_shape: [usize; 4]) -> Result<Tensor4> {
    let plane = check_max_pool_backward("naive::max_pool2d_backward", dy, argmax, x_shape)?;
    let [n, c, oh, ow] = dy.shape();
    let mut dx = Tensor4::zeros(x_shape);
    let dxs = dx.as_slice_mut();
    let dys = dy.as_slice();
    for ni in 0..n {
        for ci in 0..c {
            for yi in 0..oh {
                for xi in 0..ow {
                    let k = ((ni * c + ci) * oh + yi) * ow + xi;
                    dxs[(ni * c + ci) * plane + argmax[k] as usize] += dys[k];
                }
            }
        }
    }
    Ok(dx)
}

/// Global average pooling forward by nested loops; same contract as
/// [`global_avg_pool_forward`](crate::global_avg_pool_forward).
///
/// ```
/// use fracture_tensor::{naive, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 2, 1], vec![1.0, 2.0])?;
/// assert_eq!(naive::global_avg_pool_forward(&x).as_slice(), &[1.5]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn global_avg_pool_forward(x: &Tensor4) -> Tensor4 {
    let [n, c, h, w] = x.shape();
    let xa = x.array();
    let mut y = Tensor4::zeros([n, c, 1, 1]);
    let ya = y.array_mut();
    for ni in 0..n {
        for ci in 0..c {
            let mut acc = 0.0f64;
            for hi in 0..h {
                for wi in 0..w {
                    acc += f64::from(xa[[ni, ci, hi, wi]]);
                }
            }
            ya[[ni, ci, 0, 0]] = (acc / (h * w) as f64) as f32;
        }
    }
    y
}

/// Global average pooling backward by nested loops; same contract as
/// [`global_avg_pool_backward`](crate::global_avg_pool_backward).
///
/// ```
/// use fracture_tensor::{naive, Tensor4};
/// let dy = Tensor4::from_vec([1, 1, 1, 1], vec![2.0])?;
/// assert_eq!(naive::global_avg_pool_backward(&dy, [1, 1, 1, 2])?.as_slice(), &[1.0, 1.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn global_avg_pool_backward(dy: &Tensor4, x_shape: [usize; 4]) -> Result<Tensor4> {
    check_gap_backward("naive::global_avg_pool_backward", dy, x_shape)?;
    let [n, c, h, w] = x_shape;
    let dya = dy.array();
    let mut dx = Tensor4::zeros(x_shape);
    let dxa = dx.array_mut();
    for ni in 0..n {
        for ci in 0..c {
            let g = dya[[ni, ci, 0, 0]] / (h * w) as f32;
            for hi in 0..h {
                for wi in 0..w {
                    dxa[[ni, ci, hi, wi]] = g;
                }
            }
        }
    }
    Ok(dx)
}

/// ReLU forward element by element; same contract as [`relu_forward`](crate::relu_forward).
///
/// ```
/// use fracture_tensor::{naive, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 1, 2], vec![-3.0, 3.0])?;
/// assert_eq!(naive::relu_forward(&x).as_slice(), &[0.0, 3.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn relu_forward(x: &Tensor4) -> Tensor4 {
    let mut y = x.clone();
    for v in y.as_slice_mut() {
        if *v < 0.0 {
            *v = 0.0;
        }
    }
    y
}

/// ReLU6 forward element by element; same contract as
/// [`relu6_forward_inplace`](crate::relu6_forward_inplace), out of place.
///
/// ```
/// use fracture_tensor::{naive, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 1, 3], vec![-1.0, 3.0, 9.0]).unwrap();
/// assert_eq!(naive::relu6_forward(&x).as_slice(), &[0.0, 3.0, 6.0]);
/// ```
pub fn relu6_forward(x: &Tensor4) -> Tensor4 {
    let mut y = x.clone();
    for v in y.as_slice_mut() {
        *v = v.clamp(0.0, 6.0);
    }
    y
}

/// ReLU6 backward element by element: `dy` where `0 < y < 6`, else 0; same contract as
/// [`relu6_backward_inplace`](crate::relu6_backward_inplace), out of place.
///
/// ```
/// use fracture_tensor::{naive, Tensor4};
/// let y = Tensor4::from_vec([1, 1, 1, 3], vec![0.0, 3.0, 6.0]).unwrap();
/// let dy = Tensor4::from_vec([1, 1, 1, 3], vec![1.0; 3]).unwrap();
/// assert_eq!(naive::relu6_backward(&y, &dy).unwrap().as_slice(), &[0.0, 1.0, 0.0]);
/// ```
pub fn relu6_backward(y: &Tensor4, dy: &Tensor4) -> Result<Tensor4> {
    check_same_shape("naive::relu6_backward", y, dy)?;
    let mut dx = dy.clone();
    for (d, &v) in dx.as_slice_mut().iter_mut().zip(y.as_slice()) {
        if !(v > 0.0 && v < 6.0) {
            *d = 0.0;
        }
    }
    Ok(dx)
}

/// ReLU backward element by element; same contract as [`relu_backward`](crate::relu_backward).
///
/// ```
/// use fracture_tensor::{naive, Tensor4};
/// let y = Tensor4::from_vec([1, 1, 1, 2], vec![0.0, 3.0])?;
/// let dy = Tensor4::from_vec([1, 1, 1, 2], vec![1.0, 1.0])?;
/// assert_eq!(naive::relu_backward(&y, &dy)?.as_slice(), &[0.0, 1.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn relu_backward(y: &Tensor4, dy: &Tensor4) -> Result<Tensor4> {
    check_same_shape("naive::relu_backward", y, dy)?;
    let mut dx = dy.clone();
    for (d, &v) in dx.as_slice_mut().iter_mut().zip(y.as_slice()) {
        if v.is_nan() || v <= 0.0 {
            *d = 0.0;
        }
    }
    Ok(dx)
}

/// `C = alpha * A * B + beta * C` by a triple loop (f64 accumulation); same contract and
/// checks as [`sgemm`](crate::sgemm).
///
/// ```
/// let a = [1.0, 2.0, 3.0, 4.0];
/// let mut c = [1.0f32; 4];
/// fracture_tensor::naive::gemm(2, 2, 2, 1.0, &a, 2, 1, &a, 1, 2, 1.0, &mut c, 2, 1)?;
/// assert_eq!(c, [6.0, 12.0, 12.0, 26.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    rsa: isize,
    csa: isize,
    b: &[f32],
    rsb: isize,
    csb: isize,
    beta: f32,
    c: &mut [f32],
    rsc: isize,
    csc: isize,
) -> Result<()> {
    let (ba, bb, bc) = crate::gemm::check_all(
        "naive::gemm",
        m,
        k,
        n,
        a,
        rsa,
        csa,
        b,
        rsb,
        csb,
        c,
        rsc,
        csc,
    )?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let at = |base: usize, i: usize, j: usize, rs: isize, cs: isize| -> usize {
        (base as isize + i as isize * rs + j as isize * cs) as usize
    };
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                acc += f64::from(a[at(ba, i, p, rsa, csa)]) * f64::from(b[at(bb, p, j, rsb, csb)]);
            }
            let ci = at(bc, i, j, rsc, csc);
            let old = if beta == 0.0 {
                0.0
            } else {
                f64::from(beta) * f64::from(c[ci])
            };
            c[ci] = (f64::from(alpha) * acc + old) as f32;
        }
    }
    Ok(())
}

/// Per channel, the mean and biased variance in f64, by two passes (the mean, then the squared
/// deviations).
fn channel_mean_var(x: &Tensor4) -> Vec<BatchStats> {
    let [n, c, h, w] = x.shape();
    let xa = x.array();
    let m = (n * h * w) as f64;
    (0..c)
        .map(|ci| {
            let mut sum = 0.0;
            for ni in 0..n {
                for yi in 0..h {
                    for xi in 0..w {
                        sum += f64::from(xa[[ni, ci, yi, xi]]);
                    }
                }
            }
            let mean = sum / m;
            let mut sq = 0.0;
            for ni in 0..n {
                for yi in 0..h {
                    for xi in 0..w {
                        let d = f64::from(xa[[ni, ci, yi, xi]]) - mean;
                        sq += d * d;
                    }
                }
            }
            BatchStats { mean, var: sq / m }
        })
        .collect()
}

/// The batch norm's per-channel `(mean, 1 / sqrt(var + eps))` in f64 for `p.stats`, and the
/// batch statistics when they are the batch's own.
fn bn_constants(x: &Tensor4, p: &BnActPoolParams) -> (Vec<(f64, f64)>, Option<Vec<BatchStats>>) {
    let eps = f64::from(p.eps);
    let inv = |var: f64| 1.0 / (var + eps).sqrt();
    match p.stats {
        BnActStats::Batch => {
            let stats = channel_mean_var(x);
            let k = stats.iter().map(|s| (s.mean, inv(s.var))).collect();
            (k, Some(stats))
        }
        BnActStats::Given { mean, var } => {
            let k = mean
                .iter()
                .zip(var)
                .map(|(&m, &v)| (f64::from(m), inv(f64::from(v))))
                .collect();
            (k, None)
        }
    }
}

/// `x_hat` (normalised input) and `z` (batch-norm output) at every element, in f64.
fn bn_act_pool_normalise(
    x: &Tensor4,
    p: &BnActPoolParams,
    k: &[(f64, f64)],
) -> (Vec<f64>, Vec<f64>) {
    let [n, c, h, w] = x.shape();
    let xa = x.array();
    let mut x_hat = vec![0.0; x.len()];
    let mut z = vec![0.0; x.len()];
    for ni in 0..n {
        for ci in 0..c {
            let (mean, inv_std) = k[ci];
            for yi in 0..h {
                for xi in 0..w {
                    let i = ((ni * c + ci) * h + yi) * w + xi;
                    x_hat[i] = (f64::from(xa[[ni, ci, yi, xi]]) - mean) * inv_std;
                    z[i] = x_hat[i] * f64::from(p.gamma[ci]) + f64::from(p.beta[ci]);
                }
            }
        }
    }
    (x_hat, z)
}

/// The activation output `min(max(z, 0), cap)` as f32 (NaN stays NaN).
fn bn_act(z: f64, cap: f32) -> f32 {
    let r = if z < 0.0 { 0.0 } else { z as f32 };
    if r > cap {
        cap
    } else {
        r
    }
}

/// Index (within the whole tensor) of the element each output takes: itself without pooling,
/// the 2x2 window's first maximum of the activation `a` with pooling.
fn bn_act_pool_sources(shape: [usize; 4], pool: bool, a: &[f32]) -> Vec<usize> {
    let [n, c, h, w] = shape;
    if !pool {
        return (0..a.len()).collect();
    }
    let mut src = Vec::with_capacity(n * c * (h / 2) * (w / 2));
    for ni in 0..n {
        for ci in 0..c {
            let plane = (ni * c + ci) * h * w;
            for yi in 0..h / 2 {
                for xi in 0..w / 2 {
                    let mut best = plane + 2 * yi * w + 2 * xi;
                    for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                        let i = plane + (2 * yi + dy) * w + 2 * xi + dx;
                        let (v, b) = (a[i], a[best]);
                        if v > b || (v.is_nan() && !b.is_nan()) {
                            best = i;
                        }
                    }
                    src.push(best);
                }
            }
        }
    }
    src
}

/// Batch norm (statistics in f64, two passes), ReLU capped at `p.cap` and, when `p.pool`, a
/// 2x2 max pool, each step written out on its own; the oracle of
/// [`bn_act_pool_forward`](crate::bn_act_pool_forward), with the same checks. Returns the
/// output and, with batch statistics, the batch mean and biased variance per channel.
///
/// ```
/// use fracture_tensor::{naive, BnActPoolParams, BnActStats, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0])?;
/// let given = BnActStats::Given { mean: &[2.0], var: &[1.0] };
/// let p = BnActPoolParams { eps: 1e-3, ..BnActPoolParams::relu(&[1.0], &[0.0], given) };
/// let (y, stats) = naive::bn_act_pool_forward(&x, &p)?;
/// assert!((y.as_slice()[0] - 2.0 / 1.001f32.sqrt()).abs() < 1e-6);
/// assert!(stats.is_none());
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn bn_act_pool_forward(
    x: &Tensor4,
    p: &BnActPoolParams,
) -> Result<(Tensor4, Option<Vec<BatchStats>>)> {
    check_bn_act_pool("naive::bn_act_pool_forward", x.shape(), p)?;
    let (k, stats) = bn_constants(x, p);
    let (_, z) = bn_act_pool_normalise(x, p, &k);
    let a: Vec<f32> = z.iter().map(|&z| bn_act(z, p.cap)).collect();
    let src = bn_act_pool_sources(x.shape(), p.pool, &a);
    let y = src.iter().map(|&i| a[i]).collect();
    Ok((Tensor4::from_vec(p.output_shape(x.shape()), y)?, stats))
}

/// Backward of [`bn_act_pool_forward`] by the textbook formulas in f64: `dy` routed to the
/// window maxima, masked where the activation is flat (`z <= 0` or `z >= cap`), giving
/// `dz`; `dbeta = sum dz`, `dgamma = sum dz * x_hat`; with batch statistics `dx = gamma / sigma
/// * (dz - mean(dz) - x_hat * mean(dz * x_hat))`, with given ones `dx = gamma / sigma * dz`.
/// The oracle of [`bn_act_pool_backward`](crate::bn_act_pool_backward); it recomputes the
/// forward from `x` instead of a cache.
///
/// ```
/// use fracture_tensor::{naive, BnActPoolParams, BnActStats, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0])?;
/// let p = BnActPoolParams::relu(&[2.0], &[0.0], BnActStats::Given { mean: &[0.0], var: &[1.0] });
/// let dy = Tensor4::from_vec([1, 1, 1, 1], vec![1.0])?;
/// let g = naive::bn_act_pool_backward(&x, &p, &dy)?;
/// assert_eq!(g.dbeta, [1.0]);
/// assert_eq!(g.dx.as_slice()[..3], [0.0, 0.0, 0.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn bn_act_pool_backward(
    x: &Tensor4,
    p: &BnActPoolParams,
    dy: &Tensor4,
) -> Result<BnActPoolGrads> {
    let op = "naive::bn_act_pool_backward";
    check_bn_act_pool(op, x.shape(), p)?;
    check_dy(op, dy, x.shape(), p.pool)?;
    let [n, c, h, w] = x.shape();
    let (k, _) = bn_constants(x, p);
    let (x_hat, z) = bn_act_pool_normalise(x, p, &k);
    let a: Vec<f32> = z.iter().map(|&z| bn_act(z, p.cap)).collect();
    let src = bn_act_pool_sources(x.shape(), p.pool, &a);
    // dz: the gradient at the batch norm's output.
    let mut dz = vec![0.0f64; x.len()];
    for (&i, &g) in src.iter().zip(dy.as_slice()) {
        let passes = z[i] > 0.0 && z[i] < f64::from(p.cap);
        if passes {
            dz[i] += f64::from(g);
        }
    }
    let m = (n * h * w) as f64;
    let mut dgamma = vec![0.0f32; c];
    let mut dbeta = vec![0.0f32; c];
    let mut dx = vec![0.0f32; x.len()];
    for ci in 0..c {
        let idx: Vec<usize> = (0..n)
            .flat_map(|ni| {
                let plane = (ni * c + ci) * h * w;
                plane..plane + h * w
            })
            .collect();
        let sum_dz: f64 = idx.iter().map(|&i| dz[i]).sum();
        let sum_dz_xhat: f64 = idx.iter().map(|&i| dz[i] * x_hat[i]).sum();
        dbeta[ci] = sum_dz as f32;
        dgamma[ci] = sum_dz_xhat as f32;
        let scale = f64::from(p.gamma[ci]) * k[ci].1;
        for &i in &idx {
            let g = if p.stats.is_batch() {
                dz[i] - sum_dz / m - x_hat[i] * sum_dz_xhat / m
            } else {
                dz[i]
            };
            dx[i] = (scale * g) as f32;
        }
    }
    Ok(BnActPoolGrads {
        dx: Tensor4::from_vec(x.shape(), dx)?,
        dgamma,
        dbeta,
    })
}

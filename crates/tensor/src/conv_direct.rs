//! Direct (not im2col + GEMM) grouped and depthwise 2-D convolution, forward and backward,
//! for `groups > 1`. Inputs are validated by the callers in `conv`.
//!
//! Everything works plane by plane: one `(image, channel)` plane of `x`, `y`, `dy` or `dx` is
//! contiguous in NCHW, so the forward pass and the weight gradient run in parallel over the
//! `(image, output channel)` planes of `y` / `dy`, and the input gradient over the
//! `(image, input channel)` planes of `dx`. A depthwise convolution with one output channel per
//! input channel (EfficientNet-Lite, MobileNet) does its whole backward pass in one parallel
//! sweep, reading each plane of `x` and `dy` once.
//!
//! The inner loops run along contiguous rows so the compiler vectorises them: an input plane is
//! first copied into a zero-padded, *phase-split* buffer (for horizontal stride `sw`, row
//! element `t` of the padded row goes to phase `t % sw`, position `t / sw`), after which the
//! input elements that kernel column `kj` meets along an output row are one contiguous slice,
//! whatever the stride. The forward pass keeps a block of up to 32 outputs in registers over all
//! kernel taps; `dx` is scattered (`row += w * dy_row`) into the same kind of buffer and copied
//! out; `dw` is a lane-wise dot product per tap.
//!
//! Determinism: every output element is produced by the same sequence of operations whatever
//! the thread count. The weight and bias gradients get one partial per `(image, output channel)`
//! plane, added over the images in index order. The kernels are compiled twice on x86-64
//! (baseline and AVX2, picked at run time); both do the same separate multiplies and adds in
//! the same order (no fused multiply-add), so they give the same bits.

use rayon::prelude::*;

use crate::conv::ConvParams;
use crate::sum::sum_f32;
use crate::tensor::Tensor4;
use crate::workspace::{with_buf, ConvWorkspace};

/// Geometry of one plane-by-plane convolution, with the layout of the phase-split buffer.
#[derive(Clone, Copy, Debug)]
struct Plane {
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    oh: usize,
    ow: usize,
    /// Length of one phase of a padded row: `ceil((W + 2 pw) / sw)`.
    pl: usize,
    /// Length of one buffer row (all phases): `sw * pl`.
    rw: usize,
}

impl Plane {
    fn new(x: [usize; 4], w: [usize; 4], p: ConvParams, out: [usize; 4]) -> Self {
        let (sw, pw) = (p.stride[1], p.padding[1]);
        let pl = (x[3] + 2 * pw).div_ceil(sw);
        Plane {
            h: x[2],
            w: x[3],
            kh: w[2],
            kw: w[3],
            sh: p.stride[0],
            sw,
            ph: p.padding[0],
            pw,
            oh: out[2],
            ow: out[3],
            pl,
            rw: sw * pl,
        }
    }

    /// Elements of one phase-split plane buffer (`H` rows; padding rows are skipped, not stored).
    fn buf_len(&self) -> usize {
        self.h * self.rw
    }

    /// The kernel rows `lo..hi` that meet the input for output row `oy`
    /// (those with `0 <= oy * sh + ki - ph < H`).
    fn krows(&self, oy: usize) -> (usize, usize) {
        let base = oy * self.sh;
        let lo = self.ph.saturating_sub(base);
        let hi = self.kh.min((self.h + self.ph).saturating_sub(base));
        (lo, hi.max(lo))
    }

    /// Offset, within a buffer row, of the slice kernel column `kj` meets for output column 0.
    fn tap(&self, kj: usize) -> usize {
        (kj % self.sw) * self.pl + kj / self.sw
    }
}

/// Whether the AVX2 versions of the kernels can run (cached by the standard library).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
}

/// Defines `$name(args)`, which runs the `#[inline(always)]` function `$body(args)` compiled
/// with AVX2 when the CPU has it, and the baseline build otherwise.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident => $body:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if has_avx2() {
                    // SAFETY: the CPU supports AVX2 (checked at run time just above).
                    unsafe { avx2($($arg),*) };
                    return;
                }
            }
            $body($($arg),*)
        }
    };
}

/// Copies one input plane (`H x W`) into the zero-padded phase-split buffer (`H x rw`).
fn prep_plane(g: &Plane, x: &[f32], buf: &mut [f32]) {
    for (row, brow) in x.chunks_exact(g.w).zip(buf.chunks_exact_mut(g.rw)) {
        if g.sw == 1 {
            brow[..g.pw].fill(0.0);
            brow[g.pw..g.pw + g.w].copy_from_slice(row);
            brow[g.pw + g.w..].fill(0.0);
            continue;
        }
        for (r, phase) in brow.chunks_exact_mut(g.pl).enumerate() {
            // Positions j with padded index t = j * sw + r inside the real row [pw, pw + W).
            let j0 = g.pw.saturating_sub(r).div_ceil(g.sw).min(g.pl);
            let j1 = (g.pw + g.w)
                .saturating_sub(r)
                .div_ceil(g.sw)
                .clamp(j0, g.pl);
            phase[..j0].fill(0.0);
            for (j, v) in phase[j0..j1].iter_mut().enumerate() {
                *v = row[(j0 + j) * g.sw + r - g.pw];
            }
            phase[j1..].fill(0.0);
        }
    }
}

/// Copies the interior of a phase-split buffer back to a plane (`H x W`): the inverse of
/// [`prep_plane`] (padding positions are dropped).
fn unprep_plane(g: &Plane, buf: &[f32], x: &mut [f32]) {
    for (brow, row) in buf.chunks_exact(g.rw).zip(x.chunks_exact_mut(g.w)) {
        if g.sw == 1 {
            row.copy_from_slice(&brow[g.pw..g.pw + g.w]);
        } else {
            for (ix, v) in row.iter_mut().enumerate() {
                let t = ix + g.pw;
                *v = brow[(t % g.sw) * g.pl + t / g.sw];
            }
        }
    }
}

/// `L` outputs of row `oy` from column `x0`: starts from `init` (or the values in `yrow`), then
/// adds every tap in `(ki, kj)` order. The accumulators stay in registers across the taps.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fwd_block<const L: usize>(
    g: &Plane,
    xb: &[f32],
    k: &[f32],
    init: Option<f32>,
    oy: usize,
    (lo, hi): (usize, usize),
    x0: usize,
    yrow: &mut [f32],
) {
    let dst = &mut yrow[x0..x0 + L];
    let mut acc = [0.0f32; L];
    match init {
        Some(b) => acc.fill(b),
        None => acc.copy_from_slice(dst),
    }
    for ki in lo..hi {
        let iy = oy * g.sh + ki - g.ph;
        let brow = &xb[iy * g.rw..(iy + 1) * g.rw];
        let krow = &k[ki * g.kw..(ki + 1) * g.kw];
        for (kj, &wv) in krow.iter().enumerate() {
            let src = &brow[g.tap(kj) + x0..][..L];
            for (a, &s) in acc.iter_mut().zip(src) {
                *a += wv * s;
            }
        }
    }
    dst.copy_from_slice(&acc);
}

/// `y (+)= conv(x, k)` for one prepared input plane `xb` and one `KH x KW` kernel; `init` is
/// `Some(bias)` for the first input channel of the group (overwrite), `None` to add.
#[inline(always)]
fn fwd_plane_body(g: &Plane, xb: &[f32], k: &[f32], init: Option<f32>, y: &mut [f32]) {
    for (oy, yrow) in y.chunks_exact_mut(g.ow).enumerate() {
        let kr = g.krows(oy);
        let mut x0 = 0;
        while x0 + 32 <= g.ow {
            fwd_block::<32>(g, xb, k, init, oy, kr, x0, yrow);
            x0 += 32;
        }
        while x0 + 8 <= g.ow {
            fwd_block::<8>(g, xb, k, init, oy, kr, x0, yrow);
            x0 += 8;
        }
        while x0 < g.ow {
            fwd_block::<1>(g, xb, k, init, oy, kr, x0, yrow);
            x0 += 1;
        }
    }
}

multiversion!(
    /// See [`fwd_plane_body`].
    fn fwd_plane => fwd_plane_body(g: &Plane, xb: &[f32], k: &[f32], init: Option<f32>, y: &mut [f32])
);

/// Lanes of the dot products of the weight gradient.
const DOT_LANES: usize = 16;

/// `lanes += a * b` element-wise, element `i` going to lane `i % 16` (and the final partial
/// block to the first lanes), so the compiler can keep the lanes in SIMD registers.
#[inline(always)]
fn dot_acc(lanes: &mut [f32; DOT_LANES], a: &[f32], b: &[f32]) {
    let mut ca = a.chunks_exact(DOT_LANES);
    let mut cb = b.chunks_exact(DOT_LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..DOT_LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut l0 = 0;
    if ra.len() >= 8 {
        let (a8, b8) = (&ra[..8], &rb[..8]);
        for l in 0..8 {
            lanes[l] += a8[l] * b8[l];
        }
        l0 = 8;
    }
    for l in l0..ra.len() {
        lanes[l] += ra[l] * rb[l];
    }
}

/// Partial weight gradient of one plane pair: `dw[ki, kj] = sum dy[oy, ox] * x[iy, ix]` over
/// the plane, for the prepared input plane `xb`; written to `dw` (`KH * KW`).
#[inline(always)]
fn dw_plane_body(g: &Plane, xb: &[f32], dy: &[f32], dw: &mut [f32]) {
    for ki in 0..g.kh {
        for kj in 0..g.kw {
            let off = g.tap(kj);
            let mut lanes = [0.0f32; DOT_LANES];
            for (oy, drow) in dy.chunks_exact(g.ow).enumerate() {
                let iy = oy * g.sh + ki;
                if iy < g.ph || iy - g.ph >= g.h {
                    continue;
                }
                let src = &xb[(iy - g.ph) * g.rw + off..][..g.ow];
                dot_acc(&mut lanes, drow, src);
            }
            // Pairwise combination of the lanes, in a fixed order.
            let mut width = DOT_LANES;
            while width > 1 {
                width /= 2;
                for i in 0..width {
                    lanes[i] += lanes[i + width];
                }
            }
            dw[ki * g.kw + kj] = lanes[0];
        }
    }
}

multiversion!(
    /// See [`dw_plane_body`].
    fn dw_plane => dw_plane_body(g: &Plane, xb: &[f32], dy: &[f32], dw: &mut [f32])
);

/// Scatters one `dy` plane through kernel `k` into a phase-split input-gradient buffer:
/// `buf[row iy][tap kj][ox] += k[ki, kj] * dy[oy, ox]`, in `(oy, ki, kj)` order.
#[inline(always)]
fn dx_plane_body(g: &Plane, dy: &[f32], k: &[f32], buf: &mut [f32]) {
    for (oy, drow) in dy.chunks_exact(g.ow).enumerate() {
        let (lo, hi) = g.krows(oy);
        for ki in lo..hi {
            let iy = oy * g.sh + ki - g.ph;
            let brow = &mut buf[iy * g.rw..(iy + 1) * g.rw];
            let krow = &k[ki * g.kw..(ki + 1) * g.kw];
            for (kj, &wv) in krow.iter().enumerate() {
                let dst = &mut brow[g.tap(kj)..][..g.ow];
                for (t, &d) in dst.iter_mut().zip(drow) {
                    *t += wv * d;
                }
            }
        }
    }
}

multiversion!(
    /// See [`dx_plane_body`].
    fn dx_plane => dx_plane_body(g: &Plane, dy: &[f32], k: &[f32], buf: &mut [f32])
);

/// Channel counts of a grouped convolution.
#[derive(Clone, Copy, Debug)]
struct Groups {
    c: usize,
    o: usize,
    /// Input channels per group, `C / groups` (the weight's second dimension).
    cg: usize,
    /// Output channels per group, `O / groups`.
    og: usize,
    /// `KH * KW`.
    kk: usize,
}

fn groups(x: [usize; 4], w: [usize; 4], p: ConvParams) -> Groups {
    Groups {
        c: x[1],
        o: w[0],
        cg: w[1],
        og: w[0] / p.groups,
        kk: w[2] * w[3],
    }
}

/// Forward into `y` (`N * O * OH * OW` elements, any contents: every element is written).
pub(crate) fn forward(
    x: &Tensor4,
    w: &Tensor4,
    b: Option<&[f32]>,
    p: ConvParams,
    out: [usize; 4],
    ws: &mut ConvWorkspace,
    y: &mut [f32],
) {
    let g = Plane::new(x.shape(), w.shape(), p, out);
    let gr = groups(x.shape(), w.shape(), p);
    let (xs, wsl) = (x.as_slice(), w.as_slice());
    let (hw, np, len) = (g.h * g.w, g.oh * g.ow, g.buf_len());
    ws.prepare(rayon::current_num_threads().max(1), len);
    let bufs = &ws.bufs;
    y.par_chunks_mut(np).enumerate().for_each(|(plane, yp)| {
        let (ni, oi) = (plane / gr.o, plane % gr.o);
        let c0 = oi / gr.og * gr.cg;
        with_buf(bufs, |buf| {
            let xb = &mut buf[..len];
            for ci in 0..gr.cg {
                prep_plane(&g, &xs[(ni * gr.c + c0 + ci) * hw..][..hw], xb);
                let k = &wsl[(oi * gr.cg + ci) * gr.kk..][..gr.kk];
                let init = (ci == 0).then(|| b.map_or(0.0, |b| b[oi]));
                fwd_plane(&g, xb, k, init, yp);
            }
        });
    });
}

/// Backward into `dx` (if wanted), `dw` and `db` (right lengths, any contents).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    x: &Tensor4,
    w: &Tensor4,
    dy: &Tensor4,
    p: ConvParams,
    out: [usize; 4],
    ws: &mut ConvWorkspace,
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let g = Plane::new(x.shape(), w.shape(), p, out);
    let gr = groups(x.shape(), w.shape(), p);
    let n = out[0];
    let (xs, wsl, dys) = (x.as_slice(), w.as_slice(), dy.as_slice());
    let (hw, np, len) = (g.h * g.w, g.oh * g.ow, g.buf_len());
    // One partial dw (C/groups * KH * KW) and db per (image, output channel) plane.
    let wper = gr.cg * gr.kk;
    let planes = n * gr.o;
    if ws.partials.len() < planes * wper {
        ws.partials.resize(planes * wper, 0.0);
    }
    if ws.db_partials.len() < planes {
        ws.db_partials.resize(planes, 0.0);
    }
    ws.prepare(rayon::current_num_threads().max(1), 2 * len);
    let bufs = &ws.bufs;
    let parts = &mut ws.partials[..planes * wper];
    let db_parts = &mut ws.db_partials[..planes];

    // Weight and bias gradient of one (image, output channel) plane.
    let dw_task = |plane: usize, part: &mut [f32], dbp: &mut f64, xb: &mut [f32]| {
        let (ni, oi) = (plane / gr.o, plane % gr.o);
        let c0 = oi / gr.og * gr.cg;
        let dyp = &dys[plane * np..][..np];
        for (ci, part) in part.chunks_exact_mut(gr.kk).enumerate() {
            prep_plane(&g, &xs[(ni * gr.c + c0 + ci) * hw..][..hw], xb);
            dw_plane(&g, xb, dyp, part);
        }
        *dbp = f64::from(sum_f32(dyp));
    };
    // Input gradient of one (image, input channel) plane: the scatter of every dy plane of its
    // group, in output-channel order.
    let dx_task = |plane: usize, dxp: &mut [f32], dxb: &mut [f32]| {
        let (ni, ci) = (plane / gr.c, plane % gr.c);
        let (grp, cl) = (ci / gr.cg, ci % gr.cg);
        dxb.fill(0.0);
        for oi in grp * gr.og..(grp + 1) * gr.og {
            let dyp = &dys[(ni * gr.o + oi) * np..][..np];
            let k = &wsl[(oi * gr.cg + cl) * gr.kk..][..gr.kk];
            dx_plane(&g, dyp, k, dxb);
        }
        unprep_plane(&g, dxb, dxp);
    };

    match dx {
        // Depthwise with one output per input channel: the planes of y and x correspond, so
        // one sweep reads each plane of x and dy once for both gradients.
        Some(dx) if gr.cg == 1 && gr.og == 1 => {
            dx.par_chunks_mut(hw)
                .zip(parts.par_chunks_mut(wper))
                .zip(db_parts.par_iter_mut())
                .enumerate()
                .for_each(|(plane, ((dxp, part), dbp))| {
                    with_buf(bufs, |buf| {
                        let (xb, dxb) = buf[..2 * len].split_at_mut(len);
                        dw_task(plane, part, dbp, xb);
                        dx_task(plane, dxp, dxb);
                    });
                });
        }
        dx => {
            parts
                .par_chunks_mut(wper)
                .zip(db_parts.par_iter_mut())
                .enumerate()
                .for_each(|(plane, (part, dbp))| {
                    with_buf(bufs, |buf| dw_task(plane, part, dbp, &mut buf[..len]));
                });
            if let Some(dx) = dx {
                dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dxp)| {
                    with_buf(bufs, |buf| dx_task(plane, dxp, &mut buf[..len]));
                });
            }
        }
    }

    // Reduce the partials over the images, in image order.
    let parts = &ws.partials[..planes * wper];
    dw.par_chunks_mut(wper).enumerate().for_each(|(oi, dst)| {
        dst.copy_from_slice(&parts[oi * wper..][..wper]);
        for ni in 1..n {
            let part = &parts[(ni * gr.o + oi) * wper..][..wper];
            for (acc, v) in dst.iter_mut().zip(part) {
                *acc += *v;
            }
        }
    });
    let db_parts = &ws.db_partials[..planes];
    for (oi, dbv) in db.iter_mut().enumerate() {
        let acc: f64 = (0..n).map(|ni| db_parts[ni * gr.o + oi]).sum();
        *dbv = acc as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prep_and_unprep_round_trip_for_every_stride() {
        for (w, sw, pw, kw) in [
            (7, 1, 1, 3),
            (7, 2, 1, 3),
            (12, 2, 2, 5),
            (5, 3, 0, 1),
            (1, 2, 2, 5),
        ] {
            let p = ConvParams {
                stride: [1, sw],
                padding: [0, pw],
                groups: 1,
            };
            let ow = (w + 2 * pw - kw) / sw + 1;
            let g = Plane::new([1, 1, 2, w], [1, 1, 1, kw], p, [1, 1, 2, ow]);
            let x: Vec<f32> = (0..2 * w).map(|v| v as f32 + 1.0).collect();
            let mut buf = vec![f32::NAN; g.buf_len()];
            prep_plane(&g, &x, &mut buf);
            // Every padded position holds its value (0 in the padding).
            for t in 0..g.rw {
                let (r, j) = (t / g.pl, t % g.pl);
                let pt = j * sw + r;
                let want = if pt >= pw && pt < pw + w {
                    x[pt - pw]
                } else {
                    0.0
                };
                assert_eq!(buf[t], want, "w {w} sw {sw} pw {pw} t {t}");
            }
            let mut back = vec![0.0; 2 * w];
            unprep_plane(&g, &buf, &mut back);
            assert_eq!(back, x);
        }
    }
}

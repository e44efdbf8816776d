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
//! The inner loops run over long contiguous slices so the compiler vectorises them. An input
//! plane is first copied into a zero-padded, *phase-split* buffer: for strides `(sh, sw)` it
//! holds `sh * sw` sub-planes, sub-plane `(rv, rh)` holding the padded elements at rows
//! `i * sh + rv` and columns `j * sw + rh`, each sub-plane `pl` columns wide. An output plane is
//! handled *flat*, with row pitch `pl` (`f = oy * pl + ox`; the `pl - OW` extra columns of each
//! row are scratch): then the input element kernel tap `(ki, kj)` meets for output `f` is at
//! `f + off(ki, kj)` for one offset per tap, whatever the stride, so every tap is a single
//! contiguous multiply-add over the whole plane. The forward pass keeps blocks of 32 outputs in
//! registers across all taps; `dx` is scattered (`buf[off + f] += w * dy[f]`) into the same
//! kind of buffer and copied out; `dw` is a lane-wise dot product per tap.
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
#[derive(Clone, Debug)]
struct Plane {
    h: usize,
    w: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    oh: usize,
    ow: usize,
    /// Columns of a sub-plane, `ceil((W + 2 pw) / sw)`: also the row pitch of flat planes.
    pl: usize,
    /// Rows of a sub-plane, `ceil((H + 2 ph) / sh)`.
    plh: usize,
    /// Length of the flat output (or `dy`) plane: `(OH - 1) * pl + OW`.
    flat: usize,
    /// Offset in the buffer of each tap `(ki, kj)`, row-major:
    /// `sub-plane (ki % sh, kj % sw) + (ki / sh) * pl + kj / sw`.
    offs: Vec<usize>,
}

impl Plane {
    fn new(x: [usize; 4], w: [usize; 4], p: ConvParams, out: [usize; 4]) -> Self {
        let ([sh, sw], [ph, pw]) = (p.stride, p.padding);
        let (h, wd, kh, kw, oh, ow) = (x[2], x[3], w[2], w[3], out[2], out[3]);
        let pl = (wd + 2 * pw).div_ceil(sw);
        let plh = (h + 2 * ph).div_ceil(sh);
        let sub = plh * pl;
        let mut offs = Vec::with_capacity(kh * kw);
        for ki in 0..kh {
            for kj in 0..kw {
                offs.push(((ki % sh) * sw + kj % sw) * sub + (ki / sh) * pl + kj / sw);
            }
        }
        Plane {
            h,
            w: wd,
            sh,
            sw,
            ph,
            pw,
            oh,
            ow,
            pl,
            plh,
            flat: (oh - 1) * pl + ow,
            offs,
        }
    }

    /// Elements of one phase-split plane buffer (all sub-planes).
    fn buf_len(&self) -> usize {
        self.sh * self.sw * self.plh * self.pl
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

/// The sub-plane rows `(i, padded row)` for phase `rv`, and for each the input row it holds
/// (`None` in the padding).
fn sub_rows(g: &Plane, rv: usize) -> impl Iterator<Item = Option<usize>> + '_ {
    (0..g.plh).map(move |i| {
        let pr = i * g.sh + rv;
        (pr >= g.ph && pr < g.ph + g.h).then(|| pr - g.ph)
    })
}

/// The columns `j0..j1` of a sub-plane of phase `rh` that hold input columns
/// (`j * sw + rh - pw` for `j` in the range).
fn sub_cols(g: &Plane, rh: usize) -> (usize, usize) {
    let j0 = g.pw.saturating_sub(rh).div_ceil(g.sw).min(g.pl);
    let j1 = (g.pw + g.w)
        .saturating_sub(rh)
        .div_ceil(g.sw)
        .clamp(j0, g.pl);
    (j0, j1)
}

/// For horizontal stride 2, the sub-plane rows `(phase 0, phase 1)` of one padded row as
/// `(even input columns, odd input columns)` with their first positions: input column `ix`
/// sits at padded column `ix + pw`, i.e. phase `(ix + pw) % 2`, position `(ix + pw) / 2`.
fn stride2_targets<'a, T>(
    pw: usize,
    r0: &'a mut [T],
    r1: &'a mut [T],
) -> [(&'a mut [T], usize); 2] {
    if pw.is_multiple_of(2) {
        [(r0, pw / 2), (r1, pw / 2)]
    } else {
        [(r1, pw / 2), (r0, pw / 2 + 1)]
    }
}

/// [`prep_plane`] for horizontal stride 2: reads each input row once, as column pairs.
fn prep_plane_sw2(g: &Plane, x: &[f32], buf: &mut [f32]) {
    let sub = g.plh * g.pl;
    for (rv, pair) in buf.chunks_exact_mut(2 * sub).enumerate() {
        let (s0, s1) = pair.split_at_mut(sub);
        let rows = s0.chunks_exact_mut(g.pl).zip(s1.chunks_exact_mut(g.pl));
        for ((r0, r1), iy) in rows.zip(sub_rows(g, rv)) {
            r0.fill(0.0);
            r1.fill(0.0);
            let Some(iy) = iy else { continue };
            let row = &x[iy * g.w..(iy + 1) * g.w];
            let [(ev, e0), (od, o0)] = stride2_targets(g.pw, r0, r1);
            let (ev, od) = (&mut ev[e0..], &mut od[o0..]);
            let mut pairs = row.chunks_exact(2);
            for ((p, e), o) in (&mut pairs).zip(ev.iter_mut()).zip(od.iter_mut()) {
                *e = p[0];
                *o = p[1];
            }
            if let [last] = pairs.remainder() {
                ev[g.w / 2] = *last;
            }
        }
    }
}

/// [`unprep_plane`] for horizontal stride 2: writes each row once, as column pairs.
fn unprep_plane_sw2(g: &Plane, buf: &[f32], x: &mut [f32]) {
    let sub = g.plh * g.pl;
    for (rv, pair) in buf.chunks_exact(2 * sub).enumerate() {
        let (s0, s1) = pair.split_at(sub);
        let rows = s0.chunks_exact(g.pl).zip(s1.chunks_exact(g.pl));
        for ((r0, r1), iy) in rows.zip(sub_rows(g, rv)) {
            let Some(iy) = iy else { continue };
            let row = &mut x[iy * g.w..(iy + 1) * g.w];
            let (ev, od) = if g.pw.is_multiple_of(2) {
                (&r0[g.pw / 2..], &r1[g.pw / 2..])
            } else {
                (&r1[g.pw / 2..], &r0[g.pw / 2 + 1..])
            };
            let mut pairs = row.chunks_exact_mut(2);
            for ((p, &e), &o) in (&mut pairs).zip(ev).zip(od) {
                p[0] = e;
                p[1] = o;
            }
            if let [last] = pairs.into_remainder() {
                *last = ev[g.w / 2];
            }
        }
    }
}

/// Copies one input plane (`H x W`) into the zero-padded phase-split buffer.
fn prep_plane(g: &Plane, x: &[f32], buf: &mut [f32]) {
    if g.sw == 2 {
        return prep_plane_sw2(g, x, buf);
    }
    let mut subs = buf.chunks_exact_mut(g.plh * g.pl);
    for rv in 0..g.sh {
        for rh in 0..g.sw {
            let Some(sub) = subs.next() else { return };
            let (j0, j1) = sub_cols(g, rh);
            for (brow, iy) in sub.chunks_exact_mut(g.pl).zip(sub_rows(g, rv)) {
                let Some(iy) = iy else {
                    brow.fill(0.0);
                    continue;
                };
                let row = &x[iy * g.w..(iy + 1) * g.w];
                brow[..j0].fill(0.0);
                if g.sw == 1 {
                    brow[j0..j1].copy_from_slice(&row[j0 + rh - g.pw..j1 + rh - g.pw]);
                } else {
                    // Strided iterators: no index arithmetic or bounds check per element.
                    let src = row[j0 * g.sw + rh - g.pw..].iter().step_by(g.sw);
                    for (v, &s) in brow[j0..j1].iter_mut().zip(src) {
                        *v = s;
                    }
                }
                brow[j1..].fill(0.0);
            }
        }
    }
}

/// Copies the interior of a phase-split buffer back to a plane (`H x W`): the inverse of
/// [`prep_plane`] (padding positions are dropped).
fn unprep_plane(g: &Plane, buf: &[f32], x: &mut [f32]) {
    if g.sw == 2 {
        return unprep_plane_sw2(g, buf, x);
    }
    let mut subs = buf.chunks_exact(g.plh * g.pl);
    for rv in 0..g.sh {
        for rh in 0..g.sw {
            let Some(sub) = subs.next() else { return };
            let (j0, j1) = sub_cols(g, rh);
            for (brow, iy) in sub.chunks_exact(g.pl).zip(sub_rows(g, rv)) {
                let Some(iy) = iy else { continue };
                let row = &mut x[iy * g.w..(iy + 1) * g.w];
                if g.sw == 1 {
                    row[j0 + rh - g.pw..j1 + rh - g.pw].copy_from_slice(&brow[j0..j1]);
                } else {
                    let dst = row[j0 * g.sw + rh - g.pw..].iter_mut().step_by(g.sw);
                    for (d, &v) in dst.zip(&brow[j0..j1]) {
                        *d = v;
                    }
                }
            }
        }
    }
}

/// Copies an output-shaped plane (`OH x OW`) to a flat plane of pitch `pl` (extra columns 0).
fn to_flat(g: &Plane, y: &[f32], flat: &mut [f32]) {
    for (oy, row) in y.chunks_exact(g.ow).enumerate() {
        let dst = &mut flat[oy * g.pl..];
        dst[..g.ow].copy_from_slice(row);
        if oy + 1 < g.oh {
            dst[g.ow..g.pl].fill(0.0);
        }
    }
}

/// Copies the `OH x OW` part of a flat plane of pitch `pl` out.
fn from_flat(g: &Plane, flat: &[f32], y: &mut [f32]) {
    for (oy, row) in y.chunks_exact_mut(g.ow).enumerate() {
        row.copy_from_slice(&flat[oy * g.pl..][..g.ow]);
    }
}

/// `L` flat outputs from `f0`: start from `init` (or the values in `yf`), then add every tap in
/// order. The accumulators stay in registers across the taps.
#[inline(always)]
fn fwd_block<const L: usize>(
    offs: &[usize],
    xb: &[f32],
    k: &[f32],
    init: Option<f32>,
    f0: usize,
    yf: &mut [f32],
) {
    let dst = &mut yf[f0..f0 + L];
    let mut acc = [0.0f32; L];
    match init {
        Some(b) => acc.fill(b),
        None => acc.copy_from_slice(dst),
    }
    for (&off, &wv) in offs.iter().zip(k) {
        let src = &xb[off + f0..][..L];
        for (a, &s) in acc.iter_mut().zip(src) {
            *a += wv * s;
        }
    }
    dst.copy_from_slice(&acc);
}

/// `yf (+)= conv(x, k)` over a flat output plane, for one prepared input plane `xb` and one
/// kernel; `init` is `Some(bias)` for the first input channel of the group (overwrite), `None`
/// to add.
#[inline(always)]
fn fwd_plane_body(offs: &[usize], xb: &[f32], k: &[f32], init: Option<f32>, yf: &mut [f32]) {
    let n = yf.len();
    let mut f0 = 0;
    while f0 + 32 <= n {
        fwd_block::<32>(offs, xb, k, init, f0, yf);
        f0 += 32;
    }
    while f0 + 8 <= n {
        fwd_block::<8>(offs, xb, k, init, f0, yf);
        f0 += 8;
    }
    while f0 < n {
        fwd_block::<1>(offs, xb, k, init, f0, yf);
        f0 += 1;
    }
}

multiversion!(
    /// See [`fwd_plane_body`].
    fn fwd_plane => fwd_plane_body(offs: &[usize], xb: &[f32], k: &[f32], init: Option<f32>, yf: &mut [f32])
);

/// Lanes of the dot products of the weight gradient.
const DOT_LANES: usize = 16;

/// Dot product of `a` and `b` accumulated in 16 lanes (element `i` in lane `i % 16`, so the
/// compiler keeps them in SIMD registers), combined pairwise in a fixed order.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; DOT_LANES];
    let mut ca = a.chunks_exact(DOT_LANES);
    let mut cb = b.chunks_exact(DOT_LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..DOT_LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    for ((lane, &x), &y) in lanes.iter_mut().zip(ca.remainder()).zip(cb.remainder()) {
        *lane += x * y;
    }
    let mut width = DOT_LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
    }
    lanes[0]
}

/// Partial weight gradient of one plane pair, `dw[tap] = sum_f dyf[f] * xb[off(tap) + f]`, for
/// the prepared input plane `xb` and the flat `dy` plane `dyf` (zero in its extra columns).
#[inline(always)]
fn dw_plane_body(offs: &[usize], xb: &[f32], dyf: &[f32], dw: &mut [f32]) {
    for (d, &off) in dw.iter_mut().zip(offs) {
        *d = dot(dyf, &xb[off..off + dyf.len()]);
    }
}

multiversion!(
    /// See [`dw_plane_body`].
    fn dw_plane => dw_plane_body(offs: &[usize], xb: &[f32], dyf: &[f32], dw: &mut [f32])
);

/// Scatters a flat `dy` plane (zero in its extra columns) through kernel `k` into a phase-split
/// input-gradient buffer: `buf[off(tap) + f] += k[tap] * dyf[f]`, tap by tap.
#[inline(always)]
fn dx_plane_body(offs: &[usize], dyf: &[f32], k: &[f32], buf: &mut [f32]) {
    for (&off, &wv) in offs.iter().zip(k) {
        let dst = &mut buf[off..off + dyf.len()];
        for (t, &d) in dst.iter_mut().zip(dyf) {
            *t += wv * d;
        }
    }
}

multiversion!(
    /// See [`dx_plane_body`].
    fn dx_plane => dx_plane_body(offs: &[usize], dyf: &[f32], k: &[f32], buf: &mut [f32])
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
    ws.prepare(rayon::current_num_threads().max(1), len + g.flat);
    let bufs = &ws.bufs;
    y.par_chunks_mut(np).enumerate().for_each(|(plane, yp)| {
        let (ni, oi) = (plane / gr.o, plane % gr.o);
        let c0 = oi / gr.og * gr.cg;
        with_buf(bufs, |buf| {
            let (xb, yf) = buf[..len + g.flat].split_at_mut(len);
            for ci in 0..gr.cg {
                prep_plane(&g, &xs[(ni * gr.c + c0 + ci) * hw..][..hw], xb);
                let k = &wsl[(oi * gr.cg + ci) * gr.kk..][..gr.kk];
                let init = (ci == 0).then(|| b.map_or(0.0, |b| b[oi]));
                fwd_plane(&g.offs, xb, k, init, yf);
            }
            from_flat(&g, yf, yp);
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
    let (hw, np, len, fl) = (g.h * g.w, g.oh * g.ow, g.buf_len(), g.flat);
    // One partial dw (C/groups * KH * KW) and db per (image, output channel) plane.
    let wper = gr.cg * gr.kk;
    let planes = n * gr.o;
    if ws.partials.len() < planes * wper {
        ws.partials.resize(planes * wper, 0.0);
    }
    if ws.db_partials.len() < planes {
        ws.db_partials.resize(planes, 0.0);
    }
    // Per thread: the x (or dx) buffer, a flat dy plane and, for the fused sweep, a dx buffer.
    ws.prepare(rayon::current_num_threads().max(1), 2 * len + fl);
    let bufs = &ws.bufs;
    let parts = &mut ws.partials[..planes * wper];
    let db_parts = &mut ws.db_partials[..planes];

    // Weight and bias gradient of one (image, output channel) plane; leaves that plane's flat
    // dy in `dyf`.
    let dw_task =
        |plane: usize, part: &mut [f32], dbp: &mut f64, xb: &mut [f32], dyf: &mut [f32]| {
            let (ni, oi) = (plane / gr.o, plane % gr.o);
            let c0 = oi / gr.og * gr.cg;
            let dyp = &dys[plane * np..][..np];
            to_flat(&g, dyp, dyf);
            for (ci, part) in part.chunks_exact_mut(gr.kk).enumerate() {
                prep_plane(&g, &xs[(ni * gr.c + c0 + ci) * hw..][..hw], xb);
                dw_plane(&g.offs, xb, dyf, part);
            }
            *dbp = f64::from(sum_f32(dyp));
        };
    // Input gradient of one (image, input channel) plane: the scatter of every dy plane of its
    // group, in output-channel order. With `dy_ready`, `dyf` already holds the flat dy of the
    // group's only output channel.
    let dx_task =
        |plane: usize, dxp: &mut [f32], dxb: &mut [f32], dyf: &mut [f32], dy_ready: bool| {
            let (ni, ci) = (plane / gr.c, plane % gr.c);
            let (grp, cl) = (ci / gr.cg, ci % gr.cg);
            dxb.fill(0.0);
            for oi in grp * gr.og..(grp + 1) * gr.og {
                if !dy_ready {
                    to_flat(&g, &dys[(ni * gr.o + oi) * np..][..np], dyf);
                }
                let k = &wsl[(oi * gr.cg + cl) * gr.kk..][..gr.kk];
                dx_plane(&g.offs, dyf, k, dxb);
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
                        let (xb, rest) = buf[..2 * len + fl].split_at_mut(len);
                        let (dxb, dyf) = rest.split_at_mut(len);
                        dw_task(plane, part, dbp, xb, dyf);
                        dx_task(plane, dxp, dxb, dyf, true);
                    });
                });
        }
        dx => {
            parts
                .par_chunks_mut(wper)
                .zip(db_parts.par_iter_mut())
                .enumerate()
                .for_each(|(plane, (part, dbp))| {
                    with_buf(bufs, |buf| {
                        let (xb, dyf) = buf[..len + fl].split_at_mut(len);
                        dw_task(plane, part, dbp, xb, dyf);
                    });
                });
            if let Some(dx) = dx {
                dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dxp)| {
                    with_buf(bufs, |buf| {
                        let (dxb, dyf) = buf[..len + fl].split_at_mut(len);
                        dx_task(plane, dxp, dxb, dyf, false);
                    });
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
        for (h, w, s, pad, k) in [
            (3, 7, [1, 1], [1, 1], 3),
            (5, 7, [2, 2], [1, 1], 3),
            (12, 12, [2, 2], [2, 2], 5),
            (4, 5, [3, 3], [0, 0], 1),
            (1, 1, [2, 2], [2, 2], 5),
            (6, 9, [1, 2], [0, 2], 3),
            (4, 6, [2, 2], [1, 1], 3),
            (7, 8, [2, 2], [0, 0], 2),
        ] {
            let p = ConvParams {
                stride: s,
                padding: pad,
                groups: 1,
            };
            let out = crate::conv2d_output_shape([1, 1, h, w], [1, 1, k, k], p).unwrap();
            let g = Plane::new([1, 1, h, w], [1, 1, k, k], p, out);
            let x: Vec<f32> = (0..h * w).map(|v| v as f32 + 1.0).collect();
            let mut buf = vec![f32::NAN; g.buf_len()];
            prep_plane(&g, &x, &mut buf);
            // Every position holds its padded-input value (0 in the padding).
            for (t, &got) in buf.iter().enumerate() {
                let (sub, rest) = (t / (g.plh * g.pl), t % (g.plh * g.pl));
                let (rv, rh) = (sub / g.sw, sub % g.sw);
                let (pr, pc) = ((rest / g.pl) * g.sh + rv, (rest % g.pl) * g.sw + rh);
                let inside = pr >= pad[0] && pr < pad[0] + h && pc >= pad[1] && pc < pad[1] + w;
                let want = if inside {
                    x[(pr - pad[0]) * w + pc - pad[1]]
                } else {
                    0.0
                };
                assert_eq!(got, want, "{h}x{w} s {s:?} p {pad:?} t {t}");
            }
            let mut back = vec![0.0; h * w];
            unprep_plane(&g, &buf, &mut back);
            assert_eq!(back, x);
            // The furthest tap of the last output stays inside the buffer.
            assert!(g.offs.iter().max().unwrap() + g.flat <= g.buf_len());
        }
    }
}

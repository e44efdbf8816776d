//! The inner loops of the fused batch norm, activation and 2x2 max pool
//! ([`bn_act_pool_forward`](crate::bn_act_pool_forward),
//! [`bn_act_pool_backward`](crate::bn_act_pool_backward)), one plane at a time on contiguous
//! slices, and `avx2_dispatch!`, which runs each in a copy compiled for AVX2 when the CPU has
//! it (chosen at run time) with the same results bit for bit.
//!
//! The arithmetic is that of the unfused kernels, operation for operation: `t = (x - mean) *
//! inv_std`, `y = t * gamma + beta`, ReLU `if y < 0 { 0 } else { y }` capped at `cap`, and the
//! window maximum picked as [`max_pool2d_forward`](crate::max_pool2d_forward) does (row-major
//! order, the first maximum wins, NaN wins over numbers).

/// Window code of an output whose maximum is not a positive activation output: no gradient
/// passes.
pub(crate) const INACTIVE: u8 = 4;

/// Lanes of independent f64 accumulators: a fixed summation order that the compiler can
/// vectorise.
pub(crate) const LANES: usize = 8;

/// Per-channel constants of one forward pass.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Coef {
    pub(crate) mean: f32,
    pub(crate) inv_std: f32,
    pub(crate) gamma: f32,
    pub(crate) beta: f32,
    /// Upper bound of the activation (infinity for ReLU).
    pub(crate) cap: f32,
    /// `cap` is infinite: only the lower bound blocks gradients.
    pub(crate) open: bool,
}

impl Coef {
    /// The normalised value, as the batch norm layer computes it.
    #[inline(always)]
    pub(crate) fn x_hat(&self, x: f32) -> f32 {
        (x - self.mean) * self.inv_std
    }

    /// The batch norm's output for a normalised value.
    #[inline(always)]
    pub(crate) fn affine(&self, t: f32) -> f32 {
        t * self.gamma + self.beta
    }

    /// The activation of a batch-norm output `y`: ReLU, capped at `cap`.
    #[inline(always)]
    pub(crate) fn act(&self, y: f32) -> f32 {
        let r = relu(y);
        if r > self.cap {
            self.cap
        } else {
            r
        }
    }

    /// Whether the activation passes a gradient at batch-norm output `y` (`0 < y < cap`).
    #[inline(always)]
    pub(crate) fn on(&self, y: f32) -> bool {
        y > 0.0 && (self.open || y < self.cap)
    }
}

/// ReLU as [`relu_forward`](crate::relu_forward): NaN passes through, `-0.0` stays.
#[inline(always)]
fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

/// Sizes of an input `[N, C, H, W]` and of its pooled output `[N, C, OH, OW]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub(crate) n: usize,
    pub(crate) c_total: usize,
    pub(crate) w: usize,
    pub(crate) hw: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
}

impl Geometry {
    /// The geometry of input shape `[N, C, H, W]` (the pooled side floors, as `MaxPool2d(2)`).
    pub(crate) fn of([n, c_total, h, w]: [usize; 4]) -> Self {
        Geometry {
            n,
            c_total,
            w,
            hw: h * w,
            oh: h / 2,
            ow: w / 2,
        }
    }

    /// Index range of plane `(i, c)` of the input.
    pub(crate) fn plane(&self, i: usize, c: usize) -> std::ops::Range<usize> {
        let p = i * self.c_total + c;
        p * self.hw..(p + 1) * self.hw
    }

    /// Index range of plane `(i, c)` of the pooled output.
    pub(crate) fn out_plane(&self, i: usize, c: usize) -> std::ops::Range<usize> {
        let (p, ohw) = (i * self.c_total + c, self.oh * self.ow);
        p * ohw..(p + 1) * ohw
    }
}

/// Defines `$name`, which runs `$imp` compiled for AVX2 when the CPU has it (twice the SIMD
/// width of the x86-64 baseline these crates are built for) and as built otherwise. The same
/// IEEE operations run in the same order either way (Rust never fuses or reorders float
/// arithmetic), so results are identical bit for bit.
macro_rules! avx2_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident => $imp:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                /// `$imp` compiled with AVX2.
                ///
                /// # Safety
                /// The CPU supports AVX2.
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $imp($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    };
}
pub(crate) use avx2_dispatch;

avx2_dispatch! {
    /// See [`forward_plane_impl`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_plane => forward_plane_impl(
        geo: &Geometry,
        pool: bool,
        k: &Coef,
        xp: &[f32],
        yp: &mut [f32],
        cp: Option<&mut [u8]>,
        tp: Option<&mut [f32]>,
        xc: Option<&mut [f32]>
    )
}

avx2_dispatch! {
    /// See [`sparse_sums_impl`].
    pub(crate) fn sparse_sums => sparse_sums_impl(dy: &[f32], codes: &[u8], t: &[f32]) -> (f64, f64)
}

avx2_dispatch! {
    /// See [`dense_sums_impl`].
    pub(crate) fn dense_sums => dense_sums_impl(dy: &[f32], xs: &[f32], k: &Coef) -> (f64, f64)
}

avx2_dispatch! {
    /// See [`pool_dx_plane_impl`].
    pub(crate) fn pool_dx_plane => pool_dx_plane_impl(
        geo: &Geometry,
        coef: &Coef,
        d: &DxConst,
        xp: Option<&[f32]>,
        dyp: &[f32],
        cp: &[u8],
        o: &mut [f32]
    )
}

avx2_dispatch! {
    /// See [`dense_dx_plane_impl`].
    pub(crate) fn dense_dx_plane => dense_dx_plane_impl(
        coef: &Coef,
        d: &DxConst,
        xp: Option<&[f32]>,
        dyp: &[f32],
        o: &mut [f32]
    )
}

/// The forward pass over one input plane `xp`: the output plane `yp`, with pooling the window
/// codes `cp` and `x_hat` at the maxima `tp` (when caching), and the input copy `xc` (when
/// kept).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_plane_impl(
    geo: &Geometry,
    pool: bool,
    k: &Coef,
    xp: &[f32],
    yp: &mut [f32],
    cp: Option<&mut [u8]>,
    tp: Option<&mut [f32]>,
    xc: Option<&mut [f32]>,
) {
    if pool {
        match (cp, tp) {
            (Some(cp), Some(tp)) => pool_plane_cached(xp, geo.w, geo.oh, geo.ow, k, yp, cp, tp),
            _ => pool_plane(xp, geo.w, geo.oh, geo.ow, k, yp),
        }
    } else {
        for (o, &v) in yp.iter_mut().zip(xp) {
            *o = k.act(k.affine(k.x_hat(v)));
        }
    }
    if let Some(xc) = xc {
        xc.copy_from_slice(xp);
    }
}

/// Keeps `(v, t, i)` if `v` beats the current best: a larger value, or the first NaN (the
/// tensor crate's max-pool rule), without branches.
#[inline(always)]
fn pick(best: &mut f32, best_t: &mut f32, idx: &mut u8, v: f32, t: f32, i: u8) {
    let take = (v > *best) | (v.is_nan() & !best.is_nan());
    *best = if take { v } else { *best };
    *best_t = if take { t } else { *best_t };
    *idx = if take { i } else { *idx };
}

/// One 2x2 window `[a b; c d]`: the pooled ReLU output, the window code and `x_hat` at the
/// maximum.
#[inline(always)]
fn window(k: &Coef, a: f32, b: f32, c: f32, d: f32) -> (f32, u8, f32) {
    let (ta, tb, tc, td) = (k.x_hat(a), k.x_hat(b), k.x_hat(c), k.x_hat(d));
    let (mut best, mut best_t, mut idx) = (k.act(k.affine(ta)), ta, 0u8);
    pick(&mut best, &mut best_t, &mut idx, k.act(k.affine(tb)), tb, 1);
    pick(&mut best, &mut best_t, &mut idx, k.act(k.affine(tc)), tc, 2);
    pick(&mut best, &mut best_t, &mut idx, k.act(k.affine(td)), td, 3);
    // The ReLU passes a gradient where its input is > 0, i.e. where its output is (and, for
    // ReLU6, below the cap: an output at the cap had an input at or above it).
    let code = if k.on(best) { idx } else { INACTIVE };
    (best, code, best_t)
}

/// The two input rows (first `2 * ow` values each) under output row `r`.
#[inline(always)]
fn row_pair(xp: &[f32], w: usize, ow: usize, r: usize) -> (&[f32], &[f32]) {
    let top = &xp[2 * r * w..2 * r * w + 2 * ow];
    let bottom = &xp[(2 * r + 1) * w..(2 * r + 1) * w + 2 * ow];
    (top, bottom)
}

/// Pooled output of one plane, no cache (inference).
#[inline(always)]
fn pool_plane(xp: &[f32], w: usize, oh: usize, ow: usize, k: &Coef, yp: &mut [f32]) {
    for (r, yrow) in yp.chunks_exact_mut(ow).enumerate().take(oh) {
        let (top, bottom) = row_pair(xp, w, ow, r);
        for ((o, t), b) in yrow
            .iter_mut()
            .zip(top.chunks_exact(2))
            .zip(bottom.chunks_exact(2))
        {
            *o = window(k, t[0], t[1], b[0], b[1]).0;
        }
    }
}

/// Pooled output of one plane with the window codes and `x_hat` at the maxima.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pool_plane_cached(
    xp: &[f32],
    w: usize,
    oh: usize,
    ow: usize,
    k: &Coef,
    yp: &mut [f32],
    cp: &mut [u8],
    tp: &mut [f32],
) {
    for (r, ((yrow, crow), trow)) in yp
        .chunks_exact_mut(ow)
        .zip(cp.chunks_exact_mut(ow))
        .zip(tp.chunks_exact_mut(ow))
        .enumerate()
        .take(oh)
    {
        let (top, bottom) = row_pair(xp, w, ow, r);
        for ((((o, code), tmax), t), b) in yrow
            .iter_mut()
            .zip(crow.iter_mut())
            .zip(trow.iter_mut())
            .zip(top.chunks_exact(2))
            .zip(bottom.chunks_exact(2))
        {
            (*o, *code, *tmax) = window(k, t[0], t[1], b[0], b[1]);
        }
    }
}

/// `(sum dy_hat, sum dy_hat * x_hat)` over the pooled outputs of one plane: `dy_hat` is `dy`
/// where the window code is active, else 0.
#[inline(always)]
fn sparse_sums_impl(dy: &[f32], codes: &[u8], t: &[f32]) -> (f64, f64) {
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    let (cd, cc, ct) = (
        dy.chunks_exact(LANES),
        codes.chunks_exact(LANES),
        t.chunks_exact(LANES),
    );
    let (rd, rc, rt) = (cd.remainder(), cc.remainder(), ct.remainder());
    for ((d, c), t) in cd.zip(cc).zip(ct) {
        for i in 0..LANES {
            let on = c[i] < INACTIVE;
            let g = d[i] as f64;
            s1[i] += if on { g } else { 0.0 };
            s2[i] += if on { g * t[i] as f64 } else { 0.0 };
        }
    }
    let (mut r1, mut r2) = (s1.iter().sum::<f64>(), s2.iter().sum::<f64>());
    for ((&d, &c), &t) in rd.iter().zip(rc).zip(rt) {
        if c < INACTIVE {
            r1 += d as f64;
            r2 += d as f64 * t as f64;
        }
    }
    (r1, r2)
}

/// `(sum dy_hat, sum dy_hat * x_hat)` over one unpooled plane, the ReLU mask recomputed from
/// `x`.
#[inline(always)]
fn dense_sums_impl(dy: &[f32], xs: &[f32], k: &Coef) -> (f64, f64) {
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    let (cd, cx) = (dy.chunks_exact(LANES), xs.chunks_exact(LANES));
    let (rd, rx) = (cd.remainder(), cx.remainder());
    for (d, x) in cd.zip(cx) {
        for i in 0..LANES {
            let t = k.x_hat(x[i]);
            let on = k.on(k.affine(t));
            let g = d[i] as f64;
            s1[i] += if on { g } else { 0.0 };
            s2[i] += if on { g * t as f64 } else { 0.0 };
        }
    }
    let (mut r1, mut r2) = (s1.iter().sum::<f64>(), s2.iter().sum::<f64>());
    for (&d, &x) in rd.iter().zip(rx) {
        let t = k.x_hat(x);
        if k.on(k.affine(t)) {
            r1 += d as f64;
            r2 += d as f64 * t as f64;
        }
    }
    (r1, r2)
}

/// Index within the plane of the input element window code `code` of output `(r, j)` picks.
#[inline(always)]
fn window_pos(w: usize, r: usize, j: usize, code: u8) -> usize {
    (2 * r + (code >> 1) as usize) * w + 2 * j + (code & 1) as usize
}

/// The batch-norm backward's constants of one channel: `dx = k * (dy_hat - a - x_hat * b)`
/// with batch statistics, `dx = k * dy_hat` with running statistics.
pub(crate) struct DxConst {
    pub(crate) k: f32,
    pub(crate) a: f32,
    pub(crate) b: f32,
    pub(crate) batch: bool,
}

/// `dx` of one plane with pooling: `dy_hat` is `dy` at the active window maxima, 0 elsewhere
/// (also on the last row or column an odd size leaves out). `xp` is needed with batch
/// statistics.
#[inline(always)]
fn pool_dx_plane_impl(
    geo: &Geometry,
    coef: &Coef,
    d: &DxConst,
    xp: Option<&[f32]>,
    dyp: &[f32],
    cp: &[u8],
    o: &mut [f32],
) {
    let (k, a, b, w) = (d.k, d.a, d.b, geo.w);
    let rows = dyp.chunks_exact(geo.ow).zip(cp.chunks_exact(geo.ow));
    match xp.filter(|_| d.batch) {
        Some(xp) => {
            // The unfused arithmetic with dy_hat = 0, then the maxima overwritten.
            let na = 0.0 - a;
            for (o, &v) in o.iter_mut().zip(xp) {
                *o = k * (na - coef.x_hat(v) * b);
            }
            for (r, (dyr, cr)) in rows.enumerate() {
                for (j, (&g, &code)) in dyr.iter().zip(cr).enumerate() {
                    if code < INACTIVE {
                        let i = window_pos(w, r, j, code);
                        o[i] = k * (g - a - coef.x_hat(xp[i]) * b);
                    }
                }
            }
        }
        None => {
            o.fill(k * 0.0);
            for (r, (dyr, cr)) in rows.enumerate() {
                for (j, (&g, &code)) in dyr.iter().zip(cr).enumerate() {
                    if code < INACTIVE {
                        o[window_pos(w, r, j, code)] = k * g;
                    }
                }
            }
        }
    }
}

/// `dx` of one plane without pooling: `dy_hat` is `dy` where the ReLU (recomputed from `x`)
/// was active. Without pooling the input is always cached.
#[inline(always)]
fn dense_dx_plane_impl(coef: &Coef, d: &DxConst, xp: Option<&[f32]>, dyp: &[f32], o: &mut [f32]) {
    let Some(xp) = xp else {
        return;
    };
    let (k, a, b) = (d.k, d.a, d.b);
    if d.batch {
        for ((o, &g), &v) in o.iter_mut().zip(dyp).zip(xp) {
            let t = coef.x_hat(v);
            let dh = if coef.on(coef.affine(t)) { g } else { 0.0 };
            *o = k * (dh - a - t * b);
        }
    } else {
        for ((o, &g), &v) in o.iter_mut().zip(dyp).zip(xp) {
            let dh = if coef.on(coef.affine(coef.x_hat(v))) {
                g
            } else {
                0.0
            };
            *o = k * dh;
        }
    }
}

//! A packed single-precision GEMM with an AVX-512 micro-kernel, used by [`sgemm`](crate::sgemm)
//! on x86-64 CPUs that have AVX-512F (detected at run time; see
//! [`GemmBackend`](crate::GemmBackend)). Everything here is compiled on every target, but the
//! kernel itself only exists on x86-64; elsewhere [`available`] is `false`.
//!
//! ## Design
//! - **Register tile** `MR x NR = 12 x 32`: 24 zmm accumulators hold 12 rows of C by 32
//!   columns (two 16-lane vectors per row); each step of the inner dimension loads two vectors
//!   of B and broadcasts 12 scalars of A (24 FMAs for 14 loads, so the loop is bound by the two
//!   FMA ports, not by loads). Rows of C are vectorised, so the common case (C row-major with
//!   unit column stride, as in every call of the convolution) stores straight into C, with
//!   masked loads/stores for the ragged right edge. The rows of an m-block are split evenly
//!   over its 12-row panels (16 rows: 8 + 8, not 12 + 4) and each panel runs a kernel
//!   instantiated for exactly its row count, so no multiply is wasted on padding rows.
//! - **Blocking** (Goto/BLIS loop order): `n` in blocks of at most [`NC_MAX`] columns (more
//!   when `k` is short, keeping a B block near 1 MiB), then `k` in balanced blocks of at most
//!   [`KC_MAX`], then `m` in blocks of at most [`MC_MAX`] rows. For each `(NC, KC)` block B is
//!   packed into 32-column panels (`KC x 32` floats each, contiguous, 64-byte aligned,
//!   zero-padded) that stay in L2; for each `(MC, KC)` block A is packed into 12-row panels
//!   (`KC x 12`). The loop over B panels is innermost, so one A panel (12 KiB at `KC = 256`)
//!   stays in L1 while the B panels stream from L2. The packing buffers are per thread (about
//!   1.3 MiB at most), grown on first use and kept for the thread's life.
//! - When B has unit column stride and at most 24 rows of A reuse each B panel, B is read in
//!   place instead of being packed (only a ragged last panel is copied): packing would cost
//!   about as much as the multiply-adds it feeds.
//! - Row-major A and column-major B (the transposed operands of the convolution's backward
//!   passes) are packed with 16 x 16 in-register transposes instead of element by element.
//! - The product is computed as `C^T = B^T A^T` when that wastes fewer lanes (e.g. the weight
//!   gradient of a first layer, 32 x 9: 9 columns would fill 9 of 32 lanes), or when it turns a
//!   strided C into a unit-stride one.
//!
//! ## Numerics and determinism
//! Each element of C is `alpha * s + beta * c` where `s` is a chain of fused multiply-adds over
//! `p` in order within each k-block (the first a plain product) and the k-blocks depend only on
//! `k` (later blocks are added onto C). The result for an element therefore does not depend on
//! which tile, edge kernel, orientation or row/column split computed it: splitting a product
//! into blocks of rows or columns (as the convolution does across threads) gives bit-identical
//! results. It differs from `matrixmultiply`'s in rounding (another summation order), within
//! the usual f32 error.

use crate::error::{Result, TensorError};

/// Rows of the register tile (rows of A broadcast per step).
pub(crate) const MR: usize = 12;
/// Columns of the register tile (two 16-lane vectors).
pub(crate) const NR: usize = 32;
/// Largest k-block: a packed A panel (`MR x KC_MAX`, 12 KiB) stays in L1.
pub(crate) const KC_MAX: usize = 256;
/// Largest m-block: the packed A block (`MC_MAX x KC_MAX`, 192 KiB) stays in L2 beside B's.
pub(crate) const MC_MAX: usize = 16 * MR;
/// Largest n-block: the packed B block (`KC_MAX x NC_MAX`, 1 MiB) stays in L2.
pub(crate) const NC_MAX: usize = 32 * NR;

/// True when this CPU can run the AVX-512 kernel (x86-64 with AVX-512F). Not cached here; the
/// dispatcher in `gemm` caches its decision.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs the AVX-512 kernel on a call already validated by `gemm::check_all`
/// (`m, n, k >= 1`; `base_*` are the offsets of element (0, 0)).
///
/// Errors if the CPU lacks AVX-512F.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(crate) fn run_checked(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    (base_a, rsa, csa): (usize, isize, isize),
    b: &[f32],
    (base_b, rsb, csb): (usize, isize, isize),
    beta: f32,
    c: &mut [f32],
    (base_c, rsc, csc): (usize, isize, isize),
) -> Result<()> {
    if !available() {
        return Err(TensorError::InvalidParameter {
            op: "sgemm",
            name: "backend",
            value: "avx512".into(),
            reason: "this CPU has no AVX-512F (use the matrixmultiply backend)".into(),
        });
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present (checked above). The caller validated with `check_all` that
    // every element `base + i * rs + j * cs` (i < rows, j < cols) lies inside its slice and that
    // C's elements are distinct; C is an exclusive borrow, so it overlaps neither A nor B.
    unsafe {
        kernel::gemm(
            m,
            k,
            n,
            alpha,
            kernel::Mat {
                ptr: a.as_ptr().add(base_a),
                rs: rsa,
                cs: csa,
            },
            kernel::Mat {
                ptr: b.as_ptr().add(base_b),
                rs: rsb,
                cs: csb,
            },
            beta,
            kernel::MatMut {
                ptr: c.as_mut_ptr().add(base_c),
                rs: rsc,
                cs: csc,
            },
        );
    }
    Ok(())
}

// The AVX-512 intrinsics and `target_feature(enable = "avx512f")` are stable since Rust 1.89,
// above the workspace's declared `rust-version`; this module is the one place that needs 1.89.
//
// Inside `kernel`, the bodies of the `unsafe fn`s are pointer arithmetic, loads and stores from
// end to end, so `unsafe_op_in_unsafe_fn` (denied for the crate) is allowed here rather than
// wrapping each body in one `unsafe` block that would say nothing more: each function states in
// `# Safety` what its caller guarantees, and the one entry point, `sgemm` above, says at its
// `unsafe` block why those guarantees hold.
#[cfg(target_arch = "x86_64")]
#[clippy::msrv = "1.89"]
#[allow(unsafe_op_in_unsafe_fn)]
mod kernel {
    use core::arch::x86_64::*;
    use std::cell::RefCell;

    use super::{KC_MAX, MC_MAX, MR, NC_MAX, NR};

    /// A read-only strided matrix: element (i, j) at `ptr + i * rs + j * cs`.
    #[derive(Clone, Copy)]
    pub(super) struct Mat {
        pub ptr: *const f32,
        pub rs: isize,
        pub cs: isize,
    }

    /// A writable strided matrix.
    #[derive(Clone, Copy)]
    pub(super) struct MatMut {
        pub ptr: *mut f32,
        pub rs: isize,
        pub cs: isize,
    }

    /// One 64-byte aligned block of 16 floats: the unit the packing buffers are made of.
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Block([f32; 16]);

    /// Per-thread packing buffers (A block, B block, ragged B panel), grown on demand.
    #[derive(Default)]
    struct Buffers {
        a: Vec<Block>,
        b: Vec<Block>,
        edge: Vec<Block>,
    }

    thread_local! {
        static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
    }

    /// A pointer to at least `floats` aligned floats in `v`, growing it if needed.
    fn grow(v: &mut Vec<Block>, floats: usize) -> *mut f32 {
        let blocks = floats.div_ceil(16);
        if v.len() < blocks {
            v.resize(blocks, Block([0.0; 16]));
        }
        v.as_mut_ptr().cast()
    }

    /// The k-blocks `(start, len)`: balanced, at most [`KC_MAX`] long, and a function of `k`
    /// alone, so the order in which an element of C is summed depends only on `k`.
    fn k_blocks(k: usize) -> impl Iterator<Item = (usize, usize)> {
        let count = k.div_ceil(KC_MAX);
        (0..count).map(move |i| {
            let lo = i * k / count;
            (lo, (i + 1) * k / count - lo)
        })
    }

    /// Blocks of `len` at most `max` long, each a multiple of `unit` except the last.
    fn blocks(len: usize, max: usize, unit: usize) -> impl Iterator<Item = (usize, usize)> {
        let count = len.div_ceil(max);
        let size = len.div_ceil(count).div_ceil(unit) * unit;
        (0..count)
            .map(move |i| (i * size, size.min(len.saturating_sub(i * size))))
            .filter(|&(_, l)| l > 0)
    }

    /// Lanes wasted (and a penalty for a strided C) when C's rows are vectorised.
    fn cost(m: usize, n: usize, csc: isize) -> f64 {
        let padded = (m * n.div_ceil(NR) * NR) as f64;
        if csc == 1 {
            padded
        } else {
            padded * 1.3
        }
    }

    /// `C = alpha * A * B + beta * C` (`beta == 0`: C is not read).
    ///
    /// # Safety
    /// AVX-512F available; `m, k, n >= 1`; every addressed element of A, B and C valid; C's
    /// elements distinct and not overlapping A or B.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: Mat,
        b: Mat,
        beta: f32,
        c: MatMut,
    ) {
        if cost(n, m, c.rs) < cost(m, n, c.cs) {
            // C^T = B^T A^T: same per-element arithmetic (fma is symmetric in its factors).
            let at = Mat {
                ptr: b.ptr,
                rs: b.cs,
                cs: b.rs,
            };
            let bt = Mat {
                ptr: a.ptr,
                rs: a.cs,
                cs: a.rs,
            };
            let ct = MatMut {
                ptr: c.ptr,
                rs: c.cs,
                cs: c.rs,
            };
            with_buffers(|bufs| gemm_nn(bufs, n, k, m, alpha, at, bt, beta, ct));
        } else {
            with_buffers(|bufs| gemm_nn(bufs, m, k, n, alpha, a, b, beta, c));
        }
    }

    /// Runs `f` with this thread's buffers (or fresh ones if they are somehow in use).
    fn with_buffers(f: impl FnOnce(&mut Buffers)) {
        let mut f = Some(f);
        let _ = BUFFERS.try_with(|cell| {
            if let Ok(mut bufs) = cell.try_borrow_mut() {
                if let Some(f) = f.take() {
                    f(&mut bufs);
                }
            }
        });
        if let Some(f) = f {
            f(&mut Buffers::default());
        }
    }

    /// The blocked product with C's rows vectorised.
    ///
    /// # Safety
    /// As for [`gemm`]: AVX-512F available; `m, k, n >= 1`; every addressed element of A, B
    /// and C valid; C's elements distinct and not overlapping A or B.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn gemm_nn(
        bufs: &mut Buffers,
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: Mat,
        b: Mat,
        beta: f32,
        c: MatMut,
    ) {
        // Reading B in place saves a copy when each B panel is used by few A panels.
        let direct_b = b.cs == 1 && m <= 2 * MR;
        // A short k leaves room in L2 for more columns per B block (fewer, larger blocks).
        let kc0 = k_blocks(k).next().map_or(KC_MAX, |(_, kc)| kc);
        let nc_max = (KC_MAX * NC_MAX / kc0.max(1) / NR * NR).max(NC_MAX);
        for (jc, nc) in blocks(n, nc_max, NR) {
            for (pi, (pc, kc)) in k_blocks(k).enumerate() {
                let beta_k = if pi == 0 { beta } else { 1.0 };
                let npanels = nc.div_ceil(NR);
                // Where B panel `jr` starts and its row stride.
                let bpack = grow(&mut bufs.b, if direct_b { 0 } else { npanels * kc * NR });
                let edge = if direct_b {
                    grow(&mut bufs.edge, kc * NR)
                } else {
                    std::ptr::null_mut()
                };
                let b_blk = b.ptr.offset(pc as isize * b.rs + jc as isize * b.cs);
                if !direct_b {
                    for jr in 0..npanels {
                        let nr = NR.min(nc - jr * NR);
                        let src = b_blk.offset((jr * NR) as isize * b.cs);
                        pack_b(bpack.add(jr * kc * NR), src, b.rs, b.cs, kc, nr);
                    }
                } else if nc % NR != 0 {
                    let jr = npanels - 1;
                    let src = b_blk.offset((jr * NR) as isize * b.cs);
                    pack_b(edge, src, b.rs, b.cs, kc, nc - jr * NR);
                }
                let apack = grow(&mut bufs.a, MC_MAX.min(m.div_ceil(MR) * MR) * kc);
                for (ic, mc) in blocks(m, MC_MAX, MR) {
                    let a_blk = a.ptr.offset(ic as isize * a.rs + pc as isize * a.cs);
                    // Rows split evenly over the panels (16 rows: 8 + 8, not 12 + 4).
                    let mpanels = mc.div_ceil(MR);
                    let row0 = |ir: usize| ir * mc / mpanels;
                    for ir in 0..mpanels {
                        let mr = row0(ir + 1) - row0(ir);
                        let src = a_blk.offset(row0(ir) as isize * a.rs);
                        pack_a(apack.add(ir * kc * MR), src, a.rs, a.cs, kc, mr);
                    }
                    let bb = BBlock {
                        base: if direct_b { b_blk } else { bpack as *const f32 },
                        panel_stride: if direct_b { NR } else { kc * NR },
                        ldb: if direct_b { b.rs } else { NR as isize },
                        edge,
                        direct: direct_b,
                        nc,
                    };
                    for ir in 0..mpanels {
                        let mr = row0(ir + 1) - row0(ir);
                        let ap = apack.add(ir * kc * MR);
                        let cp = c
                            .ptr
                            .offset((ic + row0(ir)) as isize * c.rs + jc as isize * c.cs);
                        let t = Tile {
                            c: cp,
                            rsc: c.rs,
                            csc: c.cs,
                            nr: NR,
                            alpha,
                            beta: beta_k,
                        };
                        strip(mr, kc, ap, &bb, t);
                    }
                }
            }
        }
    }

    /// The B panels of one `(KC, NC)` block.
    struct BBlock {
        /// Panel 0 (packed, or B itself when `direct`).
        base: *const f32,
        /// Distance between panels.
        panel_stride: usize,
        /// Row stride inside a panel.
        ldb: isize,
        /// The packed ragged last panel when `direct` (rows of [`NR`]).
        edge: *const f32,
        direct: bool,
        /// Columns in the block.
        nc: usize,
    }

    /// Where and how a micro-kernel writes its tile.
    #[derive(Clone, Copy)]
    struct Tile {
        c: *mut f32,
        rsc: isize,
        csc: isize,
        /// Valid columns (1..=32).
        nr: usize,
        alpha: f32,
        beta: f32,
    }

    /// One strip of `mr` rows of C across the B block (tile `t` starts at its left end), from
    /// the packed A panel `a`.
    ///
    /// # Safety
    /// AVX-512F available; `1 <= mr <= MR`; `a` holds `kc >= 1` packed steps of [`MR`] floats;
    /// `bb` describes valid B panels of `kc` rows for its `nc` columns; `t` addresses `mr` rows
    /// and `bb.nc` columns of C that are valid, distinct and overlap neither A nor B.
    #[target_feature(enable = "avx512f")]
    unsafe fn strip(mr: usize, kc: usize, a: *const f32, bb: &BBlock, t: Tile) {
        match mr {
            12 => strip_r::<12>(kc, a, bb, t),
            11 => strip_r::<11>(kc, a, bb, t),
            10 => strip_r::<10>(kc, a, bb, t),
            9 => strip_r::<9>(kc, a, bb, t),
            8 => strip_r::<8>(kc, a, bb, t),
            7 => strip_r::<7>(kc, a, bb, t),
            6 => strip_r::<6>(kc, a, bb, t),
            5 => strip_r::<5>(kc, a, bb, t),
            4 => strip_r::<4>(kc, a, bb, t),
            3 => strip_r::<3>(kc, a, bb, t),
            2 => strip_r::<2>(kc, a, bb, t),
            _ => strip_r::<1>(kc, a, bb, t),
        }
    }

    /// [`strip`] for exactly `R` rows: one [`tile`] per 32-column panel.
    ///
    /// # Safety
    /// As for [`strip`], with `mr == R`.
    #[target_feature(enable = "avx512f")]
    unsafe fn strip_r<const R: usize>(kc: usize, a: *const f32, bb: &BBlock, t: Tile) {
        let mut jr = 0;
        while jr * NR < bb.nc {
            let nr = NR.min(bb.nc - jr * NR);
            let (bp, ldb) = if bb.direct && nr < NR {
                (bb.edge, NR as isize)
            } else {
                (bb.base.add(jr * bb.panel_stride), bb.ldb)
            };
            let tj = Tile {
                c: t.c.offset((jr * NR) as isize * t.csc),
                nr,
                ..t
            };
            tile::<R>(kc, a, bp, ldb, tj);
            jr += 1;
        }
    }

    /// The micro-kernel: an `R x 32` tile of C from an A panel (`kc >= 1` steps of [`MR`]
    /// floats) and a B panel (`kc` rows of 32 floats, `ldb` apart).
    ///
    /// # Safety
    /// AVX-512F available; `kc >= 1`; `a` valid for `kc * MR` floats (the first `R` of each
    /// step read); `b + s * ldb` valid for 32 floats for every step `s < kc`; `t` addresses an
    /// `R x t.nr` tile of C (`t.nr <= 32`) that is valid, distinct and overlaps neither A nor B.
    #[inline]
    #[allow(clippy::needless_range_loop)] // `r` indexes A's panel and the accumulators alike
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize>(kc: usize, a: *const f32, b: *const f32, ldb: isize, t: Tile) {
        // The first step initialises the accumulators (no zeroing, which also keeps LLVM from
        // giving them a memory home).
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let b0 = _mm512_loadu_ps(b);
        let b1 = _mm512_loadu_ps(b.add(16));
        for r in 0..R {
            let av = _mm512_set1_ps(*a.add(r));
            acc[r][0] = _mm512_mul_ps(av, b0);
            acc[r][1] = _mm512_mul_ps(av, b1);
        }
        // Wrapping steps: after the last step the pointers may point past B (never read).
        let (mut a, mut b) = (a.wrapping_add(MR), b.wrapping_offset(ldb));
        for _ in 1..kc {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            for r in 0..R {
                let av = _mm512_set1_ps(*a.add(r));
                acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
            }
            a = a.wrapping_add(MR);
            b = b.wrapping_offset(ldb);
        }
        let (m0, m1) = (lanes(t.nr), lanes(t.nr.saturating_sub(16)));
        let alpha = _mm512_set1_ps(t.alpha);
        // alpha == 1 skips the multiply: `1 * x` and `fma(1, x, c)` round exactly like `x` and
        // `x + c`, so the result is the same bit for bit.
        if t.csc == 1 && t.beta == 0.0 && t.alpha == 1.0 {
            for r in 0..R {
                let cp = t.c.offset(r as isize * t.rsc);
                _mm512_mask_storeu_ps(cp, m0, acc[r][0]);
                _mm512_mask_storeu_ps(cp.wrapping_add(16), m1, acc[r][1]);
            }
        } else if t.csc == 1 && t.beta == 1.0 && t.alpha == 1.0 {
            for r in 0..R {
                let cp = t.c.offset(r as isize * t.rsc);
                let c0 = _mm512_maskz_loadu_ps(m0, cp);
                let c1 = _mm512_maskz_loadu_ps(m1, cp.wrapping_add(16));
                _mm512_mask_storeu_ps(cp, m0, _mm512_add_ps(acc[r][0], c0));
                _mm512_mask_storeu_ps(cp.wrapping_add(16), m1, _mm512_add_ps(acc[r][1], c1));
            }
        } else if t.csc == 1 && t.beta == 0.0 {
            for r in 0..R {
                let cp = t.c.offset(r as isize * t.rsc);
                _mm512_mask_storeu_ps(cp, m0, _mm512_mul_ps(alpha, acc[r][0]));
                _mm512_mask_storeu_ps(cp.wrapping_add(16), m1, _mm512_mul_ps(alpha, acc[r][1]));
            }
        } else if t.csc == 1 && t.beta == 1.0 {
            for r in 0..R {
                let cp = t.c.offset(r as isize * t.rsc);
                let c0 = _mm512_maskz_loadu_ps(m0, cp);
                let c1 = _mm512_maskz_loadu_ps(m1, cp.wrapping_add(16));
                _mm512_mask_storeu_ps(cp, m0, _mm512_fmadd_ps(alpha, acc[r][0], c0));
                _mm512_mask_storeu_ps(
                    cp.wrapping_add(16),
                    m1,
                    _mm512_fmadd_ps(alpha, acc[r][1], c1),
                );
            }
        } else {
            for r in 0..R {
                let cp = t.c.offset(r as isize * t.rsc);
                store_general(acc[r][0], cp, m0, t);
                if m1 != 0 {
                    store_general(acc[r][1], cp.offset(16 * t.csc), m1, t);
                }
            }
        }
    }

    /// `C = alpha * v + beta * C` for the lanes in `mask` of the 16 elements of C starting at
    /// `cp` (`t.csc` apart), for any `beta` and column stride; with `beta == 0` C is not read.
    /// The vector arithmetic is the one of the fast paths in [`tile`] (`beta` 0: `alpha * v`;
    /// 1: `fma(alpha, v, c)`; else `fma(alpha, v, beta * c)`), so every element is rounded the
    /// same way whatever C's strides.
    ///
    /// # Safety
    /// AVX-512F available; `mask` is a prefix of lanes (from [`lanes`]); for each lane `l` in
    /// it, `cp + l * t.csc` is a valid element of C, not aliased by anything else live.
    #[target_feature(enable = "avx512f")]
    unsafe fn store_general(v: __m512, cp: *mut f32, mask: __mmask16, t: Tile) {
        let count = mask.count_ones() as usize;
        let mut buf = [0.0f32; 16];
        if t.beta != 0.0 {
            for (l, x) in buf.iter_mut().enumerate().take(count) {
                *x = *cp.offset(l as isize * t.csc);
            }
        }
        let old = _mm512_loadu_ps(buf.as_ptr());
        let alpha = _mm512_set1_ps(t.alpha);
        let res = if t.beta == 0.0 {
            _mm512_mul_ps(alpha, v)
        } else if t.beta == 1.0 {
            _mm512_fmadd_ps(alpha, v, old)
        } else {
            _mm512_fmadd_ps(alpha, v, _mm512_mul_ps(_mm512_set1_ps(t.beta), old))
        };
        _mm512_storeu_ps(buf.as_mut_ptr(), res);
        for (l, x) in buf.iter().enumerate().take(count) {
            *cp.offset(l as isize * t.csc) = *x;
        }
    }

    /// Mask of the first `n` (<= 16) lanes.
    #[inline]
    fn lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            0xFFFF
        } else {
            ((1u32 << n) - 1) as u16
        }
    }

    /// Transposes 16 vectors: `out[q]` lane `r` = `rows[r]` lane `q`.
    ///
    /// # Safety
    /// AVX-512F available (the only requirement: it reads no memory but `r`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn transpose16(r: &[__m512; 16]) -> [__m512; 16] {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for i in 0..4 {
            let (t0, t1, t2, t3) = (
                _mm512_castps_pd(t[4 * i]),
                _mm512_castps_pd(t[4 * i + 1]),
                _mm512_castps_pd(t[4 * i + 2]),
                _mm512_castps_pd(t[4 * i + 3]),
            );
            u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
            u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
            u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
            u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
        }
        // u[4i + c], 128-bit lane l, holds rows 4i..4i+4 of column 4l + c.
        let mut out = [_mm512_setzero_ps(); 16];
        for col in 0..4 {
            let x0 = _mm512_shuffle_f32x4::<0x88>(u[col], u[4 + col]);
            let x1 = _mm512_shuffle_f32x4::<0xDD>(u[col], u[4 + col]);
            let y0 = _mm512_shuffle_f32x4::<0x88>(u[8 + col], u[12 + col]);
            let y1 = _mm512_shuffle_f32x4::<0xDD>(u[8 + col], u[12 + col]);
            out[col] = _mm512_shuffle_f32x4::<0x88>(x0, y0);
            out[8 + col] = _mm512_shuffle_f32x4::<0xDD>(x0, y0);
            out[4 + col] = _mm512_shuffle_f32x4::<0x88>(x1, y1);
            out[12 + col] = _mm512_shuffle_f32x4::<0xDD>(x1, y1);
        }
        out
    }

    /// Loads up to 16 "lines" of up to 16 contiguous floats (`line l` at `src + l * ld`),
    /// zero elsewhere, and transposes them: `out[q]` lane `l` = `src[l * ld + q]`.
    ///
    /// # Safety
    /// AVX-512F available; `nlines <= 16`, `len <= 16`; for each line `l < nlines`,
    /// `src + l * ld` is valid for `len` floats.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_t(src: *const f32, ld: isize, nlines: usize, len: usize) -> [__m512; 16] {
        let mask = lanes(len);
        let mut rows = [_mm512_setzero_ps(); 16];
        for (l, row) in rows.iter_mut().enumerate() {
            // Lines past `nlines` load nothing (mask 0) from a valid address (line 0).
            let (m, p) = if l < nlines {
                (mask, src.offset(l as isize * ld))
            } else {
                (0, src)
            };
            *row = _mm512_maskz_loadu_ps(m, p);
        }
        transpose16(&rows)
    }

    /// Packs `mr` rows x `kc` columns of A (strides `rs`, `cs`) as `kc` groups of [`MR`]
    /// floats (rows past `mr` left unspecified; the kernels for `mr` rows never read them).
    ///
    /// # Safety
    /// AVX-512F available; `1 <= mr <= MR`; every element `src + r * rs + p * cs` (`r < mr`,
    /// `p < kc`) valid; `dst` valid for `kc * MR` floats and not overlapping the source.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_a(dst: *mut f32, src: *const f32, rs: isize, cs: isize, kc: usize, mr: usize) {
        if cs == 1 && mr > 1 {
            // Row-major: 16 k-steps at a time through a transpose.
            let mask = lanes(mr);
            let mut p = 0;
            while p < kc {
                let len = 16.min(kc - p);
                let cols = load_t(src.add(p), rs, mr, len);
                for (q, v) in cols.iter().enumerate().take(len) {
                    _mm512_mask_storeu_ps(dst.add((p + q) * MR), mask, *v);
                }
                p += 16;
            }
        } else if rs == 1 {
            let mask = lanes(mr);
            for p in 0..kc {
                let v = _mm512_maskz_loadu_ps(mask, src.offset(p as isize * cs));
                _mm512_mask_storeu_ps(dst.add(p * MR), mask, v);
            }
        } else {
            for p in 0..kc {
                for r in 0..mr {
                    *dst.add(p * MR + r) = *src.offset(r as isize * rs + p as isize * cs);
                }
            }
        }
    }

    /// Packs `kc` rows x `nr` columns of B (strides `rs`, `cs`) as `kc` rows of [`NR`] floats,
    /// zero-padded past `nr`.
    ///
    /// # Safety
    /// AVX-512F available; `1 <= nr <= NR`; every element `src + p * rs + j * cs` (`p < kc`,
    /// `j < nr`) valid; `dst` valid for `kc * NR` floats and not overlapping the source.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_b(dst: *mut f32, src: *const f32, rs: isize, cs: isize, kc: usize, nr: usize) {
        if cs == 1 {
            let (m0, m1) = (lanes(nr), lanes(nr.saturating_sub(16)));
            for p in 0..kc {
                let s = src.offset(p as isize * rs);
                let d = dst.add(p * NR);
                _mm512_storeu_ps(d, _mm512_maskz_loadu_ps(m0, s));
                _mm512_storeu_ps(d.add(16), _mm512_maskz_loadu_ps(m1, s.wrapping_add(16)));
            }
        } else if rs == 1 {
            // Column-major: 16 columns x 16 k-steps at a time through a transpose.
            for h in 0..2 {
                let ncols = nr.saturating_sub(16 * h).min(16);
                let mut p = 0;
                while p < kc {
                    let len = 16.min(kc - p);
                    let rows = if ncols == 0 {
                        [_mm512_setzero_ps(); 16]
                    } else {
                        load_t(src.offset((16 * h) as isize * cs).add(p), cs, ncols, len)
                    };
                    for (q, v) in rows.iter().enumerate().take(len) {
                        _mm512_storeu_ps(dst.add((p + q) * NR + 16 * h), *v);
                    }
                    p += 16;
                }
            }
        } else {
            for p in 0..kc {
                for j in 0..NR {
                    *dst.add(p * NR + j) = if j < nr {
                        *src.offset(p as isize * rs + j as isize * cs)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

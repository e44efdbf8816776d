//! [`sgemm`]: a checked, safe matrix product on one of two [`GemmBackend`]s:
//! [`matrixmultiply::sgemm`] (portable; on x86-64 it already has AVX2 and AVX-512 kernels) or
//! this crate's packed kernel with a 12 x 32 AVX-512 register tile (`gemm_avx512`, x86-64 with
//! AVX-512F only). [`sgemm_backend`] names the one in use, chosen once per process from the
//! environment variable `FRACTURE_GEMM` (`avx512` or `matrixmultiply`); [`sgemm_with`] runs a
//! chosen backend (for benchmarks and tests).
//!
//! Unset, `FRACTURE_GEMM` means `matrixmultiply` for now: against `matrixmultiply`'s own
//! AVX-512 kernel, the AVX-512 backend is 1.0-1.1x on the large convolution products on an idle
//! core (both near the FMA peak) and 1.2-1.9x on small-output ones (first layers, 16-64 output
//! channels), short of the 1.2x on large products required to make it the default
//! (`benches/gemm.rs` measures both).
//!
//! Matrices are described by a slice plus a row stride and a column stride (in elements), so a
//! transpose is just swapped strides and costs no copy. Negative strides are allowed; the
//! wrapper finds where element (0, 0) must sit so that every addressed element is inside the
//! slice, and refuses shapes/strides that would read or write out of bounds.

use std::sync::OnceLock;

use crate::error::{Result, TensorError};
use crate::gemm_avx512;

/// The implementations behind [`sgemm`].
///
/// ```
/// use fracture_tensor::{sgemm_backend, GemmBackend};
/// // The portable fallback runs everywhere; the active backend is always available.
/// assert!(GemmBackend::MatrixMultiply.is_available());
/// assert!(GemmBackend::active().is_available());
/// assert_eq!(sgemm_backend(), GemmBackend::active().name());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmBackend {
    /// The `matrixmultiply` crate: portable, with its own AVX2/FMA and AVX-512 kernels on
    /// x86-64 (chosen at run time by that crate). The default.
    MatrixMultiply,
    /// This crate's packed SGEMM with a 12 x 32 AVX-512 register tile (x86-64 with AVX-512F).
    Avx512,
}

impl GemmBackend {
    /// Short name: `"matrixmultiply"` or `"avx512"` (the values `FRACTURE_GEMM` understands).
    pub fn name(self) -> &'static str {
        match self {
            GemmBackend::MatrixMultiply => "matrixmultiply",
            GemmBackend::Avx512 => "avx512",
        }
    }

    /// True when this CPU can run the backend (always for [`GemmBackend::MatrixMultiply`]).
    pub fn is_available(self) -> bool {
        match self {
            GemmBackend::MatrixMultiply => true,
            GemmBackend::Avx512 => gemm_avx512::available(),
        }
    }

    /// The backend for a value of `FRACTURE_GEMM`: `"avx512"` gives [`GemmBackend::Avx512`] if
    /// this CPU has it (else the fallback), `"matrixmultiply"` gives
    /// [`GemmBackend::MatrixMultiply`], and anything else (or `None`, unset) the default, which
    /// is [`GemmBackend::MatrixMultiply`] (see the module docs for why).
    ///
    /// ```
    /// use fracture_tensor::GemmBackend;
    /// assert_eq!(GemmBackend::select(Some("matrixmultiply")), GemmBackend::MatrixMultiply);
    /// assert_eq!(GemmBackend::select(None), GemmBackend::MatrixMultiply);
    /// let want = if GemmBackend::Avx512.is_available() {
    ///     GemmBackend::Avx512
    /// } else {
    ///     GemmBackend::MatrixMultiply
    /// };
    /// assert_eq!(GemmBackend::select(Some("avx512")), want);
    /// ```
    pub fn select(value: Option<&str>) -> GemmBackend {
        match value.map(str::trim) {
            Some("avx512") if GemmBackend::Avx512.is_available() => GemmBackend::Avx512,
            _ => GemmBackend::MatrixMultiply,
        }
    }

    /// The backend [`sgemm`] uses in this process: [`GemmBackend::select`] of the environment
    /// variable `FRACTURE_GEMM`, read once (the first call decides).
    pub fn active() -> GemmBackend {
        static ACTIVE: OnceLock<GemmBackend> = OnceLock::new();
        *ACTIVE.get_or_init(|| GemmBackend::select(std::env::var("FRACTURE_GEMM").ok().as_deref()))
    }
}

/// Name of the backend [`sgemm`] runs on in this process: `"matrixmultiply"` (the default) or
/// `"avx512"` (this crate's AVX-512 kernel, with `FRACTURE_GEMM=avx512` on an x86-64 CPU with
/// AVX-512F). Benchmarks print it so their numbers say which kernel produced them. See
/// [`GemmBackend::active`].
///
/// ```
/// let name = fracture_tensor::sgemm_backend();
/// assert!(name == "avx512" || name == "matrixmultiply");
/// ```
pub fn sgemm_backend() -> &'static str {
    GemmBackend::active().name()
}

/// Offset of element (0, 0) and the number of elements a `rows x cols` matrix with strides
/// `(rs, cs)` spans, or `None` on arithmetic overflow. Only valid for `rows, cols > 0`.
fn span(rows: usize, cols: usize, rs: isize, cs: isize) -> Option<(usize, usize)> {
    let r = isize::try_from(rows - 1).ok()?.checked_mul(rs)?;
    let c = isize::try_from(cols - 1).ok()?.checked_mul(cs)?;
    let lo = r.min(0).checked_add(c.min(0))?;
    let hi = r.max(0).checked_add(c.max(0))?;
    let base = lo.checked_neg()?;
    let needed = hi.checked_add(base)?.checked_add(1)?;
    Some((usize::try_from(base).ok()?, usize::try_from(needed).ok()?))
}

fn check_operand(
    op: &'static str,
    operand: &'static str,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
    len: usize,
) -> Result<usize> {
    let (base, needed) = span(rows, cols, rs, cs).ok_or_else(|| TensorError::InvalidParameter {
        op,
        name: "strides",
        value: format!("{operand}: {rows}x{cols} with strides ({rs}, {cs})"),
        reason: "index arithmetic overflows".into(),
    })?;
    if needed > len {
        return Err(TensorError::SliceTooShort {
            op,
            operand,
            needed,
            got: len,
        });
    }
    Ok(base)
}

/// True when the `m x n` output strides map distinct (i, j) to distinct elements.
fn output_strides_distinct(m: usize, n: usize, rs: isize, cs: isize) -> bool {
    let (ars, acs) = (rs.unsigned_abs(), cs.unsigned_abs());
    match (m > 1, n > 1) {
        (false, false) => true,
        (true, false) => ars > 0,
        (false, true) => acs > 0,
        (true, true) => {
            (acs > 0 && ars >= acs.saturating_mul(n)) || (ars > 0 && acs >= ars.saturating_mul(m))
        }
    }
}

/// `C = alpha * A * B + beta * C` with `A` of shape `m x k`, `B` of shape `k x n` and `C` of
/// shape `m x n`, each given as a slice with a row stride `rs*` and a column stride `cs*`
/// (element `(i, j)` of `A` is `a[base + i * rsa + j * csa]`, with `base` 0 for non-negative
/// strides). When `beta == 0`, `C` is overwritten without being read (NaNs in it vanish).
///
/// Errors if a slice is too short for its shape and strides, or if `C`'s strides would make
/// two output elements share memory. Empty `m` or `n` do nothing; `k == 0` scales `C` by `beta`.
/// Runs on the backend named by [`sgemm_backend`].
///
/// ```
/// use fracture_tensor::sgemm;
/// // A = [[1, 2], [3, 4]] row-major; B = A^T given by swapping strides; C = A * A^T.
/// let a = [1.0, 2.0, 3.0, 4.0];
/// let mut c = [0.0f32; 4];
/// sgemm(2, 2, 2, 1.0, &a, 2, 1, &a, 1, 2, 0.0, &mut c, 2, 1)?;
/// assert_eq!(c, [5.0, 11.0, 11.0, 25.0]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
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
    sgemm_with(
        GemmBackend::active(),
        m,
        k,
        n,
        alpha,
        a,
        rsa,
        csa,
        b,
        rsb,
        csb,
        beta,
        c,
        rsc,
        csc,
    )
}

/// [`sgemm`] on a chosen backend, with the same contract and checks. Errors (and touches
/// nothing) if the backend is not available on this CPU (see [`GemmBackend::is_available`]).
/// Both backends agree to within f32 rounding, not bit for bit: they sum in different orders.
///
/// ```
/// use fracture_tensor::{sgemm_with, GemmBackend};
/// let a = [1.0, 2.0, 3.0, 4.0];
/// let mut c = [0.0f32; 4];
/// sgemm_with(GemmBackend::MatrixMultiply, 2, 2, 2, 1.0, &a, 2, 1, &a, 1, 2, 0.0, &mut c, 2, 1)?;
/// assert_eq!(c, [5.0, 11.0, 11.0, 25.0]);
/// if GemmBackend::Avx512.is_available() {
///     sgemm_with(GemmBackend::Avx512, 2, 2, 2, 1.0, &a, 2, 1, &a, 1, 2, 0.0, &mut c, 2, 1)?;
///     assert_eq!(c, [5.0, 11.0, 11.0, 25.0]);
/// }
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with(
    backend: GemmBackend,
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
    if !backend.is_available() {
        return Err(TensorError::InvalidParameter {
            op: "sgemm",
            name: "backend",
            value: backend.name().into(),
            reason: "this CPU cannot run it (AVX-512F missing)".into(),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (base_a, base_b, base_c) =
        check_all("sgemm", m, k, n, a, rsa, csa, b, rsb, csb, c, rsc, csc)?;
    if k == 0 {
        // Done here for both backends because A and B are not checked then.
        for i in 0..m {
            for j in 0..n {
                let idx = base_c as isize + i as isize * rsc + j as isize * csc;
                let v = &mut c[idx as usize];
                *v = if beta == 0.0 { 0.0 } else { beta * *v };
            }
        }
        return Ok(());
    }
    if backend == GemmBackend::Avx512 {
        return gemm_avx512::run_checked(
            m,
            k,
            n,
            alpha,
            a,
            (base_a, rsa, csa),
            b,
            (base_b, rsb, csb),
            beta,
            c,
            (base_c, rsc, csc),
        );
    }
    // SAFETY: `check_operand` proved that for every i < rows, j < cols the element
    // `base + i * rs + j * cs` lies inside the corresponding slice (no overflow either), and
    // `output_strides_distinct` that no two elements of C alias. A and B are shared borrows
    // and C an exclusive one, so C cannot overlap A or B.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr().add(base_a),
            rsa,
            csa,
            b.as_ptr().add(base_b),
            rsb,
            csb,
            beta,
            c.as_mut_ptr().add(base_c),
            rsc,
            csc,
        );
    }
    Ok(())
}

/// Validates a GEMM call: returns the offsets of element (0, 0) in `a`, `b` and `c`.
/// With `m == 0` or `n == 0` nothing is addressed (all zeros); with `k == 0` only `c` is.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_all(
    op: &'static str,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: isize,
    csa: isize,
    b: &[f32],
    rsb: isize,
    csb: isize,
    c: &[f32],
    rsc: isize,
    csc: isize,
) -> Result<(usize, usize, usize)> {
    if m == 0 || n == 0 {
        return Ok((0, 0, 0));
    }
    let base_c = check_operand(op, "c", m, n, rsc, csc, c.len())?;
    if !output_strides_distinct(m, n, rsc, csc) {
        return Err(TensorError::InvalidParameter {
            op,
            name: "c strides",
            value: format!("({rsc}, {csc}) for a {m}x{n} output"),
            reason: "two output elements would share memory".into(),
        });
    }
    if k == 0 {
        return Ok((0, 0, base_c));
    }
    let base_a = check_operand(op, "a", m, k, rsa, csa, a.len())?;
    let base_b = check_operand(op, "b", k, n, rsb, csb, b.len())?;
    Ok((base_a, base_b, base_c))
}

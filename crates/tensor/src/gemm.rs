//! [`sgemm`]: a checked, safe wrapper over [`matrixmultiply::sgemm`].
//!
//! Matrices are described by a slice plus a row stride and a column stride (in elements), so a
//! transpose is just swapped strides and costs no copy. Negative strides are allowed; the
//! wrapper finds where element (0, 0) must sit so that every addressed element is inside the
//! slice, and refuses shapes/strides that would read or write out of bounds.

use crate::error::{Result, TensorError};

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
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (base_a, base_b, base_c) =
        check_all("sgemm", m, k, n, a, rsa, csa, b, rsb, csb, c, rsc, csc)?;
    if k == 0 {
        // matrixmultiply would do the same; done here because A and B are not checked then.
        for i in 0..m {
            for j in 0..n {
                let idx = base_c as isize + i as isize * rsc + j as isize * csc;
                let v = &mut c[idx as usize];
                *v = if beta == 0.0 { 0.0 } else { beta * *v };
            }
        }
        return Ok(());
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

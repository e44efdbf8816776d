//! im2col / col2im for one channel of one image: the data movement that turns a convolution
//! into a matrix product.
//!
//! For channel `c`, the column block holds `KH * KW` rows (one per kernel offset `(ki, kj)`,
//! row-major), each `rows * OW` long: the input values seen by that kernel offset at output
//! positions `(oh0..oh0 + rows) x (0..OW)`, zero where the window lies in the padding. Stacking
//! the blocks of all channels gives the `[C * KH * KW, rows * OW]` matrix of im2col. The inner
//! loops run over contiguous slices with precomputed valid ranges, so they have no per-element
//! branches or bounds checks.

/// Geometry of one convolution, everything the per-channel helpers need.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    /// The valid output-column range `[lo, hi)` for kernel column `kj`: those `ow` whose input
    /// column `ow * sw + kj - pw` lies in `0..W`.
    fn ow_range(&self, kj: usize) -> (usize, usize) {
        let lo = if self.pw > kj {
            (self.pw - kj).div_ceil(self.sw)
        } else {
            0
        }
        .min(self.ow);
        let hi = if self.w + self.pw > kj {
            ((self.w - 1 + self.pw - kj) / self.sw + 1).min(self.ow)
        } else {
            0
        };
        (lo, hi.max(lo))
    }

    /// The input row seen by output row `oh` at kernel row `ki`, if it is not padding.
    fn input_row(&self, oh: usize, ki: usize) -> Option<usize> {
        (oh * self.sh + ki)
            .checked_sub(self.ph)
            .filter(|&r| r < self.h)
    }
}

/// Fills the column block of one channel for output rows `oh0..oh0 + rows`.
/// `plane` is the channel's `H * W` input; `col` is `KH * KW * rows * OW` long.
pub(crate) fn im2col_channel(plane: &[f32], g: &Geom, oh0: usize, rows: usize, col: &mut [f32]) {
    let ncols = rows * g.ow;
    for ki in 0..g.kh {
        for kj in 0..g.kw {
            let (lo, hi) = g.ow_range(kj);
            let dst_row = &mut col[(ki * g.kw + kj) * ncols..][..ncols];
            for (r, dst) in dst_row.chunks_exact_mut(g.ow).enumerate() {
                let Some(ih) = g.input_row(oh0 + r, ki) else {
                    dst.fill(0.0);
                    continue;
                };
                let src = &plane[ih * g.w..][..g.w];
                dst[..lo].fill(0.0);
                dst[hi..].fill(0.0);
                if lo == hi {
                    continue;
                }
                // Input column of output column `lo`.
                let start = lo * g.sw + kj - g.pw;
                let dst = &mut dst[lo..hi];
                if g.sw == 1 {
                    dst.copy_from_slice(&src[start..start + dst.len()]);
                } else {
                    for (d, s) in dst.iter_mut().zip(src[start..].iter().step_by(g.sw)) {
                        *d = *s;
                    }
                }
            }
        }
    }
}

/// Adds the column block of one channel for output rows `oh0..oh0 + rows` back into its
/// `H * W` gradient plane (the adjoint of [`im2col_channel`]). `plane` must be zeroed by the
/// caller first if a fresh gradient is wanted.
pub(crate) fn col2im_channel(col: &[f32], g: &Geom, oh0: usize, rows: usize, plane: &mut [f32]) {
    let ncols = rows * g.ow;
    for ki in 0..g.kh {
        for kj in 0..g.kw {
            let (lo, hi) = g.ow_range(kj);
            if lo == hi {
                continue;
            }
            let start = lo * g.sw + kj - g.pw;
            let src_row = &col[(ki * g.kw + kj) * ncols..][..ncols];
            for (r, src) in src_row.chunks_exact(g.ow).enumerate() {
                let Some(ih) = g.input_row(oh0 + r, ki) else {
                    continue;
                };
                let dst = &mut plane[ih * g.w..][..g.w];
                let src = &src[lo..hi];
                if g.sw == 1 {
                    for (d, s) in dst[start..start + src.len()].iter_mut().zip(src) {
                        *d += *s;
                    }
                } else {
                    for (d, s) in dst[start..].iter_mut().step_by(g.sw).zip(src) {
                        *d += *s;
                    }
                }
            }
        }
    }
}

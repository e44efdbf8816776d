//! The fast convolution: im2col + GEMM through [`sgemm`], parallel with rayon, writing into
//! caller-provided buffers. Inputs are validated by the callers in `conv`.
//!
//! Determinism: every output element is produced by the same sequence of floating-point
//! operations whatever the thread count. The forward and dx passes compute each image (or
//! each block of output rows of one GEMM) independently; the dw and db reductions over the long
//! `N * OH * OW` dimension use a fixed chunking (see [`dw_chunks`]) and add the partial sums in
//! chunk order.

use std::sync::Mutex;

use rayon::prelude::*;

use crate::conv::ConvParams;
use crate::error::{Result, TensorError};
use crate::gemm::sgemm;
use crate::im2col::{col2im_channel, im2col_channel, Geom};
use crate::sum::sum_f32;
use crate::tensor::Tensor4;
use crate::workspace::{with_buf, ConvWorkspace};

/// Number of partial weight gradients the backward pass splits its long inner dimension
/// (N * OH * OW) into. Fixed, so the reduction order never depends on the thread count.
const DW_CHUNKS: usize = 8;

/// Target size (in f32) of one im2col block: images are processed in blocks of output rows
/// whose column matrix stays in the L2 cache while the GEMM packs it.
const COL_BLOCK: usize = 384 * 1024;

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

/// Fills the rows of `y` (`np` long each) with the bias, returning the GEMM `beta` to use
/// (1 to add onto the bias, 0 to overwrite when there is none).
fn init_bias(y: &mut [f32], b: Option<&[f32]>, np: usize) -> f32 {
    match b {
        Some(b) => {
            for (row, &bv) in y.chunks_exact_mut(np).zip(b) {
                row.fill(bv);
            }
            1.0
        }
        None => 0.0,
    }
}

/// `y[o, offset..][.. cols] (+)= W[o, :] * col` for the `rows` output channels held by `y`
/// (`np`-long rows), with `col` the `k x cols` column block.
#[allow(clippy::too_many_arguments)]
fn forward_gemm(
    w: &[f32],
    col: &[f32],
    beta: f32,
    y: &mut [f32],
    rows: usize,
    k: usize,
    np: usize,
    offset: usize,
    cols: usize,
) -> Result<()> {
    sgemm(
        rows,
        k,
        cols,
        1.0,
        w,
        k as isize,
        1,
        col,
        cols as isize,
        1,
        beta,
        &mut y[offset..],
        np as isize,
        1,
    )
}

/// Output-row blocks `(oh0, rows)` covering `oh0..oh1`, each with an im2col matrix of at most
/// about [`COL_BLOCK`] elements (at least one row), balanced in size.
fn row_blocks(d: &Dims, oh0: usize, oh1: usize) -> impl Iterator<Item = (usize, usize)> {
    let total = oh1 - oh0;
    let max_rows = (COL_BLOCK / (d.k * d.g.ow).max(1)).clamp(1, total.max(1));
    let count = total.div_ceil(max_rows).max(1);
    (0..count).map(move |i| {
        let a = oh0 + i * total / count;
        let b = oh0 + (i + 1) * total / count;
        (a, b - a)
    })
}

/// Length of the im2col buffer one task needs: the largest row block of a whole image.
fn block_len(d: &Dims) -> usize {
    if d.pointwise {
        0
    } else {
        row_blocks(d, 0, d.g.oh)
            .map(|(_, rows)| rows * d.g.ow * d.k)
            .max()
            .unwrap_or(0)
    }
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

/// Forward into `y` (`N * O * OH * OW` elements, any contents); `out` is the checked output shape.
pub(crate) fn forward(
    x: &Tensor4,
    w: &Tensor4,
    b: Option<&[f32]>,
    p: ConvParams,
    out: [usize; 4],
    ws: &mut ConvWorkspace,
    y: &mut [f32],
) -> Result<()> {
    let d = dims(x.shape(), w.shape(), p, out);
    let (xs, wsl) = (x.as_slice(), w.as_slice());
    let (o, k, np, ow) = (d.o, d.k, d.np, d.g.ow);
    let col_len = block_len(&d);
    let threads = rayon::current_num_threads().max(1);
    if d.n >= threads {
        // Parallel over the batch; each task uses its worker thread's buffer.
        ws.prepare(threads, col_len);
        let bufs = &ws.bufs;
        y.par_chunks_mut(o * np)
            .zip(xs.par_chunks(d.c * d.hw))
            .try_for_each(|(y_img, x_img)| {
                let beta = init_bias(y_img, b, np);
                if d.pointwise {
                    return forward_gemm(wsl, x_img, beta, y_img, o, k, np, 0, np);
                }
                with_buf(bufs, |col| {
                    for (oh0, rows) in row_blocks(&d, 0, d.g.oh) {
                        let cols = rows * ow;
                        let col = &mut col[..k * cols];
                        im2col_image(x_img, &d, oh0, rows, col);
                        forward_gemm(wsl, col, beta, y_img, o, k, np, oh0 * ow, cols)?;
                    }
                    Ok(())
                })
            })
    } else {
        // Fewer images than threads: parallel im2col over channels, then the GEMM split by
        // output channels (each output element is still computed by the same kernel calls).
        ws.prepare(1, col_len);
        let col = ws.bufs[0].get_mut().unwrap_or_else(|e| e.into_inner());
        let ob = o.div_ceil(threads);
        for (y_img, x_img) in y.chunks_exact_mut(o * np).zip(xs.chunks_exact(d.c * d.hw)) {
            let beta = init_bias(y_img, b, np);
            let blocks: Vec<(usize, usize)> = if d.pointwise {
                vec![(0, d.g.oh)]
            } else {
                row_blocks(&d, 0, d.g.oh).collect()
            };
            for (oh0, rows) in blocks {
                let cols = rows * ow;
                let colm: &[f32] = if d.pointwise {
                    x_img
                } else {
                    let col = &mut col[..k * cols];
                    col.par_chunks_mut(d.kk * cols)
                        .zip(x_img.par_chunks(d.hw))
                        .for_each(|(cb, plane)| im2col_channel(plane, &d.g, oh0, rows, cb));
                    col
                };
                y_img
                    .par_chunks_mut(ob * np)
                    .enumerate()
                    .try_for_each(|(bi, yb)| {
                        let (o0, orows) = (bi * ob, yb.len() / np);
                        let wb = &wsl[o0 * k..(o0 + orows) * k];
                        forward_gemm(wb, colm, beta, yb, orows, k, np, oh0 * ow, cols)
                    })?;
            }
        }
        Ok(())
    }
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
) -> Result<()> {
    let d = dims(x.shape(), w.shape(), p, out);
    let (xs, wsl, dys) = (x.as_slice(), w.as_slice(), dy.as_slice());
    let (o, k, np, ow) = (d.o, d.k, d.np, d.g.ow);
    let threads = rayon::current_num_threads().max(1);
    ws.prepare(threads, block_len(&d));

    // dw = sum over chunks of dy_chunk * col_chunk^T, and db = row sums of dy_chunk, one
    // partial per chunk.
    let chunks = dw_chunks(d.n, d.g.oh);
    let part_len = o * k;
    let parts_len = chunks.len() * part_len;
    if ws.partials.len() < parts_len {
        ws.partials.resize(parts_len, 0.0);
    }
    if ws.db_partials.len() < chunks.len() * o {
        ws.db_partials.resize(chunks.len() * o, 0.0);
    }
    // When every chunk holds whole images, dx is computed in the same pass, right after each
    // block's dw product, while that block of dy is still in cache. Each image's dx goes
    // through exactly the same operations as in the separate pass, so results are identical.
    let img = d.c * d.hw;
    let fuse_dx = dx.is_some() && chunks.iter().all(|ch| ch.oh0 == 0 && ch.oh1 == d.g.oh);
    let mut dx_parts: Vec<Option<&mut [f32]>> = Vec::with_capacity(chunks.len());
    let mut dx = dx;
    if fuse_dx {
        let mut rest = dx.take().unwrap_or_default();
        for ch in &chunks {
            let (head, tail) = rest.split_at_mut((ch.n1 - ch.n0) * img);
            dx_parts.push(Some(head));
            rest = tail;
        }
    } else {
        dx_parts.resize_with(chunks.len(), || None);
    }
    let bufs = &ws.bufs;
    ws.partials[..parts_len]
        .par_chunks_mut(part_len)
        .zip(ws.db_partials[..chunks.len() * o].par_chunks_mut(o))
        .zip(chunks.par_iter().zip(dx_parts.par_iter_mut()))
        .try_for_each(|((part, dbp), (ch, dx_part))| {
            dbp.fill(0.0);
            with_buf(bufs, |col| {
                let mut beta = 0.0;
                for ni in ch.n0..ch.n1 {
                    let dy_img = &dys[ni * o * np..(ni + 1) * o * np];
                    let x_img = &xs[ni * img..][..img];
                    let mut dx_img = dx_part
                        .as_deref_mut()
                        .map(|p| &mut p[(ni - ch.n0) * img..][..img]);
                    let blocks: Vec<(usize, usize)> = if d.pointwise {
                        vec![(ch.oh0, ch.oh1 - ch.oh0)]
                    } else {
                        if let Some(dx_img) = dx_img.as_deref_mut() {
                            dx_img.fill(0.0);
                        }
                        row_blocks(&d, ch.oh0, ch.oh1).collect()
                    };
                    for (oh0, rows) in blocks {
                        let cols = rows * ow;
                        // A = dy_img[:, oh0 * OW ..][.. cols], O x cols with row stride np.
                        let a = &dy_img[oh0 * ow..];
                        for (acc, row) in dbp.iter_mut().zip(a.chunks(np)) {
                            *acc += f64::from(sum_f32(&row[..cols]));
                        }
                        // B = col^T (cols x K), read through swapped strides.
                        let (bm, csb): (&[f32], usize) = if d.pointwise {
                            (&x_img[oh0 * ow..], d.hw)
                        } else {
                            let col = &mut col[..k * cols];
                            im2col_image(x_img, &d, oh0, rows, col);
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
                        beta = 1.0;
                        if let Some(dx_img) = dx_img.as_deref_mut() {
                            if d.pointwise {
                                dx_gemm(&d, wsl, 0, k, a, cols, dx_img)?;
                            } else {
                                let dcol = &mut col[..k * cols];
                                dx_gemm(&d, wsl, 0, k, a, cols, dcol)?;
                                col2im_image(dcol, &d, oh0, rows, dx_img);
                            }
                        }
                    }
                }
                Ok::<(), TensorError>(())
            })
        })?;

    // Reduce the partials in chunk order.
    let partials = &ws.partials[..parts_len];
    const REDUCE_BLOCK: usize = 4096;
    dw.par_chunks_mut(REDUCE_BLOCK)
        .enumerate()
        .for_each(|(bi, dst)| {
            let (off, len) = (bi * REDUCE_BLOCK, dst.len());
            let mut parts = partials.chunks_exact(part_len);
            if let Some(first) = parts.next() {
                dst.copy_from_slice(&first[off..off + len]);
            }
            for part in parts {
                for (acc, v) in dst.iter_mut().zip(&part[off..off + len]) {
                    *acc += *v;
                }
            }
        });
    for (oi, dbv) in db.iter_mut().enumerate() {
        let acc: f64 = ws.db_partials[..chunks.len() * o]
            .chunks_exact(o)
            .map(|part| part[oi])
            .sum();
        *dbv = acc as f32;
    }

    if let Some(dx) = dx {
        conv_dx(&d, wsl, dys, &ws.bufs, threads, dx)?;
    }
    Ok(())
}

/// `out (rows x cols) = W^T[r0.., :] * dy_block`, where `dy_block` starts at the block's first
/// column of an image's `dy` (`O` rows of stride `np`); W^T is read through swapped strides.
fn dx_gemm(
    d: &Dims,
    wsl: &[f32],
    r0: usize,
    rows: usize,
    dy_block: &[f32],
    cols: usize,
    out: &mut [f32],
) -> Result<()> {
    sgemm(
        rows,
        d.o,
        cols,
        1.0,
        &wsl[r0..],
        1,
        d.k as isize,
        dy_block,
        d.np as isize,
        1,
        0.0,
        out,
        cols as isize,
        1,
    )
}

/// Adds the column block of output rows `oh0..oh0 + rows` into a whole image's gradient.
fn col2im_image(dcol: &[f32], d: &Dims, oh0: usize, rows: usize, dx_img: &mut [f32]) {
    let block = d.kk * rows * d.g.ow;
    for (cb, plane) in dcol.chunks_exact(block).zip(dx_img.chunks_exact_mut(d.hw)) {
        col2im_channel(cb, &d.g, oh0, rows, plane);
    }
}

/// dx = col2im(W^T * dy) per image and row block (for a pointwise conv, W^T * dy is dx itself),
/// as a separate pass (used when the dw chunks split images by rows).
fn conv_dx(
    d: &Dims,
    wsl: &[f32],
    dys: &[f32],
    bufs: &[Mutex<Vec<f32>>],
    threads: usize,
    dx: &mut [f32],
) -> Result<()> {
    let (o, k, np, kk, hw, ow) = (d.o, d.k, d.np, d.kk, d.hw, d.g.ow);
    let img = d.c * hw;
    if d.n >= threads {
        dx.par_chunks_mut(img)
            .zip(dys.par_chunks(o * np))
            .try_for_each(|(dx_img, dy_img)| {
                if d.pointwise {
                    return dx_gemm(d, wsl, 0, k, dy_img, np, dx_img);
                }
                dx_img.fill(0.0);
                with_buf(bufs, |dcol| {
                    for (oh0, rows) in row_blocks(d, 0, d.g.oh) {
                        let cols = rows * ow;
                        let dcol = &mut dcol[..k * cols];
                        dx_gemm(d, wsl, 0, k, &dy_img[oh0 * ow..], cols, dcol)?;
                        col2im_image(dcol, d, oh0, rows, dx_img);
                    }
                    Ok(())
                })
            })
    } else {
        // Fewer images than threads: split each GEMM by rows, then col2im by channel.
        let rb = k.div_ceil(threads);
        let mut guard = bufs[0].lock().unwrap_or_else(|e| e.into_inner());
        for (dx_img, dy_img) in dx.chunks_exact_mut(img).zip(dys.chunks_exact(o * np)) {
            if d.pointwise {
                dx_img
                    .par_chunks_mut(rb * np)
                    .enumerate()
                    .try_for_each(|(bi, out)| {
                        dx_gemm(d, wsl, bi * rb, out.len() / np, dy_img, np, out)
                    })?;
                continue;
            }
            dx_img.par_chunks_mut(hw).for_each(|plane| plane.fill(0.0));
            for (oh0, rows) in row_blocks(d, 0, d.g.oh) {
                let cols = rows * ow;
                let dcol = &mut guard[..k * cols];
                dcol.par_chunks_mut(rb * cols)
                    .enumerate()
                    .try_for_each(|(bi, out)| {
                        let dy_block = &dy_img[oh0 * ow..];
                        dx_gemm(d, wsl, bi * rb, out.len() / cols, dy_block, cols, out)
                    })?;
                let dcol: &[f32] = dcol;
                dx_img
                    .par_chunks_mut(hw)
                    .zip(dcol.par_chunks(kk * cols))
                    .for_each(|(plane, cb)| col2im_channel(cb, &d.g, oh0, rows, plane));
            }
        }
        Ok(())
    }
}

//! The depthwise convolutions of EfficientNet-Lite0 at batch 32 and 224 px input, forward and
//! backward (dx, dw, db), through the public `_into` entry points with buffers kept between
//! iterations (as a training loop does), on all rayon threads.
//!
//! A depthwise convolution does little arithmetic per byte, so the figure to look at is memory
//! throughput: criterion's throughput is the bytes a single pass must move (forward: read x,
//! write y; backward: read x and dy, write dx). `copy` is a plain parallel buffer copy of the
//! size of the largest activation (read + write counted), as a ceiling to compare with.
//!
//! Run: `cargo bench -p fracture-tensor --bench depthwise -- --warm-up-time 1 --measurement-time 2`
//! (add a name filter such as `k5` to run fewer shapes).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use fracture_tensor::{
    conv2d_backward_into, conv2d_forward_into, Conv2dGrads, ConvParams, ConvWorkspace, Tensor4,
};
use rayon::prelude::*;

const BATCH: usize = 32;

/// `(channels, input size, kernel, stride)` of every depthwise convolution shape in
/// EfficientNet-Lite0 at 224 px; padding is `kernel / 2`.
const SHAPES: [(usize, usize, usize, usize); 12] = [
    (32, 112, 3, 1),
    (96, 112, 3, 2),
    (144, 56, 3, 1),
    (144, 56, 5, 2),
    (240, 28, 5, 1),
    (240, 28, 3, 2),
    (480, 14, 3, 1),
    (480, 14, 5, 1),
    (672, 14, 5, 1),
    (672, 14, 5, 2),
    (1152, 7, 5, 1),
    (1152, 7, 3, 1),
];

/// A tensor of small deterministic values (no denormals, no zeros).
fn filled(shape: [usize; 4], seed: usize) -> Tensor4 {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| (((i * 7 + seed * 13) % 23) as f32 - 11.0) / 16.0)
        .collect();
    Tensor4::from_vec(shape, data).expect("length matches")
}

fn bench(c: &mut Criterion) {
    // Reference: a parallel copy of the largest activation (96 x 112 x 112 x 32 floats).
    {
        let len = BATCH * 96 * 112 * 112;
        let src = vec![1.0f32; len];
        let mut dst = vec![0.0f32; len];
        let mut g = c.benchmark_group("copy");
        g.throughput(Throughput::Bytes((2 * len * 4) as u64));
        g.bench_function("activation_154MB", |b| {
            b.iter(|| {
                dst.par_chunks_mut(1 << 16)
                    .zip(src.par_chunks(1 << 16))
                    .for_each(|(d, s)| d.copy_from_slice(s));
            })
        });
        g.finish();
    }

    for (ch, size, k, s) in SHAPES {
        let p = ConvParams {
            stride: [s, s],
            padding: [k / 2, k / 2],
            groups: ch,
        };
        let x = filled([BATCH, ch, size, size], 1);
        let w = filled([ch, 1, k, k], 2);
        let b = vec![0.1f32; ch];
        let mut ws = ConvWorkspace::default();
        let mut y = Tensor4::zeros([0, 0, 0, 0]);
        conv2d_forward_into(&x, &w, Some(&b), p, &mut ws, &mut y).expect("forward");
        let dy = filled(y.shape(), 3);
        let mut grads = Conv2dGrads {
            dx: None,
            dw: Tensor4::zeros([0, 0, 0, 0]),
            db: Vec::new(),
        };
        let name = format!("{ch}ch_{size}px_k{k}_s{s}");
        let (xb, yb) = (x.len() as u64 * 4, y.len() as u64 * 4);
        let mut g = c.benchmark_group("depthwise");
        g.sample_size(10);
        g.throughput(Throughput::Bytes(xb + yb));
        g.bench_function(BenchmarkId::new("forward", &name), |bch| {
            bch.iter(|| conv2d_forward_into(&x, &w, Some(&b), p, &mut ws, &mut y).unwrap())
        });
        g.throughput(Throughput::Bytes(2 * xb + yb));
        g.bench_function(BenchmarkId::new("backward", &name), |bch| {
            bch.iter(|| conv2d_backward_into(&x, &w, &dy, p, true, &mut ws, &mut grads).unwrap())
        });
        g.finish();
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
}

//! Convolution forward and backward at the reference model's layer shapes (batch 32, 3x3,
//! padding 1, no bias: 1->32 at 128x128, 32->64 at 64x64, 64->128 at 32x32, 128->256 at
//! 16x16) and at the public comparison point 2x3x320x320 -> 16 (3x3, no padding).
//!
//! Throughput is reported in elements/s where one element is one floating-point operation, so
//! criterion's `Gelem/s` reads directly as GFLOP/s. Forward counts
//! `2 * N * O * OH * OW * C * KH * KW`; backward with dx counts twice that (dw and dx are each
//! one GEMM of the forward's size; db's sums are ignored), backward without dx counts once.
//!
//! `conv2d_fwd_*` / `conv2d_bwd_*` call the allocating API (each call gets fresh outputs);
//! `conv2d_fwd_into_*` / `conv2d_bwd_into_*` reuse the output buffers between iterations, as a
//! training loop should. `conv2d_bwd_nodx_into_*` (first layers only) skips dx, which the model
//! never needs for its input image.
//!
//! Run: `cargo bench --bench conv` (threads: rayon's default, one per core; set
//! `RAYON_NUM_THREADS=1` for a single thread).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fracture_tensor::{
    conv2d_backward, conv2d_backward_into, conv2d_forward, conv2d_forward_into,
    conv2d_output_shape, Conv2dGrads, ConvParams, ConvWorkspace, Tensor4,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::time::Duration;

/// One benchmarked convolution: input shape, output channels, square kernel, padding.
struct Shape {
    x: [usize; 4],
    o: usize,
    k: usize,
    pad: usize,
    name: String,
}

fn shape(n: usize, c: usize, o: usize, hw: usize, k: usize, pad: usize) -> Shape {
    let suffix = if pad == 1 {
        String::new()
    } else {
        format!("_p{pad}")
    };
    Shape {
        x: [n, c, hw, hw],
        o,
        k,
        pad,
        name: format!("n{n}_c{c}_o{o}_{hw}x{hw}_k{k}{suffix}"),
    }
}

fn random(rng: &mut ChaCha8Rng, shape: [usize; 4]) -> Tensor4 {
    let n = shape.iter().product();
    Tensor4::from_vec(shape, (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
        .expect("length matches shape")
}

fn bench_conv(c: &mut Criterion) {
    let shapes = [
        shape(32, 1, 32, 128, 3, 1),
        shape(32, 32, 64, 64, 3, 1),
        shape(32, 64, 128, 32, 3, 1),
        shape(32, 128, 256, 16, 3, 1),
        shape(2, 3, 16, 320, 3, 0),
    ];
    let mut group = c.benchmark_group("conv2d");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for s in &shapes {
        let w_shape = [s.o, s.x[1], s.k, s.k];
        let p = ConvParams {
            stride: [1, 1],
            padding: [s.pad, s.pad],
            ..ConvParams::default()
        };
        let out = conv2d_output_shape(s.x, w_shape, p).expect("valid bench shape");
        let x = random(&mut rng, s.x);
        let w = random(&mut rng, w_shape);
        let dy = random(&mut rng, out);
        let flops = 2 * out.iter().product::<usize>() as u64 * (s.x[1] * s.k * s.k) as u64;
        let mut ws = ConvWorkspace::default();
        let id = |what: &str| BenchmarkId::from_parameter(format!("conv2d_{what}_{}", s.name));

        group.throughput(Throughput::Elements(flops));
        group.bench_function(id("fwd"), |b| {
            b.iter(|| conv2d_forward(black_box(&x), &w, None, p, &mut ws).expect("forward"))
        });
        let mut y = Tensor4::zeros([0, 0, 0, 0]);
        group.bench_function(id("fwd_into"), |b| {
            b.iter(|| {
                conv2d_forward_into(black_box(&x), &w, None, p, &mut ws, &mut y).expect("forward")
            })
        });

        group.throughput(Throughput::Elements(2 * flops));
        group.bench_function(id("bwd"), |b| {
            b.iter(|| conv2d_backward(black_box(&x), &w, &dy, p, true, &mut ws).expect("backward"))
        });
        let mut grads = Conv2dGrads {
            dx: None,
            dw: Tensor4::zeros([0, 0, 0, 0]),
            db: Vec::new(),
        };
        group.bench_function(id("bwd_into"), |b| {
            b.iter(|| {
                conv2d_backward_into(black_box(&x), &w, &dy, p, true, &mut ws, &mut grads)
                    .expect("backward")
            })
        });

        if s.x[1] <= 3 {
            group.throughput(Throughput::Elements(flops));
            group.bench_function(id("bwd_nodx_into"), |b| {
                b.iter(|| {
                    conv2d_backward_into(black_box(&x), &w, &dy, p, false, &mut ws, &mut grads)
                        .expect("backward")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_conv);
criterion_main!(benches);

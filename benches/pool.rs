//! Max pooling (2x2, stride 2) forward and backward, ReLU and global average pooling at the
//! reference model's activation shapes (batch 32: 32x128x128, 64x64x64, 128x32x32, 256x16x16).
//!
//! Throughput is in bytes of the input tensor per second (`GiB/s`): these ops are bound by
//! memory traffic, not arithmetic. The `_into` / in-place variants reuse their outputs between
//! iterations, as a training loop should.
//!
//! Run: `cargo bench --bench pool` (threads: rayon's default; `RAYON_NUM_THREADS=1` for one).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fracture_tensor::{
    global_avg_pool_forward, max_pool2d_backward_into, max_pool2d_forward_into,
    relu_backward_inplace, relu_forward_inplace, PoolParams, Tensor4,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::time::Duration;

fn bench_pool(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for shape in [
        [32, 32, 128, 128],
        [32, 64, 64, 64],
        [32, 128, 32, 32],
        [32, 256, 16, 16],
    ] {
        let [n, ch, h, w] = shape;
        let name = format!("n{n}_c{ch}_{h}x{w}");
        let len: usize = shape.iter().product();
        let data = (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let x = Tensor4::from_vec(shape, data).expect("length matches shape");
        group.throughput(Throughput::Bytes((len * 4) as u64));

        let p = PoolParams::square(2, 2, 0);
        let (mut y, mut argmax) = (Tensor4::zeros([0, 0, 0, 0]), Vec::new());
        group.bench_function(
            BenchmarkId::from_parameter(format!("max_pool2d_fwd_into_{name}_k2")),
            |b| {
                b.iter(|| {
                    max_pool2d_forward_into(black_box(&x), p, &mut y, &mut argmax).expect("fwd")
                })
            },
        );
        let mut dx = Tensor4::zeros([0, 0, 0, 0]);
        group.bench_function(
            BenchmarkId::from_parameter(format!("max_pool2d_bwd_into_{name}_k2")),
            |b| {
                b.iter(|| {
                    max_pool2d_backward_into(black_box(&y), &argmax, shape, &mut dx).expect("bwd")
                })
            },
        );
        let mut a = x.clone();
        group.bench_function(
            BenchmarkId::from_parameter(format!("relu_fwd_inplace_{name}")),
            |b| b.iter(|| relu_forward_inplace(black_box(&mut a))),
        );
        let mut g = x.clone();
        group.bench_function(
            BenchmarkId::from_parameter(format!("relu_bwd_inplace_{name}")),
            |b| b.iter(|| relu_backward_inplace(black_box(&x), &mut g).expect("bwd")),
        );
        group.bench_function(
            BenchmarkId::from_parameter(format!("global_avg_pool_fwd_{name}")),
            |b| b.iter(|| global_avg_pool_forward(black_box(&x))),
        );
    }
    group.finish();
}

criterion_group!(benches, bench_pool);
criterion_main!(benches);

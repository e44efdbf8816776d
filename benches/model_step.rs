//! The whole reference CNN of `../shared/bench` (`ModelConfig::reference`): one training step
//! (forward in train mode, cross-entropy, backward, SGD with momentum) and one inference pass
//! (eval mode), batch 32, at 128 px, under criterion. `examples/bench_reference.rs` follows the
//! PyTorch script's protocol for the side-by-side figures; this bench is for seeing what a
//! change does to the whole step.
//!
//! Throughput is in images. Run: `cargo bench --bench model_step` (threads: rayon's default;
//! `RAYON_NUM_THREADS=1` for one).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fracture_nn::layers::optim::{Optimizer, Sgd, SgdConfig};
use fracture_nn::layers::{CrossEntropyLoss, Layer, Mode};
use fracture_nn::tensor::Tensor4;
use fracture_nn::ModelConfig;
use rand::{Rng, SeedableRng};

const BATCH: usize = 32;
const SIZE: usize = 128;

fn bench_model(c: &mut Criterion) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let x: Vec<f32> = (0..BATCH * SIZE * SIZE)
        .map(|_| rng.gen_range(-1.0f32..1.0))
        .collect();
    let x = Tensor4::from_vec([BATCH, 1, SIZE, SIZE], x).expect("length matches shape");
    let y: Vec<usize> = (0..BATCH).map(|_| rng.gen_range(0..2)).collect();
    let loss = CrossEntropyLoss::default();
    let mut net = ModelConfig::reference(SIZE).build(0).expect("valid model");
    let mut opt = Sgd::new(SgdConfig {
        momentum: 0.9,
        ..Default::default()
    })
    .expect("valid optimizer");

    let mut group = c.benchmark_group("reference_cnn_128px_b32");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("train_step", |b| {
        b.iter(|| {
            let logits = net.forward(&x, Mode::Train).expect("forward");
            let (l, dlogits) = loss.forward_backward(&logits, &y).expect("loss");
            net.zero_grad();
            net.backward_params_only(&dlogits).expect("backward");
            opt.step(&mut net, 0.01).expect("step");
            black_box(l)
        })
    });
    group.bench_function("inference", |b| {
        b.iter(|| black_box(net.forward(&x, Mode::Eval).expect("forward")))
    });
    group.finish();
}

criterion_group!(benches, bench_model);
criterion_main!(benches);

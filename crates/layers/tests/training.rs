//! A seeded run learns a toy separable problem to 100 % training accuracy, and runs with the
//! same seed give bit-identical weights, with the same and with a different thread count.

mod common;

use fracture_layers::optim::{clip_grad_norm, LrSchedule, Optimizer, Sgd, SgdConfig};
use fracture_layers::*;
use fracture_tensor::Tensor4;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// 48 noisy 1x12x12 images: class 0 has a bright vertical bar, class 1 a horizontal one, at a
/// random position.
fn toy_data(seed: u64) -> (Tensor4, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (n, s) = (48, 12);
    let mut x = vec![0.0f32; n * s * s];
    let mut t = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % 2;
        let img = &mut x[i * s * s..(i + 1) * s * s];
        for v in img.iter_mut() {
            *v = rng.gen_range(-0.3..0.3);
        }
        let pos = rng.gen_range(2..s - 2);
        for k in 2..s - 2 {
            let (r, c) = if class == 0 { (k, pos) } else { (pos, k) };
            img[r * s + c] += 1.0;
        }
        t.push(class);
    }
    (Tensor4::from_vec([n, 1, s, s], x).unwrap(), t)
}

fn net(seed: u64) -> Sequential {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    Sequential::new()
        .with(
            "conv1",
            Conv2dConfig::new(1, 4, 3)
                .with_padding(1)
                .with_bias(false)
                .init(&mut r)
                .unwrap(),
        )
        .unwrap()
        .with("bn1", BatchNorm2dConfig::new(4).init().unwrap())
        .unwrap()
        .with("relu1", Relu::new())
        .unwrap()
        .with("pool1", MaxPool2dConfig::new(2).init().unwrap())
        .unwrap()
        .with(
            "block",
            ResidualBlockConfig::new(4, 8, 2).init(&mut r).unwrap(),
        )
        .unwrap()
        .with("gap", GlobalAvgPool::new())
        .unwrap()
        .with("drop", DropoutConfig::new(0.1).init(&mut r).unwrap())
        .unwrap()
        .with("fc", LinearConfig::new(8, 2).init(&mut r).unwrap())
        .unwrap()
}

fn accuracy(net: &mut Sequential, x: &Tensor4, t: &[usize]) -> f64 {
    let p = softmax(&net.forward(x, Mode::Eval).unwrap()).unwrap();
    let correct = p
        .as_slice()
        .chunks_exact(2)
        .zip(t)
        .filter(|(p, &t)| (p[1] > p[0]) as usize == t)
        .count();
    correct as f64 / t.len() as f64
}

/// Trains with mini-batches of 16 for `epochs`; returns the final network and loss history.
fn train(seed: u64, epochs: usize) -> (Sequential, Vec<f32>) {
    let (x, t) = toy_data(1);
    let mut model = net(seed);
    let mut opt = Sgd::new(SgdConfig {
        momentum: 0.9,
        weight_decay: 1e-4,
        ..Default::default()
    })
    .unwrap();
    let steps_per_epoch = 3;
    let sched = LrSchedule::Cosine {
        lr: 0.1,
        min_lr: 0.001,
        warmup: 3,
        total: epochs * steps_per_epoch,
    };
    let [n, c, h, w] = x.shape();
    let per = c * h * w;
    let bs = n / steps_per_epoch;
    let mut losses = Vec::new();
    let mut order: Vec<usize> = (0..n).collect();
    let mut shuffle_rng = ChaCha8Rng::seed_from_u64(seed ^ 0xabc);
    for epoch in 0..epochs {
        use rand::seq::SliceRandom;
        order.shuffle(&mut shuffle_rng);
        for b in 0..steps_per_epoch {
            let idx = &order[b * bs..(b + 1) * bs];
            let mut xb = Vec::with_capacity(bs * per);
            for &i in idx {
                xb.extend_from_slice(&x.as_slice()[i * per..(i + 1) * per]);
            }
            let xb = Tensor4::from_vec([bs, c, h, w], xb).unwrap();
            let tb: Vec<usize> = idx.iter().map(|&i| t[i]).collect();
            let logits = model.forward(&xb, Mode::Train).unwrap();
            let (loss, d) = CrossEntropyLoss::new()
                .forward_backward(&logits, &tb)
                .unwrap();
            losses.push(loss);
            model.zero_grad();
            model.backward_params_only(&d).unwrap();
            clip_grad_norm(&mut model, 5.0).unwrap();
            opt.step(&mut model, sched.lr_at(epoch * steps_per_epoch + b))
                .unwrap();
        }
    }
    (model, losses)
}

fn weights(net: &Sequential) -> Vec<u32> {
    let mut bits = Vec::new();
    for (_, p) in net.named_params() {
        bits.extend(p.value.as_slice().iter().map(|v| v.to_bits()));
    }
    for (_, b) in net.named_buffers() {
        bits.extend(b.value.as_slice().iter().map(|v| v.to_bits()));
    }
    bits
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn learns_toy_problem_to_full_training_accuracy() {
    let (mut model, losses) = in_pool(2, || train(42, 25));
    let (x, t) = toy_data(1);
    let acc = accuracy(&mut model, &x, &t);
    let first: f32 = losses[..3].iter().sum::<f32>() / 3.0;
    let last: f32 = losses[losses.len() - 3..].iter().sum::<f32>() / 3.0;
    eprintln!(
        "loss {first:.4} -> {last:.4}, training accuracy (eval mode) {:.1} %",
        acc * 100.0
    );
    assert_eq!(acc, 1.0, "training accuracy {acc}");
    assert!(last < 0.25 * first, "loss fell only from {first} to {last}");
}

#[test]
fn same_seed_gives_bit_identical_weights_whatever_the_thread_count() {
    let a = in_pool(2, || weights(&train(7, 4).0));
    let b = in_pool(2, || weights(&train(7, 4).0));
    assert_eq!(a, b, "same seed, same thread count");
    let c = in_pool(1, || weights(&train(7, 4).0));
    assert_eq!(a, c, "same seed, 1 vs 2 threads");
    let d = in_pool(2, || weights(&train(8, 4).0));
    assert_ne!(a, d, "another seed gives other weights");
}

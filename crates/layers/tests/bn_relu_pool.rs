//! The fused `BnReluPool` against the chain it replaces (`BatchNorm2d -> Relu -> MaxPool2d(2)`)
//! in every mode, against finite differences and PyTorch golden values, for checkpoint
//! compatibility with the unfused plain stage, thread-count independence and error handling.

mod common;

use common::{assert_close, rand_tensor, set_param, tiny_net_check, Golden};
use fracture_layers::*;
use fracture_tensor::Tensor4;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

/// The unfused chain under the names a plain stage gives it ("1" BN, "2" ReLU, "3" pool).
fn unfused(c: usize, pool: bool) -> Sequential {
    let mut s = Sequential::new()
        .with("1", BatchNorm2dConfig::new(c).init().unwrap())
        .unwrap()
        .with("2", Relu::new())
        .unwrap();
    if pool {
        s.push("3", MaxPool2dConfig::new(2).init().unwrap())
            .unwrap();
    }
    s
}

/// The fused layer under the batch norm's name "1".
fn fused(c: usize, pool: bool) -> Sequential {
    Sequential::new()
        .with(
            "1",
            BnReluPoolConfig::new(c).with_pool(pool).init().unwrap(),
        )
        .unwrap()
}

fn random_vec(len: usize, lo: f32, hi: f32, r: &mut rand_chacha::ChaCha8Rng) -> Vec<f32> {
    (0..len).map(|_| r.gen_range(lo..hi)).collect()
}

/// Sets every parameter and buffer of both models from `values` (same names).
fn set_state(models: [&mut Sequential; 2], values: &[(&str, Vec<f32>)]) {
    for m in models {
        for (name, v) in values {
            let mut found = false;
            m.visit_params("", &mut |n, p| {
                if n == *name {
                    p.value.as_slice_mut().copy_from_slice(v);
                    found = true;
                }
            });
            m.visit_buffers("", &mut |n, b| {
                if n == *name {
                    b.value.as_slice_mut().copy_from_slice(v);
                    found = true;
                }
            });
            assert!(found, "no tensor {name}");
        }
    }
}

/// `|got - want| <= abs + rel * |want|` everywhere, panicking with the worst entry (quiet on
/// success, for proptest).
fn check_close(what: &str, got: &[f32], want: &[f32], rel: f32, abs: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= abs + rel * w.abs(),
            "{what}[{i}]: fused {g}, unfused {w}"
        );
    }
}

fn grads(m: &Sequential) -> Vec<f32> {
    m.named_params()
        .into_iter()
        .flat_map(|(_, p)| p.grad.as_slice().to_vec())
        .collect()
}

fn buffers(m: &Sequential) -> Vec<f32> {
    m.named_buffers()
        .into_iter()
        .flat_map(|(_, b)| b.value.as_slice().to_vec())
        .collect()
}

/// Input with a per-channel offset and scale, so the statistics are not trivial.
fn input(shape: [usize; 4], seed: u64) -> Tensor4 {
    let mut x = rand_tensor(shape, seed);
    let hw = shape[2] * shape[3];
    if hw > 0 {
        for (p, plane) in x.as_slice_mut().chunks_mut(hw).enumerate() {
            let c = (p % shape[1]) as f32;
            for v in plane {
                *v = *v * (1.0 + 0.5 * c) + 0.3 * c - 0.4;
            }
        }
    }
    x
}

/// Runs forward + backward in `mode` on both models and compares everything.
fn compare_step(a: &mut Sequential, b: &mut Sequential, x: &Tensor4, mode: Mode, seed: u64) {
    let ya = a.forward(x, mode).unwrap();
    let yb = b.forward(x, mode).unwrap();
    assert_eq!(ya.shape(), yb.shape(), "{mode:?}: output shape");
    check_close(
        &format!("{mode:?} y"),
        ya.as_slice(),
        yb.as_slice(),
        1e-6,
        1e-6,
    );
    check_close(
        &format!("{mode:?} running stats"),
        &buffers(a),
        &buffers(b),
        1e-6,
        1e-7,
    );
    if !mode.caches() {
        assert!(matches!(
            a.backward(&ya),
            Err(LayersError::NoForwardCache { .. })
        ));
        return;
    }
    let dy = rand_tensor(ya.shape(), seed ^ 0xd1);
    a.zero_grad();
    b.zero_grad();
    let dxa = a.backward(&dy).unwrap();
    let dxb = b.backward(&dy).unwrap();
    check_close(
        &format!("{mode:?} dx"),
        dxa.as_slice(),
        dxb.as_slice(),
        1e-5,
        1e-5,
    );
    check_close(
        &format!("{mode:?} dgamma, dbeta"),
        &grads(a),
        &grads(b),
        1e-5,
        1e-5,
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Train, Eval and EvalWithGrad: outputs, running statistics, dx, dgamma and dbeta of the
    /// fused layer match the unfused chain, for odd and even sizes, with and without pooling.
    #[test]
    fn matches_the_unfused_chain(
        n in 1usize..=4, c in 1usize..=8, h in 1usize..=13, w in 1usize..=13,
        pool: bool, seed: u64,
    ) {
        let mut a = fused(c, pool);
        let mut b = unfused(c, pool);
        let mut r = rng(seed);
        set_state([&mut a, &mut b], &[
            ("1.weight", random_vec(c, -1.5, 1.5, &mut r)),
            ("1.bias", random_vec(c, -0.5, 0.5, &mut r)),
            ("1.running_mean", random_vec(c, -0.5, 0.5, &mut r)),
            ("1.running_var", random_vec(c, 0.2, 2.0, &mut r)),
        ]);
        let x = input([n, c, h, w], seed);
        let pool_ok = !pool || (h >= 2 && w >= 2);
        // Inference first (running statistics as set), then training, then inference with the
        // updated statistics.
        let modes = [
            Mode::Eval,
            Mode::EvalWithGrad,
            Mode::Train,
            Mode::Train,
            Mode::Eval,
            Mode::EvalWithGrad,
        ];
        for (k, mode) in modes.into_iter().enumerate() {
            let train_ok = !mode.is_training() || n * h * w > 1;
            if pool_ok && train_ok {
                compare_step(&mut a, &mut b, &x, mode, seed.wrapping_add(k as u64));
            } else {
                prop_assert!(b.forward(&x, mode).is_err());
                let e = a.forward(&x, mode).unwrap_err().to_string();
                let shape = format!("{:?}", [n, c, h, w]);
                prop_assert!(e.contains("BnReluPool") && e.contains(&shape), "{}", e);
            }
        }
    }
}

/// Planes of 1024 values and more take the per-channel path of the forward pass (statistics
/// and outputs in one task); it too matches the unfused chain in every mode.
#[test]
fn large_planes_match_the_unfused_chain() {
    for (shape, pool) in [
        ([2, 3, 33, 35], true),
        ([3, 2, 32, 32], true),
        ([2, 3, 31, 34], false),
    ] {
        let c = shape[1];
        let mut a = fused(c, pool);
        let mut b = unfused(c, pool);
        let mut r = rng(shape[2] as u64);
        set_state(
            [&mut a, &mut b],
            &[
                ("1.weight", random_vec(c, -1.5, 1.5, &mut r)),
                ("1.bias", random_vec(c, -0.5, 0.5, &mut r)),
                ("1.running_mean", random_vec(c, -0.5, 0.5, &mut r)),
                ("1.running_var", random_vec(c, 0.2, 2.0, &mut r)),
            ],
        );
        let x = input(shape, 77);
        for (k, mode) in [
            Mode::Eval,
            Mode::EvalWithGrad,
            Mode::Train,
            Mode::Train,
            Mode::Eval,
        ]
        .into_iter()
        .enumerate()
        {
            compare_step(&mut a, &mut b, &x, mode, 80 + k as u64);
        }
    }
}

/// Ties inside windows (repeated values) and windows where the ReLU zeroes everything: the same
/// maxima are chosen as by the unfused max pool (first maximum in row-major order), so the
/// gradient lands on the same element.
#[test]
fn ties_and_dead_windows_match_the_unfused_chain() {
    let (n, c, h, w) = (3, 2, 6, 7);
    let mut r = rng(5);
    // Few distinct values: many exact ties.
    let v: Vec<f32> = (0..n * c * h * w)
        .map(|_| r.gen_range(-2i32..3) as f32 * 0.5)
        .collect();
    let x = Tensor4::from_vec([n, c, h, w], v).unwrap();
    for gamma in [1.0f32, -0.7] {
        let mut a = fused(c, true);
        let mut b = unfused(c, true);
        set_state(
            [&mut a, &mut b],
            &[("1.weight", vec![gamma; c]), ("1.bias", vec![-0.1, 0.2])],
        );
        for mode in [Mode::Train, Mode::EvalWithGrad] {
            let ya = a.forward(&x, mode).unwrap();
            let yb = b.forward(&x, mode).unwrap();
            assert_eq!(ya, yb, "gamma {gamma} {mode:?}: outputs");
            let dy = rand_tensor(ya.shape(), 8);
            a.zero_grad();
            b.zero_grad();
            let dxa = a.backward(&dy).unwrap();
            let dxb = b.backward(&dy).unwrap();
            check_close("dx with ties", dxa.as_slice(), dxb.as_slice(), 1e-5, 1e-6);
            check_close("grads with ties", &grads(&a), &grads(&b), 1e-5, 1e-6);
        }
    }
}

/// `forward_owned` (input kept, not copied) gives the same outputs, gradients and statistics.
#[test]
fn forward_owned_matches_forward() {
    for pool in [true, false] {
        for mode in [Mode::Train, Mode::EvalWithGrad, Mode::Eval] {
            let x = input([2, 3, 9, 8], 3);
            let mut a = BnReluPoolConfig::new(3).with_pool(pool).init().unwrap();
            let mut b = BnReluPoolConfig::new(3).with_pool(pool).init().unwrap();
            set_param(&mut a, "weight", &[0.5, -1.0, 2.0]);
            set_param(&mut b, "weight", &[0.5, -1.0, 2.0]);
            let ya = a.forward(&x, mode).unwrap();
            let yb = b.forward_owned(x.clone(), mode).unwrap();
            assert_eq!(ya, yb);
            assert_eq!(a.running_var(), b.running_var());
            if mode.caches() {
                let dy = rand_tensor(ya.shape(), 4);
                assert_eq!(a.backward(&dy).unwrap(), b.backward(&dy).unwrap());
                assert_eq!(a.weight().grad, b.weight().grad);
                assert_eq!(a.bias().grad, b.bias().grad);
            }
        }
    }
}

fn objective(y: &Tensor4, r: &Tensor4) -> f64 {
    y.as_slice()
        .iter()
        .zip(r.as_slice())
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum()
}

/// One numeric derivative: `Some(central difference)`, or `None` when the forward and backward
/// one-sided differences disagree, i.e. a ReLU or max-pool kink lies within `eps`.
fn numeric(lp: f64, l0: f64, lm: f64, eps: f64, noise: f64) -> Option<f64> {
    let (fwd, bwd) = ((lp - l0) / eps, (l0 - lm) / eps);
    ((fwd - bwd).abs() <= 1e-2 * (fwd.abs() + bwd.abs()) + noise).then_some((fwd + bwd) / 2.0)
}

/// Finite differences of `L = sum(r * y)` (f64 sum, random `r`) against backward, for dx,
/// dgamma and dbeta. An entry whose one-sided differences disagree straddles a kink and is
/// skipped (at most 5 % of them); every other entry must agree within 1 % relative plus the
/// f32 noise floor.
fn gradcheck(what: &str, pool: bool, mode: Mode, num_mode: Mode, shape: [usize; 4]) {
    let c = shape[1];
    let mut layer = BnReluPoolConfig::new(c).with_pool(pool).init().unwrap();
    let mut r = rng(11);
    set_param(&mut layer, "weight", &random_vec(c, -1.5, 1.5, &mut r));
    set_param(&mut layer, "bias", &random_vec(c, -0.3, 0.3, &mut r));
    layer.running_mean_mut().value =
        Tensor4::from_vec([c, 1, 1, 1], random_vec(c, -0.3, 0.3, &mut r)).unwrap();
    layer.running_var_mut().value =
        Tensor4::from_vec([c, 1, 1, 1], random_vec(c, 0.5, 1.5, &mut r)).unwrap();
    let x = input(shape, 12);
    let y = layer.forward(&x, mode).unwrap();
    let rw = rand_tensor(y.shape(), 13);
    layer.zero_grad();
    let dx = layer.backward(&rw).unwrap();
    let analytic = [
        ("dx", dx.as_slice().to_vec()),
        ("dgamma", layer.weight().grad.as_slice().to_vec()),
        ("dbeta", layer.bias().grad.as_slice().to_vec()),
    ];
    let eps = 1e-3f32;
    let eval =
        |layer: &mut BnReluPool, x: &Tensor4| objective(&layer.forward(x, num_mode).unwrap(), &rw);
    let l0 = eval(&mut layer, &x);
    // f32 rounding of the outputs, seen through a difference quotient.
    let noise = 4e-7 * (1.0 + l0.abs()) / eps as f64;
    let mut nums: Vec<Vec<Option<f64>>> = Vec::new();
    let mut xp = x.clone();
    nums.push(
        (0..x.len())
            .map(|i| {
                let v = x.as_slice()[i];
                xp.as_slice_mut()[i] = v + eps;
                let lp = eval(&mut layer, &xp);
                xp.as_slice_mut()[i] = v - eps;
                let lm = eval(&mut layer, &xp);
                xp.as_slice_mut()[i] = v;
                numeric(lp, l0, lm, eps as f64, noise)
            })
            .collect(),
    );
    for k in 0..2 {
        nums.push(
            (0..c)
                .map(|i| {
                    let bump = |l: &mut BnReluPool, d: f32| {
                        let p = if k == 0 { l.weight_mut() } else { l.bias_mut() };
                        p.value.as_slice_mut()[i] += d;
                    };
                    bump(&mut layer, eps);
                    let lp = eval(&mut layer, &x);
                    bump(&mut layer, -2.0 * eps);
                    let lm = eval(&mut layer, &x);
                    bump(&mut layer, eps);
                    numeric(lp, l0, lm, eps as f64, noise)
                })
                .collect(),
        );
    }
    let (mut kinked, mut wrong, mut total) = (0, 0, 0);
    for ((name, a), num) in analytic.iter().zip(&nums) {
        let rms = (a.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / a.len() as f64).sqrt();
        assert!(rms > 1e-3, "{what} {name}: degenerate (zero) gradient");
        let mut worst = 0.0f64;
        for (i, (&a, n)) in a.iter().zip(num).enumerate() {
            total += 1;
            let Some(n) = *n else {
                kinked += 1;
                continue;
            };
            let excess = (a as f64 - n).abs() / (1e-2 * (n.abs() + 0.1 * rms) + 2.0 * noise);
            worst = worst.max(excess);
            if excess > 1.0 {
                wrong += 1;
                eprintln!("{what} {name}[{i}]: analytic {a}, numeric {n}");
            }
        }
        eprintln!("{what} {name}: worst |error| / tolerance {worst:.3}");
    }
    eprintln!("{what}: {kinked} of {total} entries straddle a kink");
    assert_eq!(
        wrong, 0,
        "{what}: {wrong} of {total} entries disagree with finite differences"
    );
    assert!(
        kinked * 20 <= total,
        "{what}: {kinked} of {total} entries straddle a kink"
    );
}

#[test]
fn gradcheck_train_pooled_odd() {
    gradcheck("train pool", true, Mode::Train, Mode::Train, [2, 3, 5, 7]);
}

#[test]
fn gradcheck_train_unpooled() {
    gradcheck(
        "train no pool",
        false,
        Mode::Train,
        Mode::Train,
        [3, 2, 4, 3],
    );
}

#[test]
fn gradcheck_eval_with_grad_pooled() {
    gradcheck(
        "eval pool",
        true,
        Mode::EvalWithGrad,
        Mode::Eval,
        [2, 2, 6, 5],
    );
}

#[test]
fn gradcheck_eval_with_grad_unpooled() {
    gradcheck(
        "eval no pool",
        false,
        Mode::EvalWithGrad,
        Mode::Eval,
        [2, 2, 3, 4],
    );
}

const REL: f32 = 1e-4;
const ABS: f32 = 1e-5;

fn bn_golden_layer(g: &Golden, beta_shift: f32) -> BnReluPool {
    let mut layer = BnReluPoolConfig {
        num_features: g.shape("gamma")[0],
        eps: g.meta_f32("eps"),
        momentum: g.meta_f32("momentum"),
        pool: false,
        activation: Activation::Relu,
    }
    .init()
    .unwrap();
    set_param(&mut layer, "weight", g.vec("gamma"));
    let beta: Vec<f32> = g.vec("beta").iter().map(|b| b + beta_shift).collect();
    set_param(&mut layer, "bias", &beta);
    layer
}

/// PyTorch's `BatchNorm2d` (train step, running statistics, eval) followed by ReLU. With beta
/// shifted so that every output is positive, the ReLU passes everything and dx, dgamma, dbeta
/// must be PyTorch's batch-norm gradients.
#[test]
fn batch_norm_golden_without_pool() {
    let Some(g) = Golden::load("batch_norm2d") else {
        return;
    };
    let relu = |v: &[f32]| v.iter().map(|&v| v.max(0.0)).collect::<Vec<f32>>();
    let mut layer = bn_golden_layer(&g, 0.0);
    let y = layer.forward(&g.t4("x"), Mode::Train).unwrap();
    assert_close("relu(bn y)", y.as_slice(), &relu(g.vec("y")), REL, ABS);
    assert_close(
        "running_mean",
        layer.running_mean().value.as_slice(),
        g.vec("running_mean"),
        REL,
        ABS,
    );
    assert_close(
        "running_var",
        layer.running_var().value.as_slice(),
        g.vec("running_var"),
        REL,
        ABS,
    );
    let y_eval = layer.forward(&g.t4("x_eval"), Mode::Eval).unwrap();
    assert_close(
        "relu(bn y_eval)",
        y_eval.as_slice(),
        &relu(g.vec("y_eval")),
        REL,
        ABS,
    );

    let shift = 1.0 - g.vec("y").iter().fold(0.0f32, |m, &v| m.min(v));
    let mut layer = bn_golden_layer(&g, shift);
    let y = layer.forward(&g.t4("x"), Mode::Train).unwrap();
    let unshifted: Vec<f32> = y.as_slice().iter().map(|v| v - shift).collect();
    assert_close("bn y (shifted)", &unshifted, g.vec("y"), REL, ABS);
    layer.zero_grad();
    let dx = layer.backward(&g.t4("dy")).unwrap();
    assert_close("bn dx", dx.as_slice(), g.vec("dx"), REL, ABS);
    assert_close(
        "bn dgamma",
        layer.weight().grad.as_slice(),
        g.vec("dgamma"),
        REL,
        ABS,
    );
    assert_close(
        "bn dbeta",
        layer.bias().grad.as_slice(),
        g.vec("dbeta"),
        REL,
        ABS,
    );
}

/// A fused layer whose batch norm is (almost exactly) the identity plus `shift` in inference:
/// running mean 0, running variance `1 - eps`, gamma 1.
fn identity_bn(c: usize, pool: bool, shift: f32) -> BnReluPool {
    let mut layer = BnReluPoolConfig::new(c).with_pool(pool).init().unwrap();
    let eps = layer.config().eps;
    layer.running_var_mut().value = Tensor4::from_vec([c, 1, 1, 1], vec![1.0 - eps; c]).unwrap();
    layer.bias_mut().value = Tensor4::from_vec([c, 1, 1, 1], vec![shift; c]).unwrap();
    layer
}

/// PyTorch's `MaxPool2d(2, 2)`: through an identity batch norm shifted so that the ReLU passes
/// everything, the fused layer (EvalWithGrad) picks PyTorch's maxima and routes dy like it.
#[test]
fn max_pool_golden_through_identity_bn() {
    let Some(g) = Golden::load("max_pool2d_k2_s2") else {
        return;
    };
    let x = g.t4("x");
    let shift = 1.0 - x.as_slice().iter().fold(0.0f32, |m, &v| m.min(v));
    let mut layer = identity_bn(x.shape()[1], true, shift);
    let y = layer.forward(&x, Mode::EvalWithGrad).unwrap();
    let unshifted: Vec<f32> = y.as_slice().iter().map(|v| v - shift).collect();
    assert_close("pool y", &unshifted, g.vec("y"), REL, ABS);
    let dx = layer.backward(&g.t4("dy")).unwrap();
    assert_close("pool dx", dx.as_slice(), g.vec("dx"), REL, ABS);
}

/// PyTorch's ReLU through an identity batch norm, without pooling.
#[test]
fn relu_golden_through_identity_bn() {
    let Some(g) = Golden::load("relu") else {
        return;
    };
    let x = g.t4("x");
    let mut layer = identity_bn(x.shape()[1], false, 0.0);
    let y = layer.forward(&x, Mode::EvalWithGrad).unwrap();
    assert_close("relu y", y.as_slice(), g.vec("y"), REL, ABS);
    let dx = layer.backward(&g.t4("dy")).unwrap();
    assert_close("relu dx", dx.as_slice(), g.vec("dx"), REL, ABS);
}

/// The golden `tiny_net` with its `bn1-relu1-pool1` and `bn2-relu2` replaced by fused layers
/// named `bn1` and `bn2`: same state-dict names, and PyTorch's logits, loss, gradients and
/// running statistics.
#[test]
fn tiny_net_golden_with_fused_layers() {
    let Some(g) = Golden::load("tiny_net") else {
        return;
    };
    let c1: usize = g.meta["c1"].parse().unwrap();
    let c2: usize = g.meta["c2"].parse().unwrap();
    let mut r = rng(0);
    let mut net = Sequential::new()
        .with(
            "conv1",
            Conv2dConfig::new(1, c1, 3)
                .with_padding(1)
                .init(&mut r)
                .unwrap(),
        )
        .unwrap()
        .with("bn1", BnReluPoolConfig::new(c1).init().unwrap())
        .unwrap()
        .with(
            "conv2",
            Conv2dConfig::new(c1, c2, 3)
                .with_padding(1)
                .init(&mut r)
                .unwrap(),
        )
        .unwrap()
        .with(
            "bn2",
            BnReluPoolConfig::new(c2).with_pool(false).init().unwrap(),
        )
        .unwrap()
        .with("gap", GlobalAvgPool::new())
        .unwrap()
        .with("fc", LinearConfig::new(c2, 2).init(&mut r).unwrap())
        .unwrap();
    tiny_net_check(&g, &mut net);
}

/// A plain stage (`"0"` conv, `"1"` BN, `"2"` ReLU, `"3"` pool) and its fused twin (`"0"`
/// conv, `"1"` fused) have the same state-dict names and shapes; a checkpoint of the trained
/// unfused stage loads into the fused one and gives the same outputs, and back.
#[test]
fn checkpoints_of_the_plain_stage_load_into_the_fused_stage() {
    let stage = |fuse: bool| {
        let mut r = rng(21);
        let s = Sequential::new()
            .with(
                "0",
                Conv2dConfig::new(2, 6, 3)
                    .with_padding(1)
                    .init(&mut r)
                    .unwrap(),
            )
            .unwrap();
        if fuse {
            s.with("1", BnReluPoolConfig::new(6).init().unwrap())
                .unwrap()
        } else {
            s.with("1", BatchNorm2dConfig::new(6).init().unwrap())
                .unwrap()
                .with("2", Relu::new())
                .unwrap()
                .with("3", MaxPool2dConfig::new(2).init().unwrap())
                .unwrap()
        }
    };
    let wrap = |s: Sequential| {
        Sequential::new()
            .with("blocks", Sequential::new().with("0", s).unwrap())
            .unwrap()
    };
    let mut plain = wrap(stage(false));
    let mut fused = wrap(stage(true));
    let names = |m: &Sequential| {
        let mut v: Vec<(String, Vec<usize>)> = m
            .named_params()
            .into_iter()
            .map(|(n, p)| (n, p.torch_shape().to_vec()))
            .collect();
        v.extend(
            m.named_buffers()
                .into_iter()
                .map(|(n, b)| (n, b.torch_shape().to_vec())),
        );
        v
    };
    assert_eq!(names(&plain), names(&fused));
    assert!(names(&plain)
        .iter()
        .any(|(n, _)| n == "blocks.0.1.running_var"));

    // A few SGD steps on the unfused stage, so that weights and running statistics move.
    let mut opt = optim::Sgd::new(optim::SgdConfig::default()).unwrap();
    use optim::Optimizer;
    for step in 0..3 {
        let x = input([4, 2, 9, 10], 30 + step);
        let y = plain.forward(&x, Mode::Train).unwrap();
        plain.zero_grad();
        plain.backward(&rand_tensor(y.shape(), 40 + step)).unwrap();
        opt.step(&mut plain, 0.1).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.safetensors");
    checkpoint::save_model(&path, &plain, &Default::default()).unwrap();
    checkpoint::load_model(&path, &mut fused).unwrap();
    let x = input([3, 2, 9, 10], 50);
    for mode in [Mode::Eval, Mode::Train] {
        let a = fused.forward(&x, mode).unwrap();
        let b = plain.forward(&x, mode).unwrap();
        assert_close(
            &format!("{mode:?} outputs after loading"),
            a.as_slice(),
            b.as_slice(),
            1e-6,
            1e-6,
        );
    }
    // And back: the fused stage's file loads into the unfused stage.
    let path2 = dir.path().join("fused.safetensors");
    checkpoint::save_model(&path2, &fused, &Default::default()).unwrap();
    let mut plain2 = wrap(stage(false));
    checkpoint::load_model(&path2, &mut plain2).unwrap();
    assert_eq!(buffers(&plain2), buffers(&fused));
    assert_eq!(grads(&plain2).len(), grads(&fused).len());
}

/// Forward + backward in every mode give bit-identical results with 1 and 2 threads.
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let run = |threads: usize, pool: bool, shape: [usize; 4]| {
        let pool_rt = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool_rt.install(|| {
            let c = 5;
            let mut layer = BnReluPoolConfig::new(c).with_pool(pool).init().unwrap();
            set_param(&mut layer, "weight", &[1.0, -0.5, 2.0, 0.3, -1.2]);
            set_param(&mut layer, "bias", &[0.1, 0.0, -0.2, 0.3, 0.05]);
            let mut bits: Vec<u32> = Vec::new();
            let x = input(shape, 60);
            for mode in [Mode::Train, Mode::EvalWithGrad, Mode::Eval] {
                let y = layer.forward(&x, mode).unwrap();
                bits.extend(y.as_slice().iter().map(|v| v.to_bits()));
                if mode.caches() {
                    layer.zero_grad();
                    let dx = layer.backward(&rand_tensor(y.shape(), 61)).unwrap();
                    bits.extend(dx.as_slice().iter().map(|v| v.to_bits()));
                }
                layer.visit_params("", &mut |_, p| {
                    bits.extend(p.grad.as_slice().iter().map(|v| v.to_bits()))
                });
                layer.visit_buffers("", &mut |_, b| {
                    bits.extend(b.value.as_slice().iter().map(|v| v.to_bits()))
                });
            }
            bits
        })
    };
    // Planes below and above 1024 values (the two forward strategies).
    for shape in [[6, 5, 31, 29], [3, 5, 33, 35]] {
        for pool in [true, false] {
            let one = run(1, pool, shape);
            assert!(one.len() > 10_000);
            assert!(
                one == run(2, pool, shape),
                "{shape:?} pool {pool}: 1 vs 2 threads differ"
            );
            assert!(
                one == run(3, pool, shape),
                "{shape:?} pool {pool}: 1 vs 3 threads differ"
            );
        }
    }
}

/// Bad input and misuse are errors naming the layer and the shape, never panics.
#[test]
fn errors_name_the_layer_and_shape() {
    let mut layer = BnReluPoolConfig::new(4).init().unwrap();
    let msg = |r: Result<Tensor4>| r.unwrap_err().to_string();

    let e = msg(layer.forward(&Tensor4::zeros([2, 3, 4, 4]), Mode::Train));
    assert!(
        e.contains("BnReluPool") && e.contains("[2, 3, 4, 4]") && e.contains("[N, 4, H, W]"),
        "{e}"
    );

    let e = msg(layer.backward(&Tensor4::zeros([2, 4, 2, 2])));
    assert!(
        e.contains("BnReluPool") && e.contains("without a cached forward"),
        "{e}"
    );

    layer
        .forward(&Tensor4::zeros([2, 4, 4, 4]), Mode::Eval)
        .unwrap();
    let e = msg(layer.backward(&Tensor4::zeros([2, 4, 2, 2])));
    assert!(e.contains("without a cached forward"), "{e}");

    layer
        .forward(&rand_tensor([2, 4, 5, 4], 1), Mode::Train)
        .unwrap();
    let e = msg(layer.backward(&Tensor4::zeros([2, 4, 2, 3])));
    assert!(
        e.contains("BnReluPool") && e.contains("[2, 4, 2, 2]") && e.contains("[2, 4, 2, 3]"),
        "{e}"
    );
    // The failed backward consumed the cache.
    assert!(layer.backward(&Tensor4::zeros([2, 4, 2, 2])).is_err());

    let e = msg(layer.forward(&Tensor4::zeros([2, 4, 1, 6]), Mode::Eval));
    assert!(e.contains("MaxPool2d") && e.contains("[2, 4, 1, 6]"), "{e}");
    let e = msg(layer.forward(&Tensor4::zeros([0, 4, 4, 4]), Mode::Eval));
    assert!(e.contains("[0, 4, 4, 4]"), "{e}");

    let mut flat = BnReluPoolConfig::new(4).with_pool(false).init().unwrap();
    let e = msg(flat.forward(&Tensor4::zeros([1, 4, 1, 1]), Mode::Train));
    assert!(
        e.contains("N*H*W > 1") && e.contains("[1, 4, 1, 1]") && e.contains("BatchNorm2d->ReLU"),
        "{e}"
    );
    // Inference on a single value per channel is fine, as for BatchNorm2d.
    assert_eq!(
        flat.forward(&Tensor4::zeros([1, 4, 1, 1]), Mode::Eval)
            .unwrap()
            .shape(),
        [1, 4, 1, 1]
    );

    for (cfg, what) in [
        (BnReluPoolConfig::new(0), "num_features"),
        (
            BnReluPoolConfig {
                eps: 0.0,
                ..BnReluPoolConfig::new(2)
            },
            "eps",
        ),
        (
            BnReluPoolConfig {
                eps: f32::NAN,
                ..BnReluPoolConfig::new(2)
            },
            "eps",
        ),
        (
            BnReluPoolConfig {
                momentum: 1.5,
                ..BnReluPoolConfig::new(2)
            },
            "momentum",
        ),
    ] {
        let e = cfg.init().unwrap_err().to_string();
        assert!(e.contains("BnReluPool") && e.contains(what), "{e}");
    }
}

/// `from_batch_norm` carries parameters and running statistics over, and the kind names what
/// the layer computes.
#[test]
fn from_batch_norm_and_kind() {
    let mut bn = BatchNorm2dConfig::new(3).init().unwrap();
    bn.forward(&input([2, 3, 4, 4], 70), Mode::Train).unwrap();
    set_param(&mut bn, "weight", &[0.5, 1.5, -1.0]);
    let fused = BnReluPool::from_batch_norm(&bn, true);
    assert_eq!(fused.weight(), bn.weight());
    assert_eq!(fused.running_mean(), bn.running_mean());
    assert_eq!(fused.running_var(), bn.running_var());
    assert_eq!(fused.config().eps, bn.config().eps);
    assert_eq!(fused.kind(), "BnReluPool(BatchNorm2d->ReLU->MaxPool2d(2))");
    assert_eq!(
        BnReluPool::from_batch_norm(&bn, false).kind(),
        "BnReluPool(BatchNorm2d->ReLU)"
    );
    assert_eq!(fused.output_shape([2, 3, 7, 9]), [2, 3, 3, 4]);
}

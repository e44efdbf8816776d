//! Finite-difference gradient checks: for every layer (and a small whole network with a loss),
//! `backward` must agree with central differences of the scalar objective `L = sum(r * y)` (fixed
//! random `r`), for the input gradient and every parameter gradient.
//!
//! Smooth layers must agree on every entry. Where ReLU or max-pool kinks sit inside the network
//! (residual blocks, whole network), a central difference can straddle a kink, so up to 2 % of
//! the entries may miss; a wrong backward misses on far more (and the overall error norm is
//! checked too).

mod common;

use common::rand_tensor;
use fracture_layers::*;
use fracture_tensor::Tensor4;
use rand::SeedableRng;

fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

struct Check {
    eps: f32,
    /// Relative tolerance per entry (plus `rel * rms` absolute slack for tiny entries).
    rel: f64,
    /// Absolute slack: the finite-difference noise of an f32 forward pass (about
    /// `1e-7 * |L| / eps`).
    abs: f64,
    /// Fraction of entries allowed to miss (kinks).
    allowed_miss: f64,
}

const SMOOTH: Check = Check {
    eps: 1e-2,
    rel: 1e-2,
    abs: 1e-4,
    allowed_miss: 0.0,
};
const KINKED: Check = Check {
    eps: 5e-4,
    rel: 2e-2,
    abs: 5e-4,
    allowed_miss: 0.02,
};

fn objective(y: &Tensor4, r: &Tensor4) -> f64 {
    y.as_slice()
        .iter()
        .zip(r.as_slice())
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum()
}

fn counters(layer: &mut dyn Layer) -> Vec<RngStream> {
    let mut v = Vec::new();
    layer.visit_rng_streams("", &mut |_, c| v.push(*c));
    v
}

fn restore_counters(layer: &mut dyn Layer, saved: &[RngStream]) {
    let mut i = 0;
    layer.visit_rng_streams("", &mut |_, c| {
        *c = saved[i];
        i += 1;
    });
}

/// Compares analytic and numeric gradients; returns (misses, total, relative error norm).
fn compare(what: &str, analytic: &[f32], numeric: &[f64], c: &Check) -> (usize, usize, f64) {
    let rms = (analytic.iter().map(|&a| a as f64 * a as f64).sum::<f64>()
        / analytic.len().max(1) as f64)
        .sqrt();
    let mut misses = 0;
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (i, (&a, &n)) in analytic.iter().zip(numeric).enumerate() {
        let a = a as f64;
        num += (a - n) * (a - n);
        den += n * n;
        if (a - n).abs() > c.rel * (a.abs() + rms) + c.abs {
            misses += 1;
            if c.allowed_miss == 0.0 || std::env::var_os("GRADCHECK_VERBOSE").is_some() {
                eprintln!("{what}[{i}]: analytic {a}, numeric {n}");
            }
        }
    }
    // Root-mean-square difference over (5 % of the gradient's RMS + the noise floor): must be <= 1.
    let n = analytic.len().max(1) as f64;
    let err = (num / n).sqrt() / (0.05 * (den / n).sqrt() + c.abs);
    eprintln!(
        "{what}: {misses}/{} entries off, RMS error / allowance {err:.2e}",
        analytic.len()
    );
    (misses, analytic.len(), err)
}

/// Checks `layer`'s input and parameter gradients at `x` in `mode` (forward for the numeric
/// side in `num_mode`, which must compute the same function without side effects that matter).
fn gradcheck(
    what: &str,
    layer: &mut dyn Layer,
    x: &Tensor4,
    mode: Mode,
    num_mode: Mode,
    c: &Check,
) {
    let saved = counters(layer);
    let y = layer.forward(x, mode).unwrap();
    let r = rand_tensor(y.shape(), 99);
    layer.zero_grad();
    let dx = layer.backward(&r).unwrap();
    assert_eq!(dx.shape(), x.shape(), "{what}: dx shape");

    let eval = |layer: &mut dyn Layer, x: &Tensor4| {
        restore_counters(layer, &saved);
        objective(&layer.forward(x, num_mode).unwrap(), &r)
    };
    let mut results = Vec::new();
    // Input gradient.
    let mut xp = x.clone();
    let mut num = vec![0.0f64; x.len()];
    for (i, n) in num.iter_mut().enumerate() {
        let v = x.as_slice()[i];
        xp.as_slice_mut()[i] = v + c.eps;
        let lp = eval(layer, &xp);
        xp.as_slice_mut()[i] = v - c.eps;
        let lm = eval(layer, &xp);
        xp.as_slice_mut()[i] = v;
        *n = (lp - lm) / (2.0 * c.eps as f64);
    }
    results.push(compare(&format!("{what} dx"), dx.as_slice(), &num, c));
    // Parameter gradients.
    let grads: Vec<(String, Vec<f32>)> = layer
        .named_params()
        .into_iter()
        .map(|(n, p)| (n, p.grad.as_slice().to_vec()))
        .collect();
    for (k, (name, grad)) in grads.iter().enumerate() {
        let mut num = vec![0.0f64; grad.len()];
        for (i, n) in num.iter_mut().enumerate() {
            let bump = |layer: &mut dyn Layer, d: f32| {
                layer.named_params_mut()[k].1.value.as_slice_mut()[i] += d;
            };
            bump(layer, c.eps);
            let lp = eval(layer, x);
            bump(layer, -2.0 * c.eps);
            let lm = eval(layer, x);
            bump(layer, c.eps);
            *n = (lp - lm) / (2.0 * c.eps as f64);
        }
        results.push(compare(&format!("{what} d{name}"), grad, &num, c));
    }
    let misses: usize = results.iter().map(|r| r.0).sum();
    let total: usize = results.iter().map(|r| r.1).sum();
    assert!(
        misses as f64 <= c.allowed_miss * total as f64,
        "{what}: {misses} of {total} gradient entries disagree with finite differences"
    );
    for (i, r) in results.iter().enumerate() {
        assert!(
            r.2 <= 1.0,
            "{what}: gradient #{i} RMS error is {:.2} times the allowance",
            r.2
        );
    }
}

/// Random values pushed at least `margin` away from zero (no ReLU kink within reach).
fn away_from_zero(shape: [usize; 4], seed: u64, margin: f32) -> Tensor4 {
    let mut t = rand_tensor(shape, seed);
    for v in t.as_slice_mut() {
        *v = v.signum() * (v.abs() + margin);
    }
    t
}

/// Distinct values spaced `gap` apart in a shuffled order (no max-pool ties within reach).
fn distinct(shape: [usize; 4], seed: u64, gap: f32) -> Tensor4 {
    use rand::seq::SliceRandom;
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * gap).collect();
    v.shuffle(&mut rng(seed));
    Tensor4::from_vec(shape, v).unwrap()
}

#[test]
fn conv2d_3x3_pad1_bias() {
    let mut conv = Conv2dConfig::new(3, 4, 3)
        .with_padding(1)
        .init(&mut rng(1))
        .unwrap();
    conv.bias_mut().unwrap().value = rand_tensor([4, 1, 1, 1], 5);
    gradcheck(
        "conv3x3",
        &mut conv,
        &rand_tensor([2, 3, 6, 6], 2),
        Mode::Train,
        Mode::Train,
        &SMOOTH,
    );
}

#[test]
fn conv2d_3x3_stride2_no_bias() {
    let mut conv = Conv2dConfig::new(2, 3, 3)
        .with_stride(2)
        .with_bias(false)
        .init(&mut rng(3))
        .unwrap();
    gradcheck(
        "conv3x3/s2",
        &mut conv,
        &rand_tensor([2, 2, 7, 7], 4),
        Mode::Train,
        Mode::Train,
        &SMOOTH,
    );
}

#[test]
fn conv2d_1x1_and_rectangular_5x3() {
    let mut conv = Conv2dConfig::new(3, 2, 1).init(&mut rng(5)).unwrap();
    gradcheck(
        "conv1x1",
        &mut conv,
        &rand_tensor([2, 3, 4, 5], 6),
        Mode::Train,
        Mode::Train,
        &SMOOTH,
    );
    let mut cfg = Conv2dConfig::new(2, 2, 1);
    cfg.kernel_size = [5, 3];
    cfg.padding = [2, 0];
    let mut conv = cfg.init(&mut rng(7)).unwrap();
    gradcheck(
        "conv5x3",
        &mut conv,
        &rand_tensor([1, 2, 6, 5], 8),
        Mode::Train,
        Mode::Train,
        &SMOOTH,
    );
}

#[test]
fn batch_norm2d_train() {
    let mut bn = BatchNorm2dConfig::new(3).init().unwrap();
    bn.weight_mut().value = rand_tensor([3, 1, 1, 1], 10);
    bn.bias_mut().value = rand_tensor([3, 1, 1, 1], 11);
    gradcheck(
        "bn/train",
        &mut bn,
        &rand_tensor([3, 3, 3, 4], 12),
        Mode::Train,
        Mode::Train,
        &SMOOTH,
    );
}

#[test]
fn batch_norm2d_eval_with_grad() {
    let mut bn = BatchNorm2dConfig::new(2).init().unwrap();
    bn.weight_mut().value = rand_tensor([2, 1, 1, 1], 13);
    bn.running_mean_mut().value = rand_tensor([2, 1, 1, 1], 14);
    bn.running_var_mut().value = Tensor4::from_vec([2, 1, 1, 1], vec![0.5, 2.0]).unwrap();
    gradcheck(
        "bn/eval",
        &mut bn,
        &rand_tensor([2, 2, 3, 3], 15),
        Mode::EvalWithGrad,
        Mode::Eval,
        &SMOOTH,
    );
}

#[test]
fn relu() {
    let x = away_from_zero([2, 3, 4, 4], 16, 0.05);
    gradcheck(
        "relu",
        &mut Relu::new(),
        &x,
        Mode::Train,
        Mode::Train,
        &SMOOTH,
    );
}

#[test]
fn max_pool2d() {
    let x = distinct([2, 2, 6, 6], 17, 0.05);
    let mut pool = MaxPool2dConfig::new(2).init().unwrap();
    gradcheck("maxpool2", &mut pool, &x, Mode::Train, Mode::Train, &SMOOTH);
    let mut pool = MaxPool2dConfig::new(3)
        .with_stride(2)
        .with_padding(1)
        .init()
        .unwrap();
    gradcheck(
        "maxpool3/s2/p1",
        &mut pool,
        &x,
        Mode::Train,
        Mode::Train,
        &SMOOTH,
    );
}

#[test]
fn global_avg_pool() {
    gradcheck(
        "gap",
        &mut GlobalAvgPool::new(),
        &rand_tensor([2, 3, 4, 5], 18),
        Mode::Train,
        Mode::Train,
        &SMOOTH,
    );
}

#[test]
fn dropout() {
    let mut drop = DropoutConfig::new(0.4).init(&mut rng(19)).unwrap();
    let x = rand_tensor([3, 20, 1, 1], 20);
    gradcheck(
        "dropout/train",
        &mut drop,
        &x,
        Mode::Train,
        Mode::Train,
        &SMOOTH,
    );
    gradcheck(
        "dropout/eval",
        &mut drop,
        &x,
        Mode::EvalWithGrad,
        Mode::Eval,
        &SMOOTH,
    );
}

#[test]
fn linear_and_flatten() {
    let mut fc = LinearConfig::new(6, 4).init(&mut rng(21)).unwrap();
    fc.bias_mut().unwrap().value = rand_tensor([4, 1, 1, 1], 22);
    gradcheck(
        "linear",
        &mut fc,
        &rand_tensor([3, 6, 1, 1], 23),
        Mode::Train,
        Mode::Train,
        &SMOOTH,
    );
    let mut net = Sequential::new()
        .with("flatten", Flatten::new())
        .unwrap()
        .with("fc", LinearConfig::new(12, 3).init(&mut rng(24)).unwrap())
        .unwrap();
    gradcheck(
        "flatten+linear",
        &mut net,
        &rand_tensor([2, 3, 2, 2], 25),
        Mode::Train,
        Mode::Train,
        &SMOOTH,
    );
}

#[test]
fn residual_block_identity_shortcut() {
    let mut block = ResidualBlockConfig::new(3, 3, 1)
        .init(&mut rng(26))
        .unwrap();
    assert!(!block.has_projection());
    gradcheck(
        "residual/identity",
        &mut block,
        &rand_tensor([2, 3, 5, 5], 27),
        Mode::Train,
        Mode::Train,
        &KINKED,
    );
}

#[test]
fn residual_block_projection_shortcut() {
    let mut block = ResidualBlockConfig::new(2, 4, 2)
        .init(&mut rng(28))
        .unwrap();
    assert!(block.has_projection());
    gradcheck(
        "residual/projection",
        &mut block,
        &rand_tensor([2, 2, 6, 6], 29),
        Mode::Train,
        Mode::Train,
        &KINKED,
    );
}

/// Two different small networks (BN in training mode, dropout, a residual block) averaged: the
/// input gradient sums both members' paths, each member's parameters get half their own.
#[test]
fn ensemble_of_two_networks() {
    let mut r = rng(40);
    let mut member = |w: usize| {
        Sequential::new()
            .with(
                "conv",
                Conv2dConfig::new(1, w, 3)
                    .with_padding(1)
                    .init(&mut r)
                    .unwrap(),
            )
            .unwrap()
            .with("bn", BatchNorm2dConfig::new(w).init().unwrap())
            .unwrap()
            .with(
                "block",
                ResidualBlockConfig::new(w, 3, 2).init(&mut r).unwrap(),
            )
            .unwrap()
            .with("gap", GlobalAvgPool::new())
            .unwrap()
            .with("drop", DropoutConfig::new(0.25).init(&mut r).unwrap())
            .unwrap()
            .with("fc", LinearConfig::new(3, 2).init(&mut r).unwrap())
            .unwrap()
    };
    let members = vec![member(2), member(3)];
    let mut ens = Ensemble::new(members).unwrap();
    gradcheck(
        "ensemble",
        &mut ens,
        &rand_tensor([3, 1, 6, 6], 41),
        Mode::Train,
        Mode::Train,
        &KINKED,
    );
}

/// A cross-entropy head so that the objective is the real training loss.
struct WithLoss {
    net: Sequential,
    targets: Vec<usize>,
    loss: CrossEntropyLoss,
    dlogits: Option<Tensor4>,
}

impl Layer for WithLoss {
    fn kind(&self) -> &'static str {
        "WithLoss"
    }
    fn forward(&mut self, x: &Tensor4, mode: Mode) -> fracture_layers::Result<Tensor4> {
        let logits = self.net.forward(x, mode)?;
        let (l, d) = self.loss.forward_backward(&logits, &self.targets)?;
        self.dlogits = Some(d);
        Tensor4::from_vec([1, 1, 1, 1], vec![l]).map_err(Into::into)
    }
    fn backward(&mut self, dy: &Tensor4) -> fracture_layers::Result<Tensor4> {
        let mut d = self.dlogits.take().unwrap();
        for v in d.as_slice_mut() {
            *v *= dy.as_slice()[0];
        }
        self.net.backward(&d)
    }
    fn visit_params<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, &'a mut Param)) {
        self.net.visit_params(prefix, f)
    }
    fn visit_params_ref<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a Param)) {
        self.net.visit_params_ref(prefix, f)
    }
    fn visit_rng_streams(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut RngStream)) {
        self.net.visit_rng_streams(prefix, f)
    }
}

#[test]
fn whole_network_with_weighted_smoothed_loss() {
    let mut r = rng(30);
    let net = Sequential::new()
        .with(
            "conv",
            Conv2dConfig::new(1, 3, 3)
                .with_padding(1)
                .init(&mut r)
                .unwrap(),
        )
        .unwrap()
        .with("bn", BatchNorm2dConfig::new(3).init().unwrap())
        .unwrap()
        .with("relu", Relu::new())
        .unwrap()
        .with("pool", MaxPool2dConfig::new(2).init().unwrap())
        .unwrap()
        .with(
            "block",
            ResidualBlockConfig::new(3, 4, 2).init(&mut r).unwrap(),
        )
        .unwrap()
        .with("gap", GlobalAvgPool::new())
        .unwrap()
        .with("drop", DropoutConfig::new(0.25).init(&mut r).unwrap())
        .unwrap()
        .with("fc", LinearConfig::new(4, 3).init(&mut r).unwrap())
        .unwrap();
    let mut model = WithLoss {
        net,
        targets: vec![0, 2, 1, 2],
        loss: CrossEntropyLoss::new()
            .with_class_weights(vec![1.0, 2.0, 0.5])
            .with_label_smoothing(0.1),
        dlogits: None,
    };
    gradcheck(
        "network",
        &mut model,
        &rand_tensor([4, 1, 8, 8], 31),
        Mode::Train,
        Mode::Train,
        &KINKED,
    );
}

#[test]
fn cross_entropy_gradient() {
    let logits = rand_tensor([5, 4, 1, 1], 32);
    let targets = [3, 0, 1, 1, 2];
    for loss in [
        CrossEntropyLoss::new(),
        CrossEntropyLoss::new().with_label_smoothing(0.2),
        CrossEntropyLoss::new()
            .with_class_weights(vec![0.5, 1.0, 2.0, 0.0])
            .with_label_smoothing(0.1),
    ] {
        let (_, d) = loss.forward_backward(&logits, &targets).unwrap();
        let eps = 1e-2f32;
        let num: Vec<f64> = (0..logits.len())
            .map(|i| {
                let mut z = logits.clone();
                z.as_slice_mut()[i] += eps;
                let lp = loss.forward(&z, &targets).unwrap() as f64;
                z.as_slice_mut()[i] -= 2.0 * eps;
                let lm = loss.forward(&z, &targets).unwrap() as f64;
                (lp - lm) / (2.0 * eps as f64)
            })
            .collect();
        let (misses, _, _) = compare(&format!("{loss:?}"), d.as_slice(), &num, &SMOOTH);
        assert_eq!(misses, 0);
    }
}

/// ReLU6, with inputs kept away from both kinks (0 and 6).
#[test]
fn relu6() {
    let mut x = away_from_zero([2, 3, 4, 4], 40, 0.05);
    for v in x.as_slice_mut() {
        *v *= 8.0; // spread over both sides of 6
        if (*v - 6.0).abs() < 0.05 {
            *v += 0.2;
        }
    }
    assert!(x.as_slice().iter().any(|&v| v > 6.0));
    gradcheck(
        "relu6",
        &mut Relu::relu6(),
        &x,
        Mode::Train,
        Mode::Train,
        &SMOOTH,
    );
}

/// The batch-norm weight gradients of the expansion are small beside the objective, so f32
/// noise needs a larger step than [`KINKED`]'s.
const KINKED_WIDE: Check = Check {
    eps: 1e-3,
    ..KINKED
};

#[test]
fn inverted_residual_shortcut_with_drop_path() {
    let mut block = InvertedResidualConfig::new(3, 3, 4, 3, 1)
        .with_drop_path(0.4)
        .init(&mut rng(41))
        .unwrap();
    assert!(block.config().has_shortcut());
    gradcheck(
        "inverted residual/shortcut",
        &mut block,
        &rand_tensor([3, 3, 5, 5], 42),
        Mode::Train,
        Mode::Train,
        &KINKED_WIDE,
    );
}

#[test]
fn inverted_residual_stride2_k5_no_expansion() {
    for expand in [1, 6] {
        let mut block = InvertedResidualConfig::new(2, 4, expand, 5, 2)
            .init(&mut rng(43))
            .unwrap();
        gradcheck(
            &format!("inverted residual/stride 2, expand {expand}"),
            &mut block,
            &rand_tensor([2, 2, 7, 7], 44),
            Mode::Train,
            Mode::Train,
            &KINKED,
        );
    }
}

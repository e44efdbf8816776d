//! Modes, caching, naming, error paths, the loss's numerical edge cases, schedules, clipping and
//! optimizer details.

mod common;

use common::rand_tensor;
use fracture_layers::optim::{clip_grad_norm, grad_norm, LrSchedule, Optimizer, Sgd, SgdConfig};
use fracture_layers::*;
use fracture_tensor::Tensor4;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(0)
}

fn every_layer() -> Vec<(Box<dyn Layer>, Tensor4)> {
    let mut r = rng();
    vec![
        (
            Box::new(Conv2dConfig::new(2, 3, 3).init(&mut r).unwrap()),
            rand_tensor([2, 2, 5, 5], 1),
        ),
        (
            Box::new(BatchNorm2dConfig::new(2).init().unwrap()),
            rand_tensor([2, 2, 3, 3], 2),
        ),
        (Box::new(Relu::new()), rand_tensor([2, 2, 3, 3], 3)),
        (
            Box::new(MaxPool2dConfig::new(2).init().unwrap()),
            rand_tensor([2, 2, 4, 4], 4),
        ),
        (Box::new(GlobalAvgPool::new()), rand_tensor([2, 2, 3, 3], 5)),
        (
            Box::new(DropoutConfig::new(0.5).init(&mut r).unwrap()),
            rand_tensor([2, 8, 1, 1], 6),
        ),
        (
            Box::new(LinearConfig::new(4, 3).init(&mut r).unwrap()),
            rand_tensor([2, 4, 1, 1], 7),
        ),
        (Box::new(Flatten::new()), rand_tensor([2, 2, 3, 3], 8)),
        (
            Box::new(ResidualBlockConfig::new(2, 2, 1).init(&mut r).unwrap()),
            rand_tensor([2, 2, 4, 4], 9),
        ),
    ]
}

#[test]
fn backward_without_a_caching_forward_is_a_clear_error() {
    for (mut layer, x) in every_layer() {
        let kind = layer.kind();
        let e = layer.backward(&x).unwrap_err().to_string();
        assert!(
            e.contains(kind) && e.contains("without a cached forward"),
            "{kind}: {e}"
        );
        let y = layer.forward(&x, Mode::Eval).unwrap();
        let e = layer.backward(&y).unwrap_err().to_string();
        assert!(
            e.contains("Mode::Train or Mode::EvalWithGrad"),
            "{kind} after Eval: {e}"
        );
        // One caching forward serves exactly one backward.
        let y = layer.forward(&x, Mode::Train).unwrap();
        layer.backward(&y).unwrap();
        assert!(layer.backward(&y).is_err(), "{kind}: second backward");
        // clear_cache drops it.
        layer.forward(&x, Mode::EvalWithGrad).unwrap();
        layer.clear_cache();
        assert!(layer.backward(&y).is_err(), "{kind}: after clear_cache");
    }
}

#[test]
fn eval_with_grad_behaves_like_eval_and_keeps_running_stats() {
    let mut r = rng();
    let mut net = Sequential::new()
        .with(
            "conv",
            Conv2dConfig::new(1, 2, 3)
                .with_padding(1)
                .init(&mut r)
                .unwrap(),
        )
        .unwrap()
        .with("bn", BatchNorm2dConfig::new(2).init().unwrap())
        .unwrap()
        .with("relu", Relu::new())
        .unwrap()
        .with("gap", GlobalAvgPool::new())
        .unwrap()
        .with("drop", DropoutConfig::new(0.5).init(&mut r).unwrap())
        .unwrap()
        .with("fc", LinearConfig::new(2, 2).init(&mut r).unwrap())
        .unwrap();
    let x = rand_tensor([3, 1, 6, 6], 10);
    net.forward(&x, Mode::Train).unwrap(); // move the running stats away from 0 / 1
    let stats: Vec<Buffer> = net
        .named_buffers()
        .into_iter()
        .map(|(_, b)| b.clone())
        .collect();
    let mut streams = Vec::new();
    net.visit_rng_streams_ref("", &mut |_, s| streams.push(*s));
    let y_eval = net.forward(&x, Mode::Eval).unwrap();
    let y_grad = net.forward(&x, Mode::EvalWithGrad).unwrap();
    assert_eq!(y_eval, y_grad);
    let after: Vec<Buffer> = net
        .named_buffers()
        .into_iter()
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(
        stats, after,
        "eval modes must not update running statistics"
    );
    let mut streams_after = Vec::new();
    net.visit_rng_streams_ref("", &mut |_, s| streams_after.push(*s));
    assert_eq!(streams, streams_after, "eval modes draw no dropout masks");
    net.zero_grad();
    let dx = net.backward(&rand_tensor([3, 2, 1, 1], 11)).unwrap();
    assert_eq!(dx.shape(), x.shape());
}

/// The Grad-CAM pattern: run the network layer by layer in `EvalWithGrad`, keep the activation
/// of a chosen layer, backpropagate layer by layer down to it, and read its gradient.
#[test]
fn layer_by_layer_access_gives_intermediate_activations_and_gradients() {
    let mut r = rng();
    let mut net = Sequential::new()
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
        .with("gap", GlobalAvgPool::new())
        .unwrap()
        .with("fc", LinearConfig::new(3, 2).init(&mut r).unwrap())
        .unwrap();
    let x = rand_tensor([1, 1, 5, 5], 12);
    let full = net.forward(&x, Mode::Eval).unwrap();
    let mut h = x.clone();
    let mut acts = Vec::new();
    for (name, layer) in net.layers_mut() {
        h = layer.forward(&h, Mode::EvalWithGrad).unwrap();
        acts.push((name.to_string(), h.clone()));
    }
    assert_eq!(h, full);
    // d(logit of class 1) / d(relu output)
    let mut g = Tensor4::from_vec([1, 2, 1, 1], vec![0.0, 1.0]).unwrap();
    let names: Vec<String> = net.layers().iter().map(|(n, _)| n.clone()).collect();
    let target = names.iter().position(|n| n == "relu").unwrap();
    for (i, (_, layer)) in net.layers_mut().enumerate().rev() {
        if i == target {
            break;
        }
        g = layer.backward(&g).unwrap();
    }
    assert_eq!(g.shape(), acts[target].1.shape());
    // Through GAP and Linear, dlogit1/dA[c, h, w] = W[1, c] / (H*W).
    let fc = net
        .named_params()
        .into_iter()
        .find(|(n, _)| n == "fc.weight")
        .unwrap()
        .1
        .value
        .clone();
    for c in 0..3 {
        let want = fc.as_slice()[3 + c] / 25.0;
        assert!(g.as_slice()[c * 25..(c + 1) * 25]
            .iter()
            .all(|&v| (v - want).abs() < 1e-7));
    }
}

#[test]
fn bad_shapes_and_configs_are_errors_not_panics() {
    let mut r = rng();
    let mut conv = Conv2dConfig::new(3, 4, 3).init(&mut r).unwrap();
    let e = conv
        .forward(&Tensor4::zeros([1, 2, 5, 5]), Mode::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Conv2d") && e.contains("[N, 3, H, W]"), "{e}");
    assert!(
        conv.forward(&Tensor4::zeros([1, 3, 2, 2]), Mode::Train)
            .is_err(),
        "kernel larger than input"
    );
    let mut bn = BatchNorm2dConfig::new(2).init().unwrap();
    assert!(bn
        .forward(&Tensor4::zeros([1, 3, 2, 2]), Mode::Train)
        .is_err());
    let e = bn
        .forward(&Tensor4::zeros([1, 2, 1, 1]), Mode::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than one value per channel"), "{e}");
    assert!(
        bn.forward(&Tensor4::zeros([1, 2, 1, 1]), Mode::Eval)
            .is_ok(),
        "eval works on one value"
    );
    let mut fc = LinearConfig::new(4, 2).init(&mut r).unwrap();
    let e = fc
        .forward(&Tensor4::zeros([2, 2, 2, 1]), Mode::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("flatten or pool first"), "{e}");
    fc.forward(&Tensor4::zeros([2, 4, 1, 1]), Mode::Train)
        .unwrap();
    assert!(
        fc.backward(&Tensor4::zeros([2, 3, 1, 1])).is_err(),
        "wrong upstream shape"
    );
    let mut block = ResidualBlockConfig::new(2, 2, 1).init(&mut r).unwrap();
    assert!(block
        .forward(&Tensor4::zeros([1, 3, 4, 4]), Mode::Train)
        .is_err());

    assert!(Conv2dConfig::new(0, 4, 3).init(&mut r).is_err());
    assert!(Conv2dConfig::new(1, 4, 3)
        .with_stride(0)
        .init(&mut r)
        .is_err());
    assert!(LinearConfig::new(0, 1).init(&mut r).is_err());
    assert!(BatchNorm2dConfig::new(0).init().is_err());
    assert!(BatchNorm2dConfig {
        eps: 0.0,
        ..BatchNorm2dConfig::new(2)
    }
    .init()
    .is_err());
    assert!(DropoutConfig::new(1.5).init(&mut r).is_err());
    assert!(MaxPool2dConfig::new(2).with_padding(2).init().is_err());
    assert!(ResidualBlockConfig::new(1, 1, 0).init(&mut r).is_err());
    assert!(Param::new(Tensor4::zeros([2, 3, 1, 1]), &[2, 2]).is_err());
}

#[test]
fn sequential_names_are_checked_and_nest_with_dots() {
    let mut s = Sequential::new();
    s.push("a", Relu::new()).unwrap();
    for (bad, why) in [
        ("", "empty"),
        ("x.y", "contains '.'"),
        ("a", "already used"),
    ] {
        let e = s.push(bad, Relu::new()).unwrap_err().to_string();
        assert!(e.contains(why), "{bad:?}: {e}");
    }
    let mut r = rng();
    let inner = Sequential::new()
        .with("conv", Conv2dConfig::new(1, 2, 3).init(&mut r).unwrap())
        .unwrap();
    let outer = Sequential::new()
        .with("blocks", Sequential::new().with("0", inner).unwrap())
        .unwrap()
        .with("fc", LinearConfig::new(2, 2).init(&mut r).unwrap())
        .unwrap();
    assert_eq!(
        outer.param_names(),
        [
            "blocks.0.conv.weight",
            "blocks.0.conv.bias",
            "fc.weight",
            "fc.bias"
        ]
    );
    assert_eq!(outer.num_params(), 2 * 9 + 2 + 4 + 2);
    assert!(outer.get("fc").is_some() && outer.get("nope").is_none());
    assert_eq!(format!("{outer:?}"), "[blocks: Sequential, fc: Linear]");
    // The empty chain is the identity.
    let x = rand_tensor([1, 2, 1, 1], 1);
    assert_eq!(Sequential::new().forward(&x, Mode::Train).unwrap(), x);
}

/// The reference model of `../shared/bench`: four conv3x3(no bias)-BN-ReLU-maxpool2 blocks
/// (1->32->64->128->256), global average pool, dropout 0.3, linear 256->2. PyTorch's
/// `sum(p.numel() for p in net.parameters())` is 388,834, with these state-dict names.
#[test]
fn bench_reference_model_has_pytorch_parameter_count_and_names() {
    let mut r = rng();
    let chans = [1, 32, 64, 128, 256];
    let mut blocks = Sequential::new();
    for i in 0..4 {
        let b = Sequential::new()
            .with(
                "0",
                Conv2dConfig::new(chans[i], chans[i + 1], 3)
                    .with_padding(1)
                    .with_bias(false)
                    .init(&mut r)
                    .unwrap(),
            )
            .unwrap()
            .with("1", BatchNorm2dConfig::new(chans[i + 1]).init().unwrap())
            .unwrap()
            .with("2", Relu::new())
            .unwrap()
            .with("3", MaxPool2dConfig::new(2).init().unwrap())
            .unwrap();
        blocks.push(i.to_string(), b).unwrap();
    }
    let mut net = Sequential::new()
        .with("blocks", blocks)
        .unwrap()
        .with("gap", GlobalAvgPool::new())
        .unwrap()
        .with("drop", DropoutConfig::new(0.3).init(&mut r).unwrap())
        .unwrap()
        .with("fc", LinearConfig::new(256, 2).init(&mut r).unwrap())
        .unwrap();
    assert_eq!(net.num_params(), 388_834);
    let names = net.param_names();
    assert_eq!(
        &names[..3],
        ["blocks.0.0.weight", "blocks.0.1.weight", "blocks.0.1.bias"]
    );
    assert_eq!(net.named_buffers()[1].0, "blocks.0.1.running_var");
    let y = net
        .forward(&Tensor4::zeros([2, 1, 32, 32]), Mode::Eval)
        .unwrap();
    assert_eq!(y.shape(), [2, 2, 1, 1]);
}

#[test]
fn kaiming_init_has_the_right_spread_and_is_seeded() {
    let a = Conv2dConfig::new(16, 64, 3)
        .init(&mut ChaCha8Rng::seed_from_u64(5))
        .unwrap();
    let b = Conv2dConfig::new(16, 64, 3)
        .init(&mut ChaCha8Rng::seed_from_u64(5))
        .unwrap();
    let c = Conv2dConfig::new(16, 64, 3)
        .init(&mut ChaCha8Rng::seed_from_u64(6))
        .unwrap();
    assert_eq!(a.weight(), b.weight());
    assert_ne!(a.weight(), c.weight());
    let w = a.weight().value.as_slice();
    let mean = w.iter().map(|&v| v as f64).sum::<f64>() / w.len() as f64;
    let var = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / w.len() as f64;
    let want = 2.0 / (16.0 * 9.0);
    assert!(
        mean.abs() < 0.01 && (var / want - 1.0).abs() < 0.05,
        "mean {mean}, var {var} vs {want}"
    );
    assert!(a.bias().unwrap().value.as_slice().iter().all(|&v| v == 0.0));
}

#[test]
fn dropout_is_seeded_inverted_and_identity_in_eval() {
    let x = Tensor4::from_vec([1, 10_000, 1, 1], vec![1.0; 10_000]).unwrap();
    let mut a = DropoutConfig::new(0.3)
        .init(&mut ChaCha8Rng::seed_from_u64(1))
        .unwrap();
    let mut b = DropoutConfig::new(0.3)
        .init(&mut ChaCha8Rng::seed_from_u64(1))
        .unwrap();
    let ya = a.forward(&x, Mode::Train).unwrap();
    assert_eq!(
        ya,
        b.forward(&x, Mode::Train).unwrap(),
        "same seed, same mask"
    );
    assert_ne!(
        ya,
        a.forward(&x, Mode::Train).unwrap(),
        "next pass, next mask"
    );
    let zeros = ya.as_slice().iter().filter(|&&v| v == 0.0).count() as f64 / 10_000.0;
    assert!((zeros - 0.3).abs() < 0.02, "dropped fraction {zeros}");
    assert!(ya
        .as_slice()
        .iter()
        .all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    let mean = ya.as_slice().iter().map(|&v| v as f64).sum::<f64>() / 10_000.0;
    assert!(
        (mean - 1.0).abs() < 0.05,
        "inverted scaling keeps the mean: {mean}"
    );
    assert_eq!(a.forward(&x, Mode::Eval).unwrap(), x);
    let mut none = DropoutConfig::new(0.0).init(&mut rng()).unwrap();
    assert_eq!(none.forward(&x, Mode::Train).unwrap(), x);
    let mut all = DropoutConfig::new(1.0).init(&mut rng()).unwrap();
    assert!(all
        .forward(&x, Mode::Train)
        .unwrap()
        .as_slice()
        .iter()
        .all(|&v| v == 0.0));
}

/// Independent f64 reference of PyTorch's formula (see the `loss` module docs).
fn reference_ce(z: &[f64], k: usize, t: &[usize], w: &[f64], e: f64) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (row, &ti) in z.chunks(k).zip(t) {
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let nll = |j: usize| lse - row[j];
        num +=
            (1.0 - e) * w[ti] * nll(ti) + e / k as f64 * (0..k).map(|j| w[j] * nll(j)).sum::<f64>();
        den += w[ti];
    }
    num / den
}

#[test]
fn cross_entropy_matches_an_independent_reference_with_smoothing_and_weights() {
    let z = rand_tensor([6, 3, 1, 1], 20);
    let t = [0, 2, 1, 1, 0, 2];
    let z64: Vec<f64> = z.as_slice().iter().map(|&v| v as f64 * 3.0).collect();
    let z3 = Tensor4::from_vec([6, 3, 1, 1], z64.iter().map(|&v| v as f32).collect()).unwrap();
    for (w, e) in [
        (vec![1.0, 1.0, 1.0], 0.0),
        (vec![1.0, 1.0, 1.0], 0.1),
        (vec![0.2, 1.0, 3.0], 0.25),
    ] {
        let loss = CrossEntropyLoss::new()
            .with_class_weights(w.iter().map(|&v| v as f32).collect())
            .with_label_smoothing(e as f32);
        let got = loss.forward(&z3, &t).unwrap() as f64;
        let want = reference_ce(&z64, 3, &t, &w, e);
        assert!(
            (got - want).abs() < 1e-6 * want.abs().max(1.0),
            "w {w:?} e {e}: {got} vs {want}"
        );
    }
}

#[test]
fn cross_entropy_is_stable_at_extreme_logits() {
    let z = Tensor4::from_vec([3, 2, 1, 1], vec![1e4, -1e4, -1e4, 1e4, 1e4, 1e4]).unwrap();
    let (l, d) = CrossEntropyLoss::new()
        .forward_backward(&z, &[1, 1, 0])
        .unwrap();
    // Sample 0: nll = 2e4; sample 1: 0; sample 2: ln 2.
    let want = (2e4 + std::f64::consts::LN_2) / 3.0;
    assert!((l as f64 - want).abs() < 1e-3, "{l} vs {want}");
    let third = 1.0 / 3.0;
    let want_d = [third, -third, 0.0, 0.0, -third / 2.0, third / 2.0];
    for (g, w) in d.as_slice().iter().zip(want_d) {
        assert!((*g as f64 - w).abs() < 1e-7, "{:?}", d.as_slice());
    }
    let (l, d) = CrossEntropyLoss::new()
        .with_label_smoothing(0.1)
        .forward_backward(&z, &[1, 1, 0])
        .unwrap();
    assert!(l.is_finite() && d.as_slice().iter().all(|v| v.is_finite()));
    let p = softmax(&z).unwrap();
    assert_eq!(p.as_slice(), &[1.0, 0.0, 0.0, 1.0, 0.5, 0.5]);
    let lp = log_softmax(&z).unwrap();
    assert_eq!(lp.as_slice()[1], -2e4);
}

#[test]
fn cross_entropy_rejects_bad_arguments() {
    let z = rand_tensor([2, 3, 1, 1], 21);
    let ce = CrossEntropyLoss::new();
    let msg = |r: Result<(f32, Tensor4)>| r.unwrap_err().to_string();
    assert!(msg(ce.forward_backward(&z, &[0, 3]))
        .contains("target 3 of sample 1 is out of range for 3 classes"));
    assert!(msg(ce.forward_backward(&z, &[0])).contains("1 targets for a batch of 2"));
    assert!(
        msg(ce.forward_backward(&rand_tensor([2, 3, 2, 1], 1), &[0, 1]))
            .contains("logits [N>0, K>0, 1, 1]")
    );
    let w = CrossEntropyLoss::new().with_class_weights(vec![1.0, 2.0]);
    assert!(msg(w.forward_backward(&z, &[0, 1])).contains("2 class weights for 3 classes"));
    let w = CrossEntropyLoss::new().with_class_weights(vec![0.0, 0.0, 1.0]);
    assert!(msg(w.forward_backward(&z, &[0, 1])).contains("sum to zero"));
    let w = CrossEntropyLoss::new().with_class_weights(vec![-1.0, 1.0, 1.0]);
    assert!(msg(w.forward_backward(&z, &[0, 1])).contains("non-negative"));
    assert!(msg(CrossEntropyLoss::new()
        .with_label_smoothing(1.5)
        .forward_backward(&z, &[0, 1]))
    .contains("label_smoothing"));
    let mut nan = z.clone();
    nan.as_slice_mut()[4] = f32::NAN;
    assert!(msg(ce.forward_backward(&nan, &[0, 1])).contains("logit 1 of sample 1 is NaN"));
    let p = softmax(&z).unwrap();
    for row in p.as_slice().chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}

#[test]
fn schedules() {
    let c = LrSchedule::Constant { lr: 0.3 };
    assert_eq!((c.lr_at(0), c.lr_at(1000)), (0.3, 0.3));
    let s = LrSchedule::Cosine {
        lr: 1.0,
        min_lr: 0.1,
        warmup: 4,
        total: 20,
    };
    let lrs: Vec<f32> = (0..25).map(|t| s.lr_at(t)).collect();
    assert_eq!(&lrs[..5], &[0.25, 0.5, 0.75, 1.0, 1.0]);
    assert!(lrs[4..=20].windows(2).all(|w| w[1] <= w[0]), "{lrs:?}");
    assert!((lrs[12] - 0.55).abs() < 1e-6, "midpoint {}", lrs[12]);
    assert!(lrs[20..].iter().all(|&v| (v - 0.1).abs() < 1e-7));
    let no_warmup = LrSchedule::Cosine {
        lr: 1.0,
        min_lr: 0.0,
        warmup: 0,
        total: 10,
    };
    assert_eq!(no_warmup.lr_at(0), 1.0);
    assert!(s.validate().is_ok());
    assert!(LrSchedule::Cosine {
        lr: 1.0,
        min_lr: 0.0,
        warmup: 5,
        total: 5
    }
    .validate()
    .is_err());
    assert!(LrSchedule::Step {
        lr: 1.0,
        step_size: 0,
        gamma: 0.1
    }
    .validate()
    .is_err());
    assert!(LrSchedule::Constant { lr: f32::NAN }.validate().is_err());
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(
        json,
        r#"{"kind":"cosine","lr":1.0,"min_lr":0.1,"warmup":4,"total":20}"#
    );
    assert_eq!(serde_json::from_str::<LrSchedule>(&json).unwrap(), s);
}

#[test]
fn gradient_clipping() {
    let mut fc = LinearConfig::new(2, 2).init(&mut rng()).unwrap();
    fc.weight_mut().grad = Tensor4::from_vec([2, 2, 1, 1], vec![3.0, 0.0, 0.0, 4.0]).unwrap();
    fc.bias_mut().unwrap().grad = Tensor4::from_vec([2, 1, 1, 1], vec![0.0, 12.0]).unwrap();
    assert_eq!(grad_norm(&fc), 13.0);
    assert_eq!(clip_grad_norm(&mut fc, 100.0).unwrap(), 13.0);
    assert_eq!(grad_norm(&fc), 13.0, "below the limit: unchanged");
    assert_eq!(clip_grad_norm(&mut fc, 1.3).unwrap(), 13.0);
    assert!((grad_norm(&fc) - 1.3).abs() < 1e-5);
    assert!(
        (fc.weight().grad.as_slice()[0] - 0.3).abs() < 1e-6,
        "direction kept"
    );
    fc.weight_mut().grad.as_slice_mut()[1] = f32::INFINITY;
    let before = fc.bias().unwrap().grad.clone();
    assert!(clip_grad_norm(&mut fc, 1.0).unwrap().is_infinite());
    assert_eq!(
        fc.bias().unwrap().grad,
        before,
        "non-finite norm: gradients untouched"
    );
    assert!(clip_grad_norm(&mut fc, 0.0).is_err());
}

#[test]
fn sgd_variants_follow_pytorch_rules() {
    // Plain SGD with dampening and weight decay, by hand: p=1, g=1 each step, lr 0.1, mu 0.5,
    // tau 0.5, wd 0.1.
    let mut fc = LinearConfig::new(1, 1)
        .with_bias(false)
        .init(&mut rng())
        .unwrap();
    fc.weight_mut().value.as_slice_mut()[0] = 1.0;
    let mut opt = Sgd::new(SgdConfig {
        momentum: 0.5,
        dampening: 0.5,
        weight_decay: 0.1,
        nesterov: false,
    })
    .unwrap();
    let (mut p, mut buf) = (1.0f64, None::<f64>);
    for _ in 0..4 {
        fc.zero_grad();
        fc.weight_mut().grad.as_slice_mut()[0] = 1.0;
        opt.step(&mut fc, 0.1).unwrap();
        let g = 1.0 + 0.1 * p;
        let b = match buf {
            None => g,
            Some(b) => 0.5 * b + 0.5 * g,
        };
        buf = Some(b);
        p -= 0.1 * b;
        assert!((fc.weight().value.as_slice()[0] as f64 - p).abs() < 1e-6);
    }
    assert_eq!(opt.state().params["weight"].step, 4);
    assert!(Sgd::new(SgdConfig {
        nesterov: true,
        ..Default::default()
    })
    .is_err());
    assert!(Sgd::new(SgdConfig {
        momentum: 1.0,
        ..Default::default()
    })
    .is_err());
    assert!(opt.step(&mut fc, -1.0).is_err());
}

/// The bit-mask ReLU agrees with `fracture_tensor`'s relu kernels, on sizes that are not
/// multiples of 64 and that span several parallel chunks, with zeros and NaNs in the input.
#[test]
fn relu_layer_matches_the_tensor_kernels() {
    for len in [1usize, 63, 64, 65, 1000, 16_384 * 2 + 77] {
        let mut x = rand_tensor([1, len, 1, 1], len as u64);
        x.as_slice_mut()[0] = 0.0;
        if len > 10 {
            x.as_slice_mut()[7] = f32::NAN;
            x.as_slice_mut()[9] = -0.0;
        }
        let dy = rand_tensor([1, len, 1, 1], 1 + len as u64);
        let mut relu = Relu::new();
        let y = relu.forward(&x, Mode::Train).unwrap();
        let want_y = fracture_tensor::relu_forward(&x);
        let bits = |t: &Tensor4| t.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y), bits(&want_y), "forward, len {len}");
        assert_eq!(
            bits(&relu.forward(&x, Mode::Eval).unwrap()),
            bits(&want_y),
            "eval, len {len}"
        );
        relu.forward(&x, Mode::Train).unwrap();
        let dx = relu.backward(&dy).unwrap();
        let want_dx = fracture_tensor::relu_backward(&want_y, &dy).unwrap();
        for (i, (a, b)) in dx.as_slice().iter().zip(want_dx.as_slice()).enumerate() {
            assert!(
                a == b || (a.is_nan() && b.is_nan()),
                "backward len {len} at {i}: {a} vs {b}"
            );
        }
    }
}

/// One-pass batch statistics stay accurate for a large mean with a tiny spread, and a constant
/// channel gives variance 0 (output beta, no NaN).
#[test]
fn batch_norm_statistics_are_well_conditioned() {
    let mut x = rand_tensor([4, 2, 6, 6], 40);
    for (i, v) in x.as_slice_mut().iter_mut().enumerate() {
        let channel = (i / 36) % 2;
        *v = if channel == 0 {
            1000.0 + 0.01 * *v
        } else {
            3.0
        };
    }
    let mut bn = BatchNorm2dConfig {
        momentum: 1.0,
        ..BatchNorm2dConfig::new(2)
    }
    .init()
    .unwrap();
    bn.bias_mut().value.as_slice_mut()[1] = 0.5;
    let y = bn.forward(&x, Mode::Train).unwrap();
    // Reference: two-pass f64 over the f32 inputs of channel 0.
    let ch0: Vec<f64> = x
        .as_slice()
        .chunks(36)
        .step_by(2)
        .flatten()
        .map(|&v| v as f64)
        .collect();
    let mean = ch0.iter().sum::<f64>() / ch0.len() as f64;
    let var = ch0.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / ch0.len() as f64;
    let unbiased = var * ch0.len() as f64 / (ch0.len() - 1) as f64;
    let rv = bn.running_var().value.as_slice();
    assert!(
        (rv[0] as f64 / unbiased - 1.0).abs() < 1e-3,
        "running var {} vs {unbiased}",
        rv[0]
    );
    assert!((bn.running_mean().value.as_slice()[0] as f64 - mean).abs() < 1e-4);
    assert_eq!(rv[1], 0.0);
    let out1: Vec<f32> = y
        .as_slice()
        .chunks(36)
        .skip(1)
        .step_by(2)
        .flatten()
        .copied()
        .collect();
    assert!(out1.iter().all(|&v| v == 0.5), "constant channel -> beta");
    let out0: Vec<f64> = y
        .as_slice()
        .chunks(36)
        .step_by(2)
        .flatten()
        .map(|&v| v as f64)
        .collect();
    let m0 = out0.iter().sum::<f64>() / out0.len() as f64;
    let v0 = out0.iter().map(|v| (v - m0).powi(2)).sum::<f64>() / out0.len() as f64;
    // var / (var + eps) with eps = 1e-5; the mean is exact up to the f32 rounding of the mean of
    // values near 1000 (ULP 6e-5 against a spread of 6e-3).
    let want_v = var / (var + 1e-5);
    assert!(
        m0.abs() < 1e-2 && (v0 / want_v - 1.0).abs() < 1e-2,
        "normalised mean {m0}, var {v0} vs {want_v}"
    );
}

//! Golden check of Grad-CAM on a tiny network: the library's maps must equal maps computed here
//! by hand, from activations and gradients captured by running the layers one by one, and from
//! finite-difference estimates of `d logit / dA`.

use fracture_nn::gradcam::{grad_cam, CamMap, Heatmap, Score};
use fracture_nn::layers::{
    BatchNorm2dConfig, Conv2dConfig, GlobalAvgPool, Layer, LayersError, LinearConfig,
    MaxPool2dConfig, Mode, Relu, Sequential,
};
use fracture_nn::tensor::Tensor4;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// conv1 (1->3, 3x3, pad 1) - bn1 - relu1 - pool1 (max 2) - conv2 (3->4) - relu2 - gap - fc (4->2),
/// with non-trivial batch-norm statistics.
fn tiny_net(seed: u64) -> Sequential {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut net = Sequential::new()
        .with(
            "conv1",
            Conv2dConfig::new(1, 3, 3)
                .with_padding(1)
                .init(&mut rng)
                .unwrap(),
        )
        .unwrap()
        .with("bn1", BatchNorm2dConfig::new(3).init().unwrap())
        .unwrap()
        .with("relu1", Relu::new())
        .unwrap()
        .with("pool1", MaxPool2dConfig::new(2).init().unwrap())
        .unwrap()
        .with(
            "conv2",
            Conv2dConfig::new(3, 4, 3)
                .with_padding(1)
                .init(&mut rng)
                .unwrap(),
        )
        .unwrap()
        .with("relu2", Relu::new())
        .unwrap()
        .with("gap", GlobalAvgPool::new())
        .unwrap()
        .with("fc", LinearConfig::new(4, 2).init(&mut rng).unwrap())
        .unwrap();
    net.visit_buffers("", &mut |name, b| {
        let v = if name.ends_with("running_mean") {
            [0.1, -0.2, 0.05]
        } else {
            [0.8, 1.3, 0.6]
        };
        b.value.as_slice_mut().copy_from_slice(&v);
    });
    net.visit_params("", &mut |name, p| {
        if name.starts_with("bn1.") {
            let v = if name.ends_with("weight") {
                [1.2, 0.7, 0.9]
            } else {
                [0.1, 0.2, -0.1]
            };
            p.value.as_slice_mut().copy_from_slice(&v);
        }
    });
    net
}

fn input(n: usize, seed: u64) -> Tensor4 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v = (0..n * 64).map(|_| rng.gen_range(-1.5f32..1.5)).collect();
    Tensor4::from_vec([n, 1, 8, 8], v).unwrap()
}

/// The differentiated score of a two-class logit row, written out for this test.
fn score_of(logits: &[f32], class: usize, score: Score) -> f64 {
    match score {
        Score::Logit => logits[class] as f64,
        Score::LogOdds => logits[class] as f64 - logits[1 - class] as f64,
    }
}

/// Forward layer by layer (eval behaviour, caches kept), returning the target's output, the
/// logits, and `d score / dA` from the layers' backward passes run one by one.
fn by_hand(
    net: &mut Sequential,
    target: &str,
    x: &Tensor4,
    class: usize,
    score: Score,
) -> (Tensor4, Tensor4, Tensor4) {
    let mut layers: Vec<(&str, &mut Box<dyn Layer>)> = net.layers_mut().collect();
    let idx = layers.iter().position(|(n, _)| *n == target).unwrap();
    let mut h = x.clone();
    let mut a = None;
    for (i, (_, layer)) in layers.iter_mut().enumerate() {
        h = layer.forward(&h, Mode::EvalWithGrad).unwrap();
        if i == idx {
            a = Some(h.clone());
        }
    }
    let logits = h;
    let [n, k, _, _] = logits.shape();
    let mut g = Tensor4::zeros(logits.shape());
    for i in 0..n {
        g.as_slice_mut()[i * k + class] = 1.0;
        if score == Score::LogOdds {
            g.as_slice_mut()[i * k + 1 - class] = -1.0;
        }
    }
    for (_, layer) in layers[idx + 1..].iter_mut().rev() {
        g = layer.backward(&g).unwrap();
    }
    for (_, layer) in layers.iter_mut() {
        layer.clear_cache();
    }
    net.zero_grad();
    (a.unwrap(), logits, g)
}

/// Logits of the layers after `target` applied to an activation `a` (eval mode).
fn suffix_logits(net: &mut Sequential, target: &str, a: &Tensor4) -> Tensor4 {
    let mut layers: Vec<(&str, &mut Box<dyn Layer>)> = net.layers_mut().collect();
    let idx = layers.iter().position(|(n, _)| *n == target).unwrap();
    let mut h = a.clone();
    for (_, layer) in layers[idx + 1..].iter_mut() {
        h = layer.forward(&h, Mode::Eval).unwrap();
    }
    h
}

/// `ReLU(sum_k mean(g_k) * a_k)` for image `n`, in f64.
fn cam_by_hand(a: &Tensor4, g: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let [_, k, h, w] = a.shape();
    let plane = h * w;
    let alphas: Vec<f64> = (0..k)
        .map(|c| {
            let off = (n * k + c) * plane;
            g[off..off + plane].iter().sum::<f64>() / plane as f64
        })
        .collect();
    let mut cam = vec![0f64; plane];
    for (c, alpha) in alphas.iter().enumerate() {
        let off = (n * k + c) * plane;
        for (p, v) in cam.iter_mut().enumerate() {
            *v += alpha * a.as_slice()[off + p] as f64;
        }
    }
    (cam.into_iter().map(|v| v.max(0.0)).collect(), alphas)
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            ((*g as f64) - w).abs() <= tol * scale,
            "{what}[{i}]: got {g}, want {w} (scale {scale})"
        );
    }
}

#[test]
fn grad_cam_equals_the_map_from_captured_activations_and_gradients() {
    let mut positive_maps = 0;
    for (target, class, score) in [
        ("relu1", 0, Score::Logit),
        ("pool1", 1, Score::Logit),
        ("relu2", 0, Score::Logit),
        ("relu1", 1, Score::LogOdds),
        ("pool1", 0, Score::LogOdds),
        ("relu2", 1, Score::LogOdds),
    ] {
        let mut net = tiny_net(11);
        let x = input(3, 5);
        let maps = grad_cam(&mut net, target, &x, class, score).unwrap();
        let (a, logits, g) = by_hand(&mut net, target, &x, class, score);
        let g: Vec<f64> = g.as_slice().iter().map(|&v| v as f64).collect();
        assert_eq!(maps.len(), 3);
        for (n, m) in maps.iter().enumerate() {
            let [_, k, h, w] = a.shape();
            assert_eq!(
                (m.height, m.width, m.weights.len(), m.class, m.score),
                (h, w, k, class, score)
            );
            let (cam, alphas) = cam_by_hand(&a, &g, n);
            assert_close(&m.weights, &alphas, 1e-6, &format!("{target} alpha"));
            assert_close(&m.values, &cam, 1e-5, &format!("{target} cam"));
            assert_eq!(m.logits, logits.as_slice()[n * 2..n * 2 + 2].to_vec());
            // Not a vacuous comparison: the gradient reaches the target.
            assert!(
                m.weights.iter().any(|&v| v != 0.0),
                "{target}: zero weights"
            );
            positive_maps += usize::from(m.max() > 0.0);
        }
    }
    assert!(
        positive_maps >= 9,
        "only {positive_maps} of 18 maps are non-zero"
    );
}

#[test]
fn grad_cam_equals_the_map_from_finite_difference_gradients() {
    // Behind relu2 the rest (gap, fc) is linear: a finite-difference gradient is exact up to
    // rounding at every position, so the whole map can be built from it.
    let target = "relu2";
    for score in [Score::Logit, Score::LogOdds] {
        let mut net = tiny_net(3);
        let x = input(2, 9);
        let maps = grad_cam(&mut net, target, &x, 0, score).unwrap();
        let (a, _, _) = by_hand(&mut net, target, &x, 0, score);
        let eps = 1e-2f32;
        let mut g = vec![0f64; a.len()];
        for (i, gi) in g.iter_mut().enumerate() {
            let n = i / (a.len() / 2);
            let mut plus = a.clone();
            plus.as_slice_mut()[i] += eps;
            let mut minus = a.clone();
            minus.as_slice_mut()[i] -= eps;
            let lp = score_of(
                &suffix_logits(&mut net, target, &plus).as_slice()[n * 2..n * 2 + 2],
                0,
                score,
            );
            let lm = score_of(
                &suffix_logits(&mut net, target, &minus).as_slice()[n * 2..n * 2 + 2],
                0,
                score,
            );
            *gi = (lp - lm) / (2.0 * eps as f64);
        }
        for (n, m) in maps.iter().enumerate() {
            let (cam, alphas) = cam_by_hand(&a, &g, n);
            assert_close(&m.weights, &alphas, 2e-3, "alpha (finite differences)");
            assert_close(&m.values, &cam, 2e-3, "cam (finite differences)");
        }
    }
}

#[test]
fn gradient_at_an_early_target_matches_finite_differences_at_sampled_positions() {
    // Behind relu1 come a max pool, a conv and a ReLU: compare the backward gradient with
    // central differences at positions that are the strict maximum of their pooling window
    // (elsewhere the max pool's gradient is zero and the test below checks that).
    let target = "relu1";
    let mut net = tiny_net(7);
    let x = input(1, 2);
    let (a, _, g) = by_hand(&mut net, target, &x, 0, Score::LogOdds);
    let [_, k, h, w] = a.shape();
    let av = a.as_slice();
    let eps = 1e-3f32;
    let mut checked = 0;
    let mut nonzero = 0;
    for c in 0..k {
        for y in (0..h).step_by(2) {
            for xx in (0..w).step_by(2) {
                let idx = |dy: usize, dx: usize| (c * h + y + dy) * w + xx + dx;
                let window = [idx(0, 0), idx(0, 1), idx(1, 0), idx(1, 1)];
                let best = *window
                    .iter()
                    .max_by(|&&i, &&j| av[i].total_cmp(&av[j]))
                    .unwrap();
                let margin = window
                    .iter()
                    .filter(|&&i| i != best)
                    .map(|&i| av[best] - av[i])
                    .fold(f32::INFINITY, f32::min);
                if margin < 10.0 * eps {
                    continue;
                }
                let mut fd = |i: usize| {
                    let mut plus = a.clone();
                    plus.as_slice_mut()[i] += eps;
                    let mut minus = a.clone();
                    minus.as_slice_mut()[i] -= eps;
                    let lp = score_of(
                        suffix_logits(&mut net, target, &plus).as_slice(),
                        0,
                        Score::LogOdds,
                    );
                    let lm = score_of(
                        suffix_logits(&mut net, target, &minus).as_slice(),
                        0,
                        Score::LogOdds,
                    );
                    (lp - lm) / (2.0 * eps as f64)
                };
                for &i in &window {
                    let want = fd(i);
                    let got = g.as_slice()[i] as f64;
                    assert!(
                        (got - want).abs() <= 2e-3 + 1e-2 * want.abs(),
                        "d logit / dA at {i}: backward {got}, finite differences {want}"
                    );
                    checked += 1;
                    nonzero += usize::from(got != 0.0);
                }
            }
        }
    }
    assert!(
        checked >= 12 && nonzero >= 3,
        "too few positions checked: {checked} ({nonzero} non-zero)"
    );
}

#[test]
fn grad_cam_leaves_the_network_as_it_found_it() {
    let mut net = tiny_net(1);
    let x = input(2, 4);
    let before = net.forward(&x, Mode::Eval).unwrap();
    // Gradients already accumulated by a caller must survive.
    net.visit_params("", &mut |_, p| {
        for (i, g) in p.grad.as_slice_mut().iter_mut().enumerate() {
            *g = i as f32 * 0.01 - 0.3;
        }
    });
    let grads: Vec<Tensor4> = net
        .named_params()
        .iter()
        .map(|(_, p)| p.grad.clone())
        .collect();
    grad_cam(&mut net, "relu2", &x, 0, Score::Logit).unwrap();
    let after: Vec<Tensor4> = net
        .named_params()
        .iter()
        .map(|(_, p)| p.grad.clone())
        .collect();
    assert_eq!(grads, after);
    assert_eq!(net.forward(&x, Mode::Eval).unwrap(), before);
    // No cache is kept behind.
    let dy = Tensor4::zeros([2, 2, 1, 1]);
    assert!(matches!(
        net.backward(&dy),
        Err(LayersError::NoForwardCache { .. })
    ));
}

#[test]
fn grad_cam_rejects_bad_targets_classes_and_inputs() {
    let mut net = tiny_net(1);
    let x = input(1, 4);
    let err = grad_cam(&mut net, "conv9", &x, 0, Score::Logit)
        .unwrap_err()
        .to_string();
    assert!(err.contains("conv9") && err.contains("relu2"), "{err}");
    let err = grad_cam(&mut net, "fc", &x, 0, Score::Logit)
        .unwrap_err()
        .to_string();
    assert!(err.contains("last layer"), "{err}");
    let err = grad_cam(&mut net, "relu2", &x, 2, Score::LogOdds)
        .unwrap_err()
        .to_string();
    assert!(err.contains("class 2"), "{err}");
    let bad = Tensor4::zeros([1, 2, 8, 8]);
    assert!(grad_cam(&mut net, "relu2", &bad, 0, Score::Logit).is_err());
    // The network still works after the failures.
    assert!(grad_cam(&mut net, "relu2", &x, 0, Score::Logit).is_ok());
}

#[test]
fn upsampling_matches_pytorch_bilinear_without_corner_alignment() {
    // torch.nn.functional.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]), size=(4, 4),
    //                                 mode="bilinear", align_corners=False)
    let want = [
        1.0, 1.25, 1.75, 2.0, //
        1.5, 1.75, 2.25, 2.5, //
        2.5, 2.75, 3.25, 3.5, //
        3.0, 3.25, 3.75, 4.0,
    ];
    let up = fracture_nn::gradcam::upsample_bilinear(&[1.0, 2.0, 3.0, 4.0], 2, 2, 4, 4).unwrap();
    assert_eq!(up, want);
    // 1x3 -> 1x6 along a row: sample points (o + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, ...
    let up = fracture_nn::gradcam::upsample_bilinear(&[0.0, 4.0, 8.0], 1, 3, 1, 6).unwrap();
    assert_eq!(up, [0.0, 1.0, 3.0, 5.0, 7.0, 8.0]);
    // Same size is the identity.
    let v: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
    assert_eq!(
        fracture_nn::gradcam::upsample_bilinear(&v, 3, 4, 3, 4).unwrap(),
        v
    );
}

#[test]
fn heatmap_is_normalised_with_its_peak_and_handles_empty_and_bad_maps() {
    let cam = |values: Vec<f32>| CamMap {
        height: 2,
        width: 3,
        values,
        weights: vec![1.0],
        logits: vec![0.5, -0.5],
        class: 0,
        score: Score::Logit,
    };
    let h = Heatmap::from_cam(cam(vec![0.0, 1.0, 0.0, 0.0, 0.0, 4.0]), 12, 8).unwrap();
    assert_eq!(h.values.len(), 96);
    assert!(h.values.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(h.values.iter().copied().fold(0.0, f32::max), 1.0);
    // Cell (row 1, col 2) covers x 8..12, y 4..8; bilinear keeps its value up to the corner.
    let [px, py] = h.peak.unwrap();
    assert!(
        (8..12).contains(&px) && (4..8).contains(&py),
        "peak {px},{py}"
    );
    assert_eq!(h.value(px, py), Some(1.0));
    assert_eq!(h.peak_point(), Some([px as f32 + 0.5, py as f32 + 0.5]));
    assert!((h.probability() - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-12);

    let empty = Heatmap::from_cam(cam(vec![0.0; 6]), 6, 4).unwrap();
    assert_eq!(empty.peak, None);
    assert!(empty.values.iter().all(|&v| v == 0.0));

    assert!(Heatmap::from_cam(cam(vec![f32::NAN; 6]), 6, 4).is_err());
    assert!(Heatmap::from_cam(cam(vec![0.0; 5]), 6, 4).is_err());
    assert!(Heatmap::from_cam(cam(vec![0.0; 6]), 0, 4).is_err());
}

#[test]
fn several_targets_in_one_pass_equal_one_pass_per_target() {
    let mut net = tiny_net(13);
    let x = input(2, 6);
    let targets = ["relu2", "relu1", "pool1"];
    let together =
        fracture_nn::gradcam::grad_cam_layers(&mut net, &targets, &x, 0, Score::LogOdds).unwrap();
    assert_eq!(together.len(), 2);
    for (j, target) in targets.iter().enumerate() {
        let alone = grad_cam(&mut net, target, &x, 0, Score::LogOdds).unwrap();
        for n in 0..2 {
            assert_eq!(together[n][j], alone[n], "{target}, image {n}");
        }
    }
    assert!(fracture_nn::gradcam::grad_cam_layers(&mut net, &[], &x, 0, Score::Logit).is_err());
}

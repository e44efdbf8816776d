//! Grad-CAM on classifiers: the network opened into a chain computes what the classifier
//! computes (for plain, residual and EfficientNet-Lite0 models), targets
//! resolve by state-dict path, mismatched weights are refused, and overlays are drawn and
//! written as specified.

use fracture_nn::data::Normalization;
use fracture_nn::gradcam::{grad_cam, CamMap, GradCam, Heatmap, Score};
use fracture_nn::layers::{Layer, Mode};
use fracture_nn::model::{PlainNet, ResNet};
use fracture_nn::overlay::{
    blend, colormap, render_overlay, save_overlay, OverlayConfig, Probability,
};
use fracture_nn::tensor::Tensor4;
use fracture_nn::{Classifier, ClassifierMeta, ModelConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn images(n: usize, size: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * size * size)
        .map(|_| rng.gen_range(-1.0f32..1.5))
        .collect()
}

/// A classifier whose batch norms have non-default running statistics (a few training-mode
/// forward passes), so that a chain that forgot to copy buffers would be caught.
fn classifier(model: ModelConfig, seed: u64) -> Classifier {
    let size = model.image_size;
    let meta = ClassifierMeta::new(
        model,
        Normalization {
            mean: 0.4,
            std: 0.2,
        },
    );
    let mut clf = Classifier::new(meta, seed).unwrap();
    for k in 0..3 {
        let x = Tensor4::from_vec([4, 1, size, size], images(4, size, 100 + k)).unwrap();
        clf.net.forward(&x, Mode::Train).unwrap();
    }
    clf.net.clear_cache();
    clf
}

fn plain(size: usize) -> ModelConfig {
    ModelConfig::phantom(size).with_arch(PlainNet::new(&[4, 6, 8]))
}

fn residual(size: usize) -> ModelConfig {
    ModelConfig {
        image_size: size,
        ..ModelConfig::default()
    }
    .with_arch(ResNet::new(&[4, 6, 8], 2))
}

#[test]
fn the_chain_gives_the_classifiers_probabilities_for_every_architecture() {
    for (model, targets) in [
        (
            plain(24),
            vec!["blocks.0.2", "blocks.1", "blocks.2.2", "blocks.2.0"],
        ),
        (
            residual(24),
            vec!["stem.2", "blocks.1", "blocks.5", "blocks"],
        ),
        (
            residual(24).with_arch(ResNet::new(&[4, 6, 8], 2).with_stem_pool(true)),
            vec!["stem.3", "blocks.1", "blocks.5", "blocks"],
        ),
        (
            ModelConfig::lite0(32),
            vec!["_bn1", "_blocks.3", "_blocks", "_bn0", "_conv_head"],
        ),
    ] {
        let size = model.image_size;
        let mut clf = classifier(model, 4);
        let x = images(3, size, 9);
        let want = clf.predict_batch(&x, 3).unwrap();
        for target in targets {
            let mut cam = GradCam::with_target(&clf, target).unwrap();
            let maps = cam.heatmap_batch(&x, 3).unwrap();
            for (m, w) in maps.iter().zip(&want) {
                assert!(
                    (m.probability() - w).abs() < 1e-6,
                    "{target}: Grad-CAM P {} vs classifier P {w}",
                    m.probability()
                );
                assert_eq!((m.width, m.height), (size, size));
            }
        }
    }
}

#[test]
fn targets_resolve_to_the_output_of_the_named_layer_or_group() {
    let clf = classifier(plain(32), 1);
    let cam = GradCam::new(&clf).unwrap();
    assert_eq!(cam.targets(), GradCam::default_targets(&clf.meta.model));
    assert_eq!(cam.targets(), ["blocks.2.2", "blocks.1.2"]);
    assert_eq!(cam.class(), clf.meta.positive_class);
    assert_eq!(cam.score(), Score::LogOdds);
    let targets = cam.layer_names();
    assert_eq!(targets.first().map(String::as_str), Some("blocks.0.0"));
    assert_eq!(targets.last().map(String::as_str), Some("drop"));
    assert!(!targets.contains(&"fc".to_string()));

    let x = images(1, 32, 3);
    let side = |t: &str| {
        let mut c = GradCam::with_target(&clf, t).unwrap();
        let h = c.heatmap(&x).unwrap();
        (h.cams[0].height, h.cams[0].width, h.cams[0].weights.len())
    };
    // 32 px: stage i convolves at 32 / 2^i and pools to half of that.
    assert_eq!(side("blocks.0.2"), (32, 32, 4));
    assert_eq!(side("blocks.1.2"), (16, 16, 6));
    assert_eq!(side("blocks.1"), (8, 8, 6)); // the group's output: its max pool
    assert_eq!(side("blocks.1.3"), (8, 8, 6));
    assert_eq!(side("blocks.2.2"), (8, 8, 8));

    for bad in ["fc", "blocks.7", "block", "", "blocks.1.2.0"] {
        let err = GradCam::with_target(&clf, bad).unwrap_err().to_string();
        assert!(err.contains("blocks.2.2"), "{bad:?}: {err}");
    }
    assert!(GradCam::new(&clf).unwrap().with_class(2).is_err());
    assert!(GradCam::new(&clf).unwrap().with_class(1).is_ok());
}

#[test]
fn classifier_maps_equal_grad_cam_on_the_same_layers_built_by_hand() {
    // The plain model unfolded by hand: the same layers as top-level slots of a Sequential
    // whose weights come from the classifier; grad_cam on it must give GradCam's map.
    let clf = classifier(plain(16), 2);
    let x = images(2, 16, 5);
    let mut cam = GradCam::with_target(&clf, "blocks.1.2")
        .unwrap()
        .with_score(Score::Logit);
    let maps = cam.heatmap_batch(&x, 2).unwrap();

    let mut rng = ChaCha8Rng::seed_from_u64(0);
    use fracture_nn::layers::*;
    let mut net = Sequential::new();
    let mut c = 1;
    for (i, &w) in [4, 6, 8].iter().enumerate() {
        net.push(
            format!("c{i}"),
            Conv2dConfig::new(c, w, 3)
                .with_padding(1)
                .with_bias(false)
                .init(&mut rng)
                .unwrap(),
        )
        .unwrap();
        net.push(format!("b{i}"), BatchNorm2dConfig::new(w).init().unwrap())
            .unwrap();
        net.push(format!("r{i}"), Relu::new()).unwrap();
        net.push(format!("p{i}"), MaxPool2dConfig::new(2).init().unwrap())
            .unwrap();
        c = w;
    }
    net.push("gap", GlobalAvgPool::new()).unwrap();
    net.push("fc", LinearConfig::new(8, 2).init(&mut rng).unwrap())
        .unwrap();
    let src: Vec<_> = clf
        .net
        .named_params()
        .into_iter()
        .map(|(_, p)| p.value.clone())
        .collect();
    let mut it = src.into_iter();
    net.visit_params("", &mut |_, p| p.value = it.next().unwrap());
    let bufs: Vec<_> = clf
        .net
        .named_buffers()
        .into_iter()
        .map(|(_, b)| b.value.clone())
        .collect();
    let mut it = bufs.into_iter();
    net.visit_buffers("", &mut |_, b| b.value = it.next().unwrap());

    let xt = Tensor4::from_vec([2, 1, 16, 16], x).unwrap();
    let want = grad_cam(&mut net, "r1", &xt, 0, Score::Logit).unwrap();
    for (m, w) in maps.iter().zip(&want) {
        assert_eq!(m.cams[0].height, w.height);
        for (a, b) in m.cams[0].values.iter().zip(&w.values) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        assert!(w.max() > 0.0 || w.weights.iter().any(|&v| v != 0.0));
    }
}

#[test]
fn weights_that_do_not_match_the_architecture_are_refused_by_name() {
    let clf = classifier(plain(16), 2);
    // A network of another architecture under this classifier's metadata.
    let other = plain(16)
        .with_arch(PlainNet::new(&[4, 7, 8]))
        .build(0)
        .unwrap();
    let wrong = Classifier::from_parts(other, clf.meta.clone());
    let err = GradCam::new(&wrong).unwrap_err().to_string();
    assert!(err.contains("blocks.1.0.weight"), "{err}");
}

#[test]
fn bad_inputs_give_errors() {
    let clf = classifier(plain(16), 2);
    let mut cam = GradCam::new(&clf).unwrap();
    assert!(cam.heatmap(&[0.0; 15]).is_err());
    assert!(cam.heatmap_batch(&images(2, 16, 1), 3).is_err());
    let mut nan = images(1, 16, 1);
    nan[40] = f32::NAN;
    let err = cam.heatmap(&nan).unwrap_err().to_string();
    assert!(err.contains("non-finite"), "{err}");
    // Still usable afterwards.
    assert!(cam.heatmap(&images(1, 16, 1)).is_ok());
}

fn one_hot_heat(w: usize, h: usize, at: usize) -> Heatmap {
    let mut values = vec![0.0; 4];
    values[at] = 2.0;
    let cam = CamMap {
        height: 2,
        width: 2,
        values,
        weights: vec![1.0],
        logits: vec![0.3, -0.3],
        class: 0,
        score: Score::LogOdds,
    };
    Heatmap::from_cam(cam, w, h).unwrap()
}

#[test]
fn colormap_runs_from_cold_blue_to_hot_red() {
    let cold = colormap(0.0);
    let hot = colormap(1.0);
    assert!(cold[2] > cold[0] && hot[0] > hot[2]);
    assert_eq!(colormap(f32::NAN), cold);
    assert_eq!(colormap(-3.0), cold);
    // Continuous: neighbouring values never jump by more than a few levels.
    for i in 0..1000 {
        let (a, b) = (
            colormap(i as f32 / 1000.0),
            colormap((i + 1) as f32 / 1000.0),
        );
        for c in 0..3 {
            assert!(a[c].abs_diff(b[c]) <= 2, "jump at {i}: {a:?} -> {b:?}");
        }
    }
}

#[test]
fn overlays_blend_and_lay_out_as_documented() {
    let heat = one_hot_heat(8, 8, 3);
    let gray: Vec<u8> = (0..64).map(|i| (i * 4) as u8).collect();
    let img = blend(&gray, &heat, 0.5).unwrap();
    for (i, px) in img.pixels().enumerate() {
        let c = colormap(heat.values[i]);
        for (got, colour) in px.0.iter().zip(c) {
            let want = (0.5 * gray[i] as f32 + 0.5 * colour as f32).round() as u8;
            assert!(got.abs_diff(want) <= 1);
        }
    }
    let cfg = OverlayConfig {
        alpha: 0.5,
        min_side: 64,
        mark_peak: true,
    };
    let p = Probability {
        p: 0.75,
        threshold: 0.5,
    };
    let out = render_overlay(&gray, &heat, Some(p), &cfg).unwrap();
    let (scale, gap, bar) = (8u32, 4u32, 6u32);
    let caption = fracture_nn::overlay::CAPTION_HEIGHT as u32;
    assert_eq!(out.dimensions(), (2 * 64 + gap, 64 + gap + bar + caption));
    // Left panel: the radiograph, enlarged by nearest neighbour.
    assert_eq!(out.get_pixel(5 * scale + 3, 2 * scale + 1).0, [gray[21]; 3]);
    // The peak (bottom-right cell) is marked in white on the right panel.
    let [px, py] = heat.peak.unwrap();
    let (cx, cy) = (
        64 + gap + px as u32 * scale + scale / 2,
        py as u32 * scale + scale / 2,
    );
    assert_eq!(out.get_pixel(cx - 14, cy).0, [255, 255, 255]);
    assert_eq!(out.get_pixel(cx, cy - 14).0, [255, 255, 255]);
    assert_ne!(out.get_pixel(cx, cy).0, [255, 255, 255]); // the centre stays visible
                                                          // The bar: filled to 75 %, the threshold tick at 50 % in white, the rest dark.
    let y = 64 + gap + 2;
    let w = 2 * 64 + gap;
    assert_eq!(out.get_pixel(w / 4, y).0, colormap(0.75));
    assert_eq!(out.get_pixel(w / 2, y).0, [255, 255, 255]);
    assert_eq!(out.get_pixel(w - 2, y).0, [60, 60, 60]);
    // Without a probability there is no bar.
    let out = render_overlay(&gray, &heat, None, &cfg).unwrap();
    assert_eq!(out.dimensions(), (2 * 64 + gap, 64));
}

#[test]
fn overlays_reject_bad_input_and_write_png() {
    let heat = one_hot_heat(8, 8, 0);
    let cfg = OverlayConfig::default();
    assert!(blend(&[0; 63], &heat, 0.5).is_err());
    assert!(blend(&[0; 64], &heat, 1.5).is_err());
    let bad_p = Probability {
        p: 1.2,
        threshold: 0.5,
    };
    assert!(render_overlay(&[0; 64], &heat, Some(bad_p), &cfg).is_err());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/o.png");
    save_overlay(&path, &[90; 64], &heat, None, &cfg).unwrap();
    let back = image::open(&path).unwrap().to_rgb8();
    assert_eq!(back, render_overlay(&[90; 64], &heat, None, &cfg).unwrap());
    // A path that cannot be written names the file.
    let blocked = dir.path().join("nested/dir/o.png/x.png");
    let err = save_overlay(&blocked, &[90; 64], &heat, None, &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("o.png"), "{err}");
}

#[test]
fn the_default_fuses_the_single_layer_maps_by_their_normalised_mean() {
    let clf = classifier(plain(32), 6);
    let x = images(2, 32, 8);
    let fused = GradCam::new(&clf).unwrap().heatmap_batch(&x, 2).unwrap();
    let targets = GradCam::default_targets(&clf.meta.model);
    let singles: Vec<Vec<Heatmap>> = targets
        .iter()
        .map(|t| {
            GradCam::with_target(&clf, t)
                .unwrap()
                .heatmap_batch(&x, 2)
                .unwrap()
        })
        .collect();
    for (n, heat) in fused.iter().enumerate() {
        assert_eq!(heat.cams.len(), 2);
        let mut mean = vec![0f64; 32 * 32];
        for (j, single) in singles.iter().enumerate() {
            // One backward pass for all targets gives each target's own map.
            assert_eq!(heat.cams[j], single[n].cams[0]);
            let c = &single[n].cams[0];
            let up = fracture_nn::gradcam::upsample_bilinear(&c.values, c.height, c.width, 32, 32)
                .unwrap();
            let max = up.iter().copied().fold(0.0f32, f32::max);
            if max > 0.0 {
                for (m, u) in mean.iter_mut().zip(&up) {
                    *m += (*u / max) as f64;
                }
            }
        }
        let max = mean.iter().copied().fold(0.0, f64::max);
        assert!(
            max > 0.0,
            "image {n}: all maps zero, the comparison would be vacuous"
        );
        for (got, want) in heat.values.iter().zip(&mean) {
            assert!((*got as f64 - want / max).abs() < 1e-5);
        }
        let [px, py] = heat.peak.unwrap();
        assert_eq!(heat.value(px, py), Some(1.0));
    }
}

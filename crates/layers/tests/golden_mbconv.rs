//! ReLU6 and EfficientNet-Lite's inverted-residual block against PyTorch golden values from
//! `../shared/golden` (`activation_relu6`, `mbconv_*`; see its README). Every shape and
//! hyper-parameter is read from the files.

mod common;

use common::{assert_close, Golden};
use fracture_layers::*;
use fracture_test_support::shared_dir;
use rand::SeedableRng;

const REL: f32 = 1e-4;
const ABS: f32 = 1e-5;

/// PyTorch: `y = F.relu6(x); y.backward(dy)`; elements sit exactly at 0, 6 and -0.
#[test]
fn relu6_matches_pytorch() {
    let Some(g) = Golden::load("activation_relu6") else {
        return;
    };
    let x = g.t4("x");
    for layer in [Relu::relu6(), Activation::Relu6.layer()] {
        let mut layer = layer;
        let y = layer.forward(&x, Mode::Train).unwrap();
        assert_close("relu6 y", y.as_slice(), g.vec("y"), REL, ABS);
        let dx = layer.backward(&g.t4("dy")).unwrap();
        assert_close("relu6 dx", dx.as_slice(), g.vec("dx"), REL, ABS);
    }
    // The tensor kernels, and the fused batch norm + ReLU6 with an identity batch norm.
    let mut y = x.clone();
    fracture_tensor::relu6_forward_inplace(&mut y);
    assert_close("relu6 kernel y", y.as_slice(), g.vec("y"), REL, ABS);
    let mut d = g.t4("dy");
    fracture_tensor::relu6_backward_inplace(&y, &mut d).unwrap();
    assert_close("relu6 kernel dx", d.as_slice(), g.vec("dx"), REL, ABS);
    let c = x.shape()[1];
    let mut fused = BnReluPoolConfig::new(c)
        .with_pool(false)
        .with_activation(Activation::Relu6)
        .init()
        .unwrap();
    let yf = fused.forward(&x, Mode::EvalWithGrad).unwrap();
    // Running stats 0 / 1 with eps: the batch norm scales by 1 / sqrt(1 + eps).
    let s = 1.0 / (1.0f32 + fused.config().eps).sqrt();
    let want: Vec<f32> = x
        .as_slice()
        .iter()
        .map(|v| (v * s).clamp(0.0, 6.0))
        .collect();
    assert_close("fused relu6 y", yf.as_slice(), &want, REL, ABS);
}

fn meta_usize(g: &Golden, key: &str) -> usize {
    g.meta[key]
        .parse()
        .unwrap_or_else(|_| panic!("metadata {key}"))
}

/// One training-mode forward and backward of an MBConv block, parameters from the file.
fn check_mbconv(name: &str) {
    let Some(g) = Golden::load(name) else {
        return;
    };
    let cfg = InvertedResidualConfig {
        bn_eps: g.meta_f32("bn_eps"),
        bn_momentum: g.meta_f32("bn_momentum"),
        ..InvertedResidualConfig::new(
            meta_usize(&g, "in"),
            meta_usize(&g, "out"),
            meta_usize(&g, "expand"),
            meta_usize(&g, "kernel"),
            meta_usize(&g, "stride"),
        )
    };
    assert_eq!(
        cfg.has_shortcut(),
        g.meta["residual"] == "true",
        "{name}: shortcut rule"
    );
    let mut block = cfg
        .init(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0))
        .unwrap();
    // Parameters from the file; running statistics start at 0 / 1 as in PyTorch.
    let mut names = Vec::new();
    block.visit_params("", &mut |n, p| {
        let (shape, v) = &g.tensors[&format!("param.{n}")];
        assert_eq!(shape.as_slice(), p.torch_shape(), "{name}: {n} shape");
        p.value.as_slice_mut().copy_from_slice(v);
        names.push(n.to_string());
    });
    let expected: Vec<String> = g
        .tensors
        .keys()
        .filter_map(|k| k.strip_prefix("grad.").map(str::to_string))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(sorted, expected_sorted, "{name}: parameter names");
    let y = block.forward(&g.t4("x"), Mode::Train).unwrap();
    assert_close(&format!("{name} y"), y.as_slice(), g.vec("y"), REL, ABS);
    block.zero_grad();
    let dx = block.backward(&g.t4("dy")).unwrap();
    assert_close(&format!("{name} dx"), dx.as_slice(), g.vec("dx"), REL, ABS);
    for (n, p) in block.named_params() {
        assert_close(
            &format!("{name} grad.{n}"),
            p.grad.as_slice(),
            g.vec(&format!("grad.{n}")),
            REL,
            ABS,
        );
    }
    for (n, b) in block.named_buffers() {
        assert_close(
            &format!("{name} {n}"),
            b.value.as_slice(),
            g.vec(&format!("param.{n}")),
            REL,
            ABS,
        );
    }
    assert_eq!(y.shape(), g.t4("dy").shape(), "{name}: output shape");
}

#[test]
fn mbconv_blocks_match_pytorch() {
    let Some(dir) = shared_dir() else {
        return;
    };
    let mut n = 0;
    for entry in std::fs::read_dir(dir.join("golden")).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(stem) = file
            .strip_prefix("mbconv_")
            .and_then(|s| s.strip_suffix(".safetensors"))
        {
            check_mbconv(&format!("mbconv_{stem}"));
            n += 1;
        }
    }
    assert!(n >= 3, "expected the three mbconv golden files, found {n}");
}

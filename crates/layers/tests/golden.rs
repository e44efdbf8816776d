//! Layers, loss and optimizers against PyTorch golden values from `../shared/golden` (computed
//! by PyTorch in float64, stored as float32; see its README). Single layers must match within
//! 1e-4 relative (1e-5 absolute), the whole `tiny_net` within 1e-3 relative.

mod common;

use common::{assert_close, set_param, tiny_net_check, tiny_net_check_members, Golden};
use fracture_layers::optim::{AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};
use fracture_layers::*;
use fracture_tensor::Tensor4;
use fracture_test_support::shared_dir;
use rand::SeedableRng;

const REL: f32 = 1e-4;
const ABS: f32 = 1e-5;

fn rng() -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(0)
}

/// PyTorch: `bn = nn.BatchNorm2d(C).double().train(); y = bn(x); y.backward(dy)`, then
/// `bn.eval(); y_eval = bn(x_eval)`, gamma/beta set from the file.
#[test]
fn batch_norm2d_matches_pytorch() {
    let Some(g) = Golden::load("batch_norm2d") else {
        return;
    };
    let mut bn = BatchNorm2dConfig {
        num_features: g.shape("gamma")[0],
        eps: g.meta_f32("eps"),
        momentum: g.meta_f32("momentum"),
    }
    .init()
    .unwrap();
    set_param(&mut bn, "weight", g.vec("gamma"));
    set_param(&mut bn, "bias", g.vec("beta"));
    let y = bn.forward(&g.t4("x"), Mode::Train).unwrap();
    assert_close("bn y", y.as_slice(), g.vec("y"), REL, ABS);
    let dx = bn.backward(&g.t4("dy")).unwrap();
    assert_close("bn dx", dx.as_slice(), g.vec("dx"), REL, ABS);
    assert_close(
        "bn dgamma",
        bn.weight().grad.as_slice(),
        g.vec("dgamma"),
        REL,
        ABS,
    );
    assert_close(
        "bn dbeta",
        bn.bias().grad.as_slice(),
        g.vec("dbeta"),
        REL,
        ABS,
    );
    assert_close(
        "bn running_mean",
        bn.running_mean().value.as_slice(),
        g.vec("running_mean"),
        REL,
        ABS,
    );
    assert_close(
        "bn running_var",
        bn.running_var().value.as_slice(),
        g.vec("running_var"),
        REL,
        ABS,
    );
    let stats = (bn.running_mean().clone(), bn.running_var().clone());
    let y_eval = bn.forward(&g.t4("x_eval"), Mode::Eval).unwrap();
    assert_close("bn y_eval", y_eval.as_slice(), g.vec("y_eval"), REL, ABS);
    // Eval mode leaves the running statistics alone.
    assert_eq!((bn.running_mean().clone(), bn.running_var().clone()), stats);
}

/// PyTorch: `conv = nn.Conv2d(C, O, k, stride, padding, groups=groups, bias=bias)` with the
/// file's weights, `y = conv(x); y.backward(dy)`, for every `grouped_conv2d_*` file (depthwise
/// and two-group). The layer is configured from the metadata and the tensors' shapes only.
#[test]
fn grouped_conv2d_layer_matches_pytorch() {
    let Some(dir) = shared_dir() else {
        return;
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir.join("golden"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("grouped_conv2d_") && name.ends_with(".safetensors")
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no grouped_conv2d_* golden files");
    for path in paths {
        let name = path.display().to_string();
        let g = Golden::from_path(&path);
        let meta = |key: &str| -> usize {
            g.meta[key]
                .parse()
                .unwrap_or_else(|_| panic!("{name}: metadata {key}"))
        };
        let bias: bool = g.meta["bias"].parse().expect("bias is a JSON bool");
        let (xs, ws) = (g.shape("x"), g.shape("w"));
        let mut cfg = Conv2dConfig::new(xs[1], ws[0], ws[2])
            .with_stride(meta("stride"))
            .with_padding(meta("padding"))
            .with_groups(meta("groups"))
            .with_bias(bias);
        cfg.kernel_size = [ws[2], ws[3]];
        let mut conv = cfg.init(&mut rng()).unwrap();
        assert_eq!(
            conv.weight().value.shape().as_slice(),
            ws,
            "{name}: weight shape"
        );
        set_param(&mut conv, "weight", g.vec("w"));
        if bias {
            set_param(&mut conv, "bias", g.vec("b"));
        }
        let y = conv.forward(&g.t4("x"), Mode::Train).unwrap();
        assert_close(&format!("{name} y"), y.as_slice(), g.vec("y"), REL, ABS);
        let dx = conv.backward(&g.t4("dy")).unwrap();
        assert_close(&format!("{name} dx"), dx.as_slice(), g.vec("dx"), REL, ABS);
        let dw = conv.weight().grad.as_slice();
        assert_close(&format!("{name} dw"), dw, g.vec("dw"), REL, ABS);
        if bias {
            let db = conv.bias().unwrap().grad.as_slice();
            assert_close(&format!("{name} db"), db, g.vec("db"), REL, ABS);
        }
    }
}

/// PyTorch: `y = F.linear(x, w, b); y.backward(dy)`.
#[test]
fn linear_matches_pytorch() {
    let Some(g) = Golden::load("linear") else {
        return;
    };
    let [fo, fi] = [g.shape("w")[0], g.shape("w")[1]];
    let mut fc = LinearConfig::new(fi, fo).init(&mut rng()).unwrap();
    set_param(&mut fc, "weight", g.vec("w"));
    set_param(&mut fc, "bias", g.vec("b"));
    let y = fc.forward(&g.t4("x"), Mode::Train).unwrap();
    assert_close("linear y", y.as_slice(), g.vec("y"), REL, ABS);
    let dx = fc.backward(&g.t4("dy")).unwrap();
    assert_close("linear dx", dx.as_slice(), g.vec("dx"), REL, ABS);
    assert_close(
        "linear dw",
        fc.weight().grad.as_slice(),
        g.vec("dw"),
        REL,
        ABS,
    );
    assert_close(
        "linear db",
        fc.bias().unwrap().grad.as_slice(),
        g.vec("db"),
        REL,
        ABS,
    );
}

fn check_cross_entropy(name: &str) {
    let Some(g) = Golden::load(name) else { return };
    let mut loss = CrossEntropyLoss::new().with_label_smoothing(g.meta_f32("label_smoothing"));
    if g.tensors.contains_key("class_weights") {
        loss = loss.with_class_weights(g.vec("class_weights").to_vec());
    }
    let (l, d) = loss
        .forward_backward(&g.t4("logits"), &g.targets("targets"))
        .unwrap();
    assert_close(&format!("{name} loss"), &[l], g.vec("loss"), REL, ABS);
    assert_close(
        &format!("{name} dlogits"),
        d.as_slice(),
        g.vec("dlogits"),
        REL,
        ABS,
    );
}

/// PyTorch: `loss = F.cross_entropy(logits, targets); loss.backward()`.
#[test]
fn cross_entropy_matches_pytorch() {
    check_cross_entropy("cross_entropy");
}

/// PyTorch: `loss = F.cross_entropy(logits, targets, weight=class_weights); loss.backward()`.
#[test]
fn cross_entropy_weighted_matches_pytorch() {
    check_cross_entropy("cross_entropy_weighted");
}

/// Runs three optimizer steps on a `[5, 3]` parameter with the file's gradients and compares
/// each intermediate parameter.
fn check_optimizer(g: &Golden, opt: &mut dyn Optimizer, lr: f32, what: &str) {
    let [rows, cols] = [g.shape("param0")[0], g.shape("param0")[1]];
    // A bias-free Linear(cols -> rows) holds exactly one [rows, cols] parameter.
    let mut holder = LinearConfig::new(cols, rows)
        .with_bias(false)
        .init(&mut rng())
        .unwrap();
    set_param(&mut holder, "weight", g.vec("param0"));
    for k in 1..=3 {
        holder.zero_grad();
        holder
            .weight_mut()
            .grad
            .as_slice_mut()
            .copy_from_slice(g.vec(&format!("grad{k}")));
        opt.step(&mut holder, lr).unwrap();
        assert_close(
            &format!("{what} param{k}"),
            holder.weight().value.as_slice(),
            g.vec(&format!("param{k}")),
            REL,
            ABS,
        );
    }
}

/// PyTorch: `torch.optim.SGD([p], lr, momentum, weight_decay=..., nesterov=True)`, 3 steps.
#[test]
fn sgd_nesterov_matches_pytorch() {
    let Some(g) = Golden::load("sgd_nesterov") else {
        return;
    };
    assert_eq!(g.meta["nesterov"], "true");
    let mut opt = Sgd::new(SgdConfig {
        momentum: g.meta_f32("momentum"),
        dampening: 0.0,
        weight_decay: g.meta_f32("weight_decay"),
        nesterov: true,
    })
    .unwrap();
    check_optimizer(&g, &mut opt, g.meta_f32("lr"), "sgd");
}

/// PyTorch: `torch.optim.AdamW([p], lr, betas, eps, weight_decay)`, 3 steps.
#[test]
fn adamw_matches_pytorch() {
    let Some(g) = Golden::load("adamw") else {
        return;
    };
    let betas: Vec<f32> = serde_json::from_str(&g.meta["betas"]).unwrap();
    let mut opt = AdamW::new(AdamWConfig {
        beta1: betas[0],
        beta2: betas[1],
        eps: g.meta_f32("eps"),
        weight_decay: g.meta_f32("weight_decay"),
    })
    .unwrap();
    check_optimizer(&g, &mut opt, g.meta_f32("lr"), "adamw");
}

/// The golden `tiny_net`: conv3x3(1->4, pad 1)-BN-ReLU-maxpool2, conv3x3(4->8, pad 1)-BN-ReLU,
/// global average pool, linear(8->2), under the state-dict names `conv1 bn1 conv2 bn2 fc`.
pub fn tiny_net(c1: usize, c2: usize) -> Sequential {
    let mut r = rng();
    Sequential::new()
        .with(
            "conv1",
            Conv2dConfig::new(1, c1, 3)
                .with_padding(1)
                .init(&mut r)
                .unwrap(),
        )
        .unwrap()
        .with("bn1", BatchNorm2dConfig::new(c1).init().unwrap())
        .unwrap()
        .with("relu1", Relu::new())
        .unwrap()
        .with("pool1", MaxPool2dConfig::new(2).init().unwrap())
        .unwrap()
        .with(
            "conv2",
            Conv2dConfig::new(c1, c2, 3)
                .with_padding(1)
                .init(&mut r)
                .unwrap(),
        )
        .unwrap()
        .with("bn2", BatchNorm2dConfig::new(c2).init().unwrap())
        .unwrap()
        .with("relu2", Relu::new())
        .unwrap()
        .with("gap", GlobalAvgPool::new())
        .unwrap()
        .with("fc", LinearConfig::new(c2, 2).init(&mut r).unwrap())
        .unwrap()
}

/// PyTorch: the network above in training mode, `loss = F.cross_entropy(net(x), targets);
/// loss.backward()`; `param.*` are the weights used, `grad.*` their gradients, `buffer.*` the
/// BN running statistics after this one forward pass.
#[test]
fn tiny_net_matches_pytorch() {
    let Some(g) = Golden::load("tiny_net") else {
        return;
    };
    let c1: usize = g.meta["c1"].parse().unwrap();
    let c2: usize = g.meta["c2"].parse().unwrap();
    let mut net = tiny_net(c1, c2);
    let dlogits = tiny_net_check(&g, &mut net);
    // The input gradient path (full backward) gives the same parameter gradients.
    let first: Vec<Tensor4> = net
        .named_params()
        .into_iter()
        .map(|(_, p)| p.grad.clone())
        .collect();
    net.forward(&g.t4("x"), Mode::Train).unwrap();
    net.zero_grad();
    let dx = net.backward(&dlogits).unwrap();
    assert_eq!(dx.shape(), g.t4("x").shape());
    let second: Vec<Tensor4> = net
        .named_params()
        .into_iter()
        .map(|(_, p)| p.grad.clone())
        .collect();
    assert_eq!(first, second);
}

/// An [`Ensemble`] of two copies of the golden `tiny_net` computes PyTorch's network: the mean of
/// two equal logits is PyTorch's logits, each member receives half of PyTorch's parameter
/// gradients (`torch.stack([net(x), net(x)]).mean(0)` backpropagates `dy / 2` into each), and
/// each member's BN statistics are PyTorch's buffers; the full backward gives an input gradient.
#[test]
fn ensemble_of_two_tiny_nets_matches_pytorch() {
    let Some(g) = Golden::load("tiny_net") else {
        return;
    };
    let c1: usize = g.meta["c1"].parse().unwrap();
    let c2: usize = g.meta["c2"].parse().unwrap();
    let mut ens = Ensemble::new(vec![tiny_net(c1, c2), tiny_net(c1, c2)]).unwrap();
    let dlogits = tiny_net_check_members(&g, &mut ens, 2);
    ens.forward(&g.t4("x"), Mode::Train).unwrap();
    let dx = ens.backward(&dlogits).unwrap();
    assert_eq!(dx.shape(), g.t4("x").shape());
}

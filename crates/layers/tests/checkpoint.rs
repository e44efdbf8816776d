//! Checkpoints: round trips are exact and byte-reproducible, mismatches are errors naming the
//! tensor, corrupt or truncated files are errors (never panics), optimizer state resumes training
//! bit for bit, and files open in Python's `safetensors`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::rand_tensor;
use fracture_layers::checkpoint::{self, Metadata};
use fracture_layers::optim::{AdamW, AdamWConfig, Optimizer, OptimizerState, Sgd, SgdConfig};
use fracture_layers::*;
use fracture_tensor::Tensor4;
use proptest::prelude::*;
use rand::SeedableRng;

fn small_net(seed: u64, classes: usize) -> Sequential {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Sequential::new()
        .with(
            "conv",
            Conv2dConfig::new(1, 4, 3)
                .with_padding(1)
                .with_bias(false)
                .init(&mut r)
                .unwrap(),
        )
        .unwrap()
        .with("bn", BatchNorm2dConfig::new(4).init().unwrap())
        .unwrap()
        .with("relu", Relu::new())
        .unwrap()
        .with("pool", MaxPool2dConfig::new(2).init().unwrap())
        .unwrap()
        .with(
            "blocks",
            Sequential::new()
                .with("0", ResidualBlockConfig::new(4, 6, 2).init(&mut r).unwrap())
                .unwrap(),
        )
        .unwrap()
        .with("gap", GlobalAvgPool::new())
        .unwrap()
        .with("drop", DropoutConfig::new(0.3).init(&mut r).unwrap())
        .unwrap()
        .with("fc", LinearConfig::new(6, classes).init(&mut r).unwrap())
        .unwrap()
}

fn batch(step: usize) -> (Tensor4, Vec<usize>) {
    (
        rand_tensor([4, 1, 8, 8], 1000 + step as u64),
        vec![step % 2, 1, 0, (step / 2) % 2],
    )
}

fn train_steps(net: &mut Sequential, opt: &mut dyn Optimizer, steps: std::ops::Range<usize>) {
    for s in steps {
        let (x, t) = batch(s);
        let logits = net.forward(&x, Mode::Train).unwrap();
        let (_, d) = CrossEntropyLoss::new()
            .forward_backward(&logits, &t)
            .unwrap();
        net.zero_grad();
        net.backward_params_only(&d).unwrap();
        opt.step(net, 0.05).unwrap();
    }
}

fn meta() -> Metadata {
    let mut m = BTreeMap::new();
    m.insert(
        "architecture".to_string(),
        r#"{"name":"small_net","classes":2}"#.to_string(),
    );
    m.insert("epoch".to_string(), "3".to_string());
    m.insert("a_first_key".to_string(), "x".to_string());
    m
}

type State = (
    Vec<(String, Tensor4)>,
    Vec<(String, Tensor4)>,
    Vec<RngStream>,
);

fn state_of(net: &Sequential) -> State {
    let p = net
        .named_params()
        .into_iter()
        .map(|(n, p)| (n, p.value.clone()))
        .collect();
    let b = net
        .named_buffers()
        .into_iter()
        .map(|(n, b)| (n, b.value.clone()))
        .collect();
    let mut c = Vec::new();
    net.visit_rng_streams_ref("", &mut |_, s| c.push(*s));
    (p, b, c)
}

#[test]
fn save_load_save_is_byte_identical_and_restores_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = small_net(1, 2);
    let mut opt = Sgd::new(SgdConfig {
        momentum: 0.9,
        ..Default::default()
    })
    .unwrap();
    train_steps(&mut net, &mut opt, 0..3);
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    checkpoint::save_model(&a, &net, &meta()).unwrap();
    let mut other = small_net(2, 2);
    assert_ne!(state_of(&other), state_of(&net));
    let loaded_meta = checkpoint::load_model(&a, &mut other).unwrap();
    assert_eq!(state_of(&other), state_of(&net));
    assert_eq!(loaded_meta["architecture"], meta()["architecture"]);
    assert_eq!(loaded_meta["format_version"], checkpoint::FORMAT_VERSION);
    let mut seed = RngStream {
        seed: 0,
        counter: 0,
    };
    net.visit_rng_streams_ref("", &mut |name, st| {
        assert_eq!(name, "drop");
        seed = *st;
    });
    assert_eq!(seed.counter, 3, "three training forward passes");
    assert_eq!(
        loaded_meta["rng_streams"],
        format!(r#"{{"drop":{{"seed":{},"counter":3}}}}"#, seed.seed)
    );
    checkpoint::save_model(&b, &other, &meta()).unwrap();
    let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(ba, bb, "save -> load -> save must give identical bytes");
    // Saving the same model again (new HashMaps inside safetensors) gives the same bytes too.
    for _ in 0..5 {
        assert_eq!(checkpoint::model_to_bytes(&net, &meta()).unwrap(), ba);
    }
    // Same predictions.
    let x = rand_tensor([2, 1, 8, 8], 5);
    assert_eq!(
        net.forward(&x, Mode::Eval).unwrap(),
        other.forward(&x, Mode::Eval).unwrap()
    );
    // No temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn tensors_have_pytorch_names_and_shapes() {
    let net = small_net(1, 2);
    let bytes = checkpoint::model_to_bytes(&net, &meta()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<(String, Vec<usize>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect();
    names.sort();
    let want: Vec<(&str, Vec<usize>)> = vec![
        ("blocks.0.bn1.bias", vec![6]),
        ("blocks.0.bn1.running_mean", vec![6]),
        ("blocks.0.bn1.running_var", vec![6]),
        ("blocks.0.bn1.weight", vec![6]),
        ("blocks.0.bn2.bias", vec![6]),
        ("blocks.0.bn2.running_mean", vec![6]),
        ("blocks.0.bn2.running_var", vec![6]),
        ("blocks.0.bn2.weight", vec![6]),
        ("blocks.0.conv1.weight", vec![6, 4, 3, 3]),
        ("blocks.0.conv2.weight", vec![6, 6, 3, 3]),
        ("blocks.0.downsample.0.weight", vec![6, 4, 1, 1]),
        ("blocks.0.downsample.1.bias", vec![6]),
        ("blocks.0.downsample.1.running_mean", vec![6]),
        ("blocks.0.downsample.1.running_var", vec![6]),
        ("blocks.0.downsample.1.weight", vec![6]),
        ("bn.bias", vec![4]),
        ("bn.running_mean", vec![4]),
        ("bn.running_var", vec![4]),
        ("bn.weight", vec![4]),
        ("conv.weight", vec![4, 1, 3, 3]),
        ("fc.bias", vec![2]),
        ("fc.weight", vec![2, 6]),
    ];
    let want: Vec<(String, Vec<usize>)> =
        want.into_iter().map(|(n, s)| (n.to_string(), s)).collect();
    assert_eq!(names, want);
}

fn load_err(bytes: &[u8], model: &mut dyn Layer) -> String {
    let before = checkpoint::model_to_bytes(model, &Metadata::new()).unwrap();
    let e = checkpoint::model_from_bytes(bytes, model, Path::new("ckpt.safetensors")).unwrap_err();
    let after = checkpoint::model_to_bytes(model, &Metadata::new()).unwrap();
    assert_eq!(
        before, after,
        "a failed load must leave the model unchanged"
    );
    e.to_string()
}

#[test]
fn mismatched_architectures_are_errors_naming_the_tensor() {
    let net = small_net(1, 2);
    let bytes = checkpoint::model_to_bytes(&net, &meta()).unwrap();
    // Misshapen: 3 classes instead of 2.
    let e = load_err(&bytes, &mut small_net(1, 3));
    assert!(
        e.contains("fc.weight") && e.contains("[3, 6]") && e.contains("[2, 6]"),
        "{e}"
    );
    // Missing: the model has a layer the file lacks.
    let mut bigger = small_net(1, 2);
    bigger
        .push(
            "fc2",
            LinearConfig::new(2, 2)
                .init(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0))
                .unwrap(),
        )
        .unwrap();
    let e = load_err(&bytes, &mut bigger);
    assert!(e.contains("missing tensor \"fc2.weight\""), "{e}");
    // Unexpected: the file has tensors the model lacks.
    let mut smaller = small_net(1, 2);
    let bytes_big = checkpoint::model_to_bytes(&bigger, &meta()).unwrap();
    let e = load_err(&bytes_big, &mut smaller);
    assert!(e.contains("unexpected tensor \"fc2.bias\""), "{e}");
    // Missing dropout counter.
    let mut no_drop = Sequential::new()
        .with(
            "drop",
            DropoutConfig::new(0.5)
                .init(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0))
                .unwrap(),
        )
        .unwrap();
    let empty = checkpoint::model_to_bytes(&Sequential::new(), &Metadata::new()).unwrap();
    let e = load_err(&empty, &mut no_drop);
    assert!(e.contains("rng_streams"), "{e}");
    // An optimizer file is not a model.
    let state = Sgd::new(SgdConfig::default()).unwrap().state();
    let opt_bytes = checkpoint::optimizer_state_to_bytes(&state, &Metadata::new()).unwrap();
    let e = load_err(&opt_bytes, &mut small_net(1, 2));
    assert!(e.contains("optimizer checkpoint"), "{e}");
    let e = checkpoint::optimizer_state_from_bytes(&bytes, Path::new("m.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("model checkpoint"), "{e}");
}

#[test]
fn caller_metadata_cannot_use_reserved_keys() {
    let mut m = meta();
    m.insert("format_version".into(), "99".into());
    let e = checkpoint::model_to_bytes(&small_net(1, 2), &m)
        .unwrap_err()
        .to_string();
    assert!(e.contains("reserved"), "{e}");
}

#[test]
fn read_metadata_and_wrong_format_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    checkpoint::save_model(&path, &small_net(1, 2), &meta()).unwrap();
    let m = checkpoint::read_metadata(&path).unwrap();
    for (k, v) in meta() {
        assert_eq!(m[&k], v);
    }
    assert_eq!(m["fracture_kind"], "model");
    // A file claiming a future format version is refused with a clear message.
    let bytes = std::fs::read(&path).unwrap();
    let (from, to) = (br#""format_version":"1""#, br#""format_version":"7""#);
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    let mut edited = bytes.clone();
    edited[at..at + from.len()].copy_from_slice(to);
    let e = checkpoint::model_from_bytes(&edited, &mut small_net(1, 2), &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("format_version \"7\" is not supported"), "{e}");
    // Missing file and missing directory name the path.
    let e = checkpoint::read_metadata(dir.path().join("nope.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.safetensors"), "{e}");
    let e = checkpoint::save_model(
        dir.path().join("no/such/dir.safetensors"),
        &small_net(1, 2),
        &meta(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no/such"), "{e}");
}

#[test]
fn truncated_files_are_clear_errors() {
    let bytes = checkpoint::model_to_bytes(&small_net(1, 2), &meta()).unwrap();
    let mut net = small_net(1, 2);
    for cut in [0, 3, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        let e = load_err(&bytes[..cut], &mut net);
        assert!(
            e.contains("truncated") || e.contains("corrupt"),
            "cut {cut}: {e}"
        );
    }
}

#[test]
fn absurd_data_offsets_do_not_panic() {
    // A header whose offsets would overflow the crate's own size arithmetic.
    let header = r#"{"w":{"dtype":"F32","shape":[4611686018427387903],"data_offsets":[0,18446744073709551612]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    let e = load_err(&bytes, &mut small_net(1, 2));
    assert!(e.contains("\"w\"") && e.contains("past the end"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut net = small_net(1, 2);
        let _ = checkpoint::model_from_bytes(&bytes, &mut net, Path::new("r"));
        let _ = checkpoint::optimizer_state_from_bytes(&bytes, Path::new("r"));
    }

    #[test]
    fn corrupted_and_truncated_checkpoints_never_panic(
        cut in 0usize..5000,
        flips in proptest::collection::vec((0usize..5000, any::<u8>()), 0..4),
    ) {
        let good = checkpoint::model_to_bytes(&small_net(1, 2), &meta()).unwrap();
        let mut bytes = good.clone();
        for (pos, v) in flips {
            let i = pos % bytes.len();
            bytes[i] = v;
        }
        bytes.truncate(cut.min(bytes.len()));
        let mut net = small_net(1, 2);
        if let Err(e) = checkpoint::model_from_bytes(&bytes, &mut net, Path::new("c")) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

fn resume_check(make: impl Fn() -> Box<dyn Optimizer>) {
    let dir = tempfile::tempdir().unwrap();
    // Straight run of 6 steps.
    let mut straight = small_net(1, 2);
    let mut opt = make();
    train_steps(&mut straight, opt.as_mut(), 0..6);
    // 3 steps, save, load into fresh objects, 3 more steps.
    let mut first = small_net(1, 2);
    let mut opt1 = make();
    train_steps(&mut first, opt1.as_mut(), 0..3);
    let (m, o) = (
        dir.path().join("m.safetensors"),
        dir.path().join("o.safetensors"),
    );
    checkpoint::save_model(&m, &first, &meta()).unwrap();
    checkpoint::save_optimizer_state(&o, &opt1.state(), &meta()).unwrap();
    let mut resumed = small_net(9, 2);
    let mut opt2 = make();
    checkpoint::load_model(&m, &mut resumed).unwrap();
    opt2.load_state(checkpoint::load_optimizer_state(&o).unwrap())
        .unwrap();
    assert_eq!(opt2.state(), opt1.state());
    // Optimizer files are byte-reproducible too.
    let o2 = dir.path().join("o2.safetensors");
    checkpoint::save_optimizer_state(&o2, &opt2.state(), &meta()).unwrap();
    assert_eq!(std::fs::read(&o).unwrap(), std::fs::read(&o2).unwrap());
    train_steps(&mut resumed, opt2.as_mut(), 3..6);
    assert_eq!(
        state_of(&resumed),
        state_of(&straight),
        "resumed training must be bit-identical"
    );
}

#[test]
fn sgd_state_resumes_exactly() {
    resume_check(|| {
        Box::new(
            Sgd::new(SgdConfig {
                momentum: 0.9,
                nesterov: true,
                weight_decay: 1e-3,
                dampening: 0.0,
            })
            .unwrap(),
        )
    });
}

#[test]
fn adamw_state_resumes_exactly() {
    resume_check(|| Box::new(AdamW::new(AdamWConfig::default()).unwrap()));
}

#[test]
fn optimizer_state_for_another_model_is_an_error() {
    let mut net = small_net(1, 2);
    let mut opt = AdamW::new(AdamWConfig::default()).unwrap();
    train_steps(&mut net, &mut opt, 0..1);
    let state = opt.state();
    let mut other = small_net(1, 3);
    let mut opt2 = AdamW::new(AdamWConfig::default()).unwrap();
    opt2.load_state(state.clone()).unwrap();
    let before = state_of(&other);
    let e = opt2.step(&mut other, 0.1).unwrap_err().to_string();
    assert!(e.contains("fc.weight") && e.contains("[2, 6]"), "{e}");
    assert_eq!(state_of(&other), before, "a refused step changes nothing");
    let mut sgd = Sgd::new(SgdConfig::default()).unwrap();
    assert!(sgd
        .load_state(state)
        .unwrap_err()
        .to_string()
        .contains("adamw"));
}

/// A saved state whose slots are missing, mis-sized or unknown is refused with the parameter
/// and slot named, and leaves the optimizer's own state as it was.
#[test]
fn optimizer_state_with_bad_slots_is_an_error() {
    let mut net = small_net(1, 2);
    let mut adam = AdamW::new(AdamWConfig::default()).unwrap();
    train_steps(&mut net, &mut adam, 0..1);
    let good = adam.state();
    let name = good.params.keys().next().unwrap().clone();
    type Slots = BTreeMap<String, Vec<f32>>;
    let with = |f: &dyn Fn(&mut Slots)| {
        let mut s = good.clone();
        f(&mut s.params.get_mut(&name).unwrap().slots);
        s
    };
    let cases: [(OptimizerState, &str); 3] = [
        (
            with(&|s| drop(s.remove("exp_avg_sq"))),
            "lacks slot exp_avg_sq",
        ),
        (
            with(&|s| s.get_mut("exp_avg").unwrap().push(0.0)),
            "slot exp_avg has",
        ),
        (
            with(&|s| drop(s.insert("velocity".into(), vec![]))),
            "unknown AdamW state slot \"velocity\"",
        ),
    ];
    for (state, want) in cases {
        let e = adam.load_state(state).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains(&name), "{e}");
        assert_eq!(adam.state(), good, "a refused state changes nothing");
    }
    // SGD: the momentum buffer is optional, an unknown slot is not.
    let mut sgd = Sgd::new(SgdConfig::default()).unwrap();
    train_steps(&mut net, &mut sgd, 0..1);
    let mut plain = sgd.state();
    assert!(plain.params.values().all(|p| p.slots.is_empty()));
    sgd.load_state(plain.clone()).unwrap();
    plain
        .params
        .get_mut(&name)
        .unwrap()
        .slots
        .insert("exp_avg".into(), vec![]);
    let e = sgd.load_state(plain).unwrap_err().to_string();
    assert!(e.contains("unknown SGD state slot \"exp_avg\""), "{e}");
}

/// Python: `safe_open(path, "np")` reads every tensor with our names, shapes and values, and
/// the metadata. Runs only where `python3 -c "import safetensors, numpy"` works.
#[test]
fn checkpoint_opens_in_python_safetensors() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import safetensors, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: python3 with safetensors and numpy not available");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    let net = small_net(1, 2);
    checkpoint::save_model(&path, &net, &meta()).unwrap();
    let script = r#"
import json, sys
from safetensors import safe_open
out = {}
with safe_open(sys.argv[1], "np") as f:
    for k in f.keys():
        t = f.get_tensor(k)
        out[k] = [str(t.dtype), list(t.shape), float(t.astype("float64").sum())]
    meta = f.metadata()
print(json.dumps({"tensors": out, "meta": meta}))
"#;
    let o = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tensors = v["tensors"].as_object().unwrap();
    let mut ours: Vec<(String, Vec<usize>, f64)> = Vec::new();
    net.visit_params_ref("", &mut |n, p| {
        ours.push((
            n.into(),
            p.torch_shape().to_vec(),
            p.value.as_slice().iter().map(|&x| x as f64).sum(),
        ))
    });
    net.visit_buffers_ref("", &mut |n, b| {
        ours.push((
            n.into(),
            b.torch_shape().to_vec(),
            b.value.as_slice().iter().map(|&x| x as f64).sum(),
        ))
    });
    assert_eq!(tensors.len(), ours.len());
    for (name, shape, sum) in ours {
        let t = &tensors[&name];
        assert_eq!(t[0], "float32", "{name}");
        let got: Vec<usize> = serde_json::from_value(t[1].clone()).unwrap();
        assert_eq!(got, shape, "{name}");
        assert!(
            (t[2].as_f64().unwrap() - sum).abs() <= 1e-9 * sum.abs().max(1.0),
            "{name}"
        );
    }
    assert_eq!(v["meta"]["architecture"], meta()["architecture"].as_str());
    assert_eq!(v["meta"]["format_version"], checkpoint::FORMAT_VERSION);
    eprintln!("python safe_open read {} tensors", tensors.len());
}

//! Helpers shared by this crate's integration tests: reading golden safetensors files (from
//! `../shared`, found by `fracture_test_support::shared_dir`) and tolerance checks that print
//! the worst difference.
#![allow(dead_code)]

use std::collections::HashMap;

use fracture_layers::{CrossEntropyLoss, Layer, Mode};
use fracture_tensor::Tensor4;
use fracture_test_support::shared_dir;

/// A golden file: tensors by name (shape, values) and metadata.
pub struct Golden {
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub meta: HashMap<String, String>,
}

impl Golden {
    /// Loads `golden/<name>.safetensors` from `../shared`, or prints "skipped" and returns `None`
    /// (fails under CI: `fracture_test_support::shared_dir`).
    pub fn load(name: &str) -> Option<Golden> {
        let dir = shared_dir()?;
        Some(Golden::from_path(
            &dir.join("golden").join(format!("{name}.safetensors")),
        ))
    }

    /// Reads a golden safetensors file that must exist (e.g. one committed beside the tests).
    #[allow(dead_code)] // not every test binary reads committed golden files
    pub fn from_path(path: &std::path::Path) -> Golden {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("golden file parses");
        let mut tensors = HashMap::new();
        for (n, v) in st.tensors() {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{n}");
            let data = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.insert(n, (v.shape().to_vec(), data));
        }
        let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = m.metadata().clone().unwrap_or_default();
        Golden { tensors, meta }
    }

    pub fn vec(&self, name: &str) -> &[f32] {
        &self
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("golden lacks {name}"))
            .1
    }

    pub fn shape(&self, name: &str) -> &[usize] {
        &self.tensors[name].0
    }

    /// Tensor `name` as a Tensor4, padding the shape with trailing 1s (`[N, F]` -> `[N, F, 1, 1]`).
    pub fn t4(&self, name: &str) -> Tensor4 {
        let (shape, data) = &self
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("golden lacks {name}"));
        let mut s = [1usize; 4];
        s[..shape.len()].copy_from_slice(shape);
        Tensor4::from_vec(s, data.clone()).unwrap()
    }

    pub fn targets(&self, name: &str) -> Vec<usize> {
        self.vec(name).iter().map(|&t| t as usize).collect()
    }

    pub fn meta_f32(&self, key: &str) -> f32 {
        self.meta[key]
            .parse()
            .unwrap_or_else(|_| panic!("metadata {key}"))
    }
}

/// Asserts `|got - want| <= abs + rel * |want|` elementwise; prints the worst case.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32, abs: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f32, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() / (abs + rel * w.abs());
        assert!(!excess.is_nan(), "{what}[{i}]: got {g}, want {w}");
        if excess > worst.0 {
            worst = (excess, i);
        }
    }
    let i = worst.1;
    eprintln!(
        "{what}: max |diff| / (abs + rel*|want|) = {:.3} at {i} (got {}, want {})",
        worst.0, got[i], want[i]
    );
    assert!(
        worst.0 <= 1.0,
        "{what}[{i}]: got {}, want {} (rel {rel}, abs {abs})",
        got[i],
        want[i]
    );
}

/// Sets parameter `name` of `model` from `values` (panics if absent or wrong size).
pub fn set_param(model: &mut dyn Layer, name: &str, values: &[f32]) {
    let mut found = false;
    model.visit_params("", &mut |n, p| {
        if n == name {
            p.value.as_slice_mut().copy_from_slice(values);
            found = true;
        }
    });
    assert!(found, "model has no parameter {name}");
}

/// A deterministic pseudo-random tensor with entries in `[-1, 1)`.
pub fn rand_tensor(shape: [usize; 4], seed: u64) -> Tensor4 {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor4::from_vec(shape, (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()).unwrap()
}

/// The `tiny_net` golden check on a network built as in `golden.rs` (unfused or fused layers
/// under the same names): every `param.*` / `buffer.*` of the file maps to exactly one of ours
/// and back; with the file's weights, one training-mode forward gives PyTorch's logits and loss,
/// `backward_params_only` its parameter gradients, and the BN running statistics its buffers.
/// Leaves the gradients in `net` and returns the loss gradient of the logits.
pub fn tiny_net_check(g: &Golden, net: &mut dyn Layer) -> Tensor4 {
    tiny_net_check_members(g, net, 1)
}

/// [`tiny_net_check`] for an `Ensemble` of `members` copies of the network (tensors named
/// `{i}.<name>`): each copy takes the file's weights, the mean of equal logits is PyTorch's, each
/// member receives `1 / members` of PyTorch's gradients and holds its BN statistics.
pub fn tiny_net_check_members(g: &Golden, net: &mut dyn Layer, members: usize) -> Tensor4 {
    let own = |name: &str| -> String {
        if members == 1 {
            return name.to_string();
        }
        let (i, rest) = name.split_once('.').expect("member-prefixed name");
        assert!(i.parse::<usize>().unwrap() < members, "{name}");
        rest.to_string()
    };
    let mut ours: Vec<String> = net
        .named_params()
        .into_iter()
        .map(|(n, _)| format!("param.{}", own(&n)))
        .collect();
    ours.extend(
        net.named_buffers()
            .into_iter()
            .map(|(n, _)| format!("buffer.{}", own(&n))),
    );
    assert_eq!(ours.len() % members, 0);
    ours.sort();
    ours.dedup();
    let mut theirs: Vec<String> = g
        .tensors
        .keys()
        .filter(|k| k.starts_with("param.") || k.starts_with("buffer."))
        .cloned()
        .collect();
    theirs.sort();
    assert_eq!(ours, theirs);
    for (name, p) in net.named_params_mut() {
        let key = format!("param.{}", own(&name));
        assert_eq!(p.torch_shape(), g.shape(&key), "{name}");
        p.value.as_slice_mut().copy_from_slice(g.vec(&key));
    }
    let logits = net.forward(&g.t4("x"), Mode::Train).unwrap();
    assert_close(
        "tiny_net logits",
        logits.as_slice(),
        g.vec("logits"),
        1e-3,
        1e-5,
    );
    let (loss, dlogits) = CrossEntropyLoss::new()
        .forward_backward(&logits, &g.targets("targets"))
        .unwrap();
    assert_close("tiny_net loss", &[loss], g.vec("loss"), 1e-3, 1e-5);
    net.zero_grad();
    net.backward_params_only(&dlogits).unwrap();
    for (name, p) in net.named_params() {
        let scaled: Vec<f32> = p
            .grad
            .as_slice()
            .iter()
            .map(|v| v * members as f32)
            .collect();
        assert_close(
            &format!("tiny_net grad.{name} x {members}"),
            &scaled,
            g.vec(&format!("grad.{}", own(&name))),
            1e-3,
            1e-5,
        );
    }
    for (name, b) in net.named_buffers() {
        assert_close(
            &format!("tiny_net buffer.{name}"),
            b.value.as_slice(),
            g.vec(&format!("buffer.{}", own(&name))),
            1e-3,
            1e-5,
        );
    }
    dlogits
}

//! Golden tests: every conv2d, grouped_conv2d, max_pool2d, global_avg_pool and relu file in
//! `../shared/golden` (PyTorch, computed in float64, stored as float32) is reproduced, forward
//! and backward, within 1e-4 relative / 1e-5 absolute, by both the fast and the naive kernels.
//!
//! The files were produced by PyTorch along the lines of
//! ```python
//! x = torch.randn(..., dtype=torch.float64, requires_grad=True)
//! y = F.conv2d(x, w, b, stride=s, padding=p); y.backward(dy)   # dx = x.grad, ...
//! ```
//! with the op's parameters in the safetensors `__metadata__` as JSON strings.
//!
//! Without `../shared` every test prints that it skipped, and fails instead when `CI` is set
//! (`fracture_test_support::shared_dir`).

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::check_close;
use fracture_tensor::{naive, ConvParams, ConvWorkspace, PoolParams, Tensor4};
use fracture_test_support::shared_dir;
use safetensors::{Dtype, SafeTensors};

type TestResult = Result<(), Box<dyn std::error::Error>>;
/// A tensor read from a golden file: its shape and its elements.
type Stored = (Vec<usize>, Vec<f32>);

const REL: f32 = 1e-4;
const ABS: f32 = 1e-5;

/// One golden file: its tensors (as f32 vectors with shapes) and its metadata.
struct Golden {
    name: String,
    tensors: HashMap<String, Stored>,
    meta: HashMap<String, serde_json::Value>,
}

impl Golden {
    fn load(path: &Path) -> Result<Self, Box<dyn std::error::Error>> {
        let bytes = std::fs::read(path)?;
        let (_, header) = SafeTensors::read_metadata(&bytes)?;
        let st = SafeTensors::deserialize(&bytes)?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(format!(
                    "{}: tensor {name} is {:?}, not F32",
                    path.display(),
                    view.dtype()
                )
                .into());
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            tensors.insert(name, (view.shape().to_vec(), data));
        }
        let mut meta = HashMap::new();
        for (k, v) in header.metadata().clone().unwrap_or_default() {
            meta.insert(k, serde_json::from_str(&v)?);
        }
        Ok(Self {
            name: path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            tensors,
            meta,
        })
    }

    fn t4(&self, key: &str) -> Result<Tensor4, Box<dyn std::error::Error>> {
        let (shape, data) = self.get(key)?;
        let shape: [usize; 4] = shape
            .as_slice()
            .try_into()
            .map_err(|_| format!("{}: {key} has shape {shape:?}, expected 4-D", self.name))?;
        Ok(Tensor4::from_vec(shape, data.clone())?)
    }

    fn get(&self, key: &str) -> Result<&Stored, Box<dyn std::error::Error>> {
        self.tensors
            .get(key)
            .ok_or_else(|| format!("{}: missing tensor {key}", self.name).into())
    }

    fn usize_param(&self, key: &str) -> Result<usize, Box<dyn std::error::Error>> {
        self.meta
            .get(key)
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .ok_or_else(|| {
                format!("{}: metadata {key} missing or not an integer", self.name).into()
            })
    }

    fn check(&self, what: &str, got: &[f32], key: &str) -> TestResult {
        let (_, want) = self.get(key)?;
        check_close(
            &format!("{} {what} vs {key}", self.name),
            got,
            want,
            REL,
            ABS,
        )?;
        Ok(())
    }
}

/// The golden files whose names start with `prefix`, or `None` (test skipped; fails under CI)
/// without ../shared.
fn golden_files(prefix: &str) -> Option<Vec<Golden>> {
    let dir = shared_dir()?;
    let mut paths: Vec<_> = std::fs::read_dir(dir.join("golden"))
        .expect("shared/golden is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(".safetensors")
        })
        .collect();
    paths.sort();
    assert!(
        !paths.is_empty(),
        "no {prefix}* golden files in {}",
        dir.display()
    );
    Some(
        paths
            .iter()
            .map(|p| Golden::load(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .collect(),
    )
}

#[test]
fn conv2d_matches_pytorch() -> TestResult {
    let Some(files) = golden_files("conv2d_") else {
        return Ok(());
    };
    for g in &files {
        let (x, w, dy) = (g.t4("x")?, g.t4("w")?, g.t4("dy")?);
        let has_bias = g
            .meta
            .get("bias")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let b = if has_bias {
            Some(g.get("b")?.1.clone())
        } else {
            None
        };
        let (s, p) = (g.usize_param("stride")?, g.usize_param("padding")?);
        assert_eq!(w.shape()[2], g.usize_param("kernel")?, "{}: kernel", g.name);
        let params = ConvParams {
            stride: [s, s],
            padding: [p, p],
            ..ConvParams::default()
        };
        let mut ws = ConvWorkspace::default();

        let y = fracture_tensor::conv2d_forward(&x, &w, b.as_deref(), params, &mut ws)?;
        g.check("fast y", y.as_slice(), "y")?;
        let y = naive::conv2d_forward(&x, &w, b.as_deref(), params)?;
        g.check("naive y", y.as_slice(), "y")?;

        let fast = fracture_tensor::conv2d_backward(&x, &w, &dy, params, true, &mut ws)?;
        let slow = naive::conv2d_backward(&x, &w, &dy, params, true)?;
        for (kind, grads) in [("fast", &fast), ("naive", &slow)] {
            let dx = grads.dx.as_ref().ok_or("dx requested but missing")?;
            g.check(&format!("{kind} dx"), dx.as_slice(), "dx")?;
            g.check(&format!("{kind} dw"), grads.dw.as_slice(), "dw")?;
            if has_bias {
                g.check(&format!("{kind} db"), &grads.db, "db")?;
            }
        }
        println!("{}: ok", g.name);
    }
    Ok(())
}

/// Grouped and depthwise convolutions (`grouped_conv2d_*`): stride, padding, groups and bias
/// come from the metadata, every shape from the tensors.
#[test]
fn grouped_conv2d_matches_pytorch() -> TestResult {
    let Some(files) = golden_files("grouped_conv2d_") else {
        return Ok(());
    };
    for g in &files {
        let (x, w, dy) = (g.t4("x")?, g.t4("w")?, g.t4("dy")?);
        let has_bias = g
            .meta
            .get("bias")
            .and_then(|v| v.as_bool())
            .ok_or_else(|| format!("{}: metadata bias missing or not a bool", g.name))?;
        let b = if has_bias {
            Some(g.get("b")?.1.clone())
        } else {
            None
        };
        let (s, p) = (g.usize_param("stride")?, g.usize_param("padding")?);
        let groups = g.usize_param("groups")?;
        assert_eq!(w.shape()[2], g.usize_param("kernel")?, "{}: kernel", g.name);
        let params = ConvParams {
            stride: [s, s],
            padding: [p, p],
            groups,
        };
        let mut ws = ConvWorkspace::default();

        let y = fracture_tensor::conv2d_forward(&x, &w, b.as_deref(), params, &mut ws)?;
        g.check("fast y", y.as_slice(), "y")?;
        let mut y_into = Tensor4::zeros([1, 1, 1, 1]);
        fracture_tensor::conv2d_forward_into(&x, &w, b.as_deref(), params, &mut ws, &mut y_into)?;
        assert_eq!(y_into, y, "{}: forward_into differs from forward", g.name);
        let y = naive::conv2d_forward(&x, &w, b.as_deref(), params)?;
        g.check("naive y", y.as_slice(), "y")?;

        let fast = fracture_tensor::conv2d_backward(&x, &w, &dy, params, true, &mut ws)?;
        let slow = naive::conv2d_backward(&x, &w, &dy, params, true)?;
        for (kind, grads) in [("fast", &fast), ("naive", &slow)] {
            let dx = grads.dx.as_ref().ok_or("dx requested but missing")?;
            g.check(&format!("{kind} dx"), dx.as_slice(), "dx")?;
            g.check(&format!("{kind} dw"), grads.dw.as_slice(), "dw")?;
            if has_bias {
                g.check(&format!("{kind} db"), &grads.db, "db")?;
            }
        }
        // The parameter-only backward and the `_into` variant give the same bits.
        let no_dx = fracture_tensor::conv2d_backward(&x, &w, &dy, params, false, &mut ws)?;
        assert_eq!((&no_dx.dw, &no_dx.db), (&fast.dw, &fast.db), "{}", g.name);
        let mut into = fracture_tensor::Conv2dGrads {
            dx: None,
            dw: Tensor4::zeros([1, 1, 1, 1]),
            db: vec![],
        };
        fracture_tensor::conv2d_backward_into(&x, &w, &dy, params, true, &mut ws, &mut into)?;
        assert_eq!(
            into, fast,
            "{}: backward_into differs from backward",
            g.name
        );
        println!("{}: ok", g.name);
    }
    Ok(())
}

#[test]
fn max_pool2d_matches_pytorch() -> TestResult {
    let Some(files) = golden_files("max_pool2d_") else {
        return Ok(());
    };
    for g in &files {
        let (x, dy) = (g.t4("x")?, g.t4("dy")?);
        let (k, s) = (g.usize_param("kernel")?, g.usize_param("stride")?);
        let p = PoolParams::square(k, s, g.usize_param("padding")?);
        let (y, arg) = fracture_tensor::max_pool2d_forward(&x, p)?;
        g.check("fast y", y.as_slice(), "y")?;
        let dx = fracture_tensor::max_pool2d_backward(&dy, &arg, x.shape())?;
        g.check("fast dx", dx.as_slice(), "dx")?;
        let (y, arg) = naive::max_pool2d_forward(&x, p)?;
        g.check("naive y", y.as_slice(), "y")?;
        let dx = naive::max_pool2d_backward(&dy, &arg, x.shape())?;
        g.check("naive dx", dx.as_slice(), "dx")?;
        println!("{}: ok", g.name);
    }
    Ok(())
}

#[test]
fn global_avg_pool_matches_pytorch() -> TestResult {
    let Some(files) = golden_files("global_avg_pool") else {
        return Ok(());
    };
    for g in &files {
        let x = g.t4("x")?;
        let [n, c, _, _] = x.shape();
        // Golden y and dy are [N, C]; ours are [N, C, 1, 1] with the same element order.
        let dy = Tensor4::from_vec([n, c, 1, 1], g.get("dy")?.1.clone())?;
        for (kind, y, dx) in [
            (
                "fast",
                fracture_tensor::global_avg_pool_forward(&x),
                fracture_tensor::global_avg_pool_backward(&dy, x.shape())?,
            ),
            (
                "naive",
                naive::global_avg_pool_forward(&x),
                naive::global_avg_pool_backward(&dy, x.shape())?,
            ),
        ] {
            assert_eq!(y.shape(), [n, c, 1, 1]);
            g.check(&format!("{kind} y"), y.as_slice(), "y")?;
            g.check(&format!("{kind} dx"), dx.as_slice(), "dx")?;
        }
        println!("{}: ok", g.name);
    }
    Ok(())
}

#[test]
fn relu_matches_pytorch() -> TestResult {
    let Some(files) = golden_files("relu") else {
        return Ok(());
    };
    for g in &files {
        let (x, dy) = (g.t4("x")?, g.t4("dy")?);
        let y = fracture_tensor::relu_forward(&x);
        g.check("fast y", y.as_slice(), "y")?;
        let mut y2 = x.clone();
        fracture_tensor::relu_forward_inplace(&mut y2);
        g.check("fast in-place y", y2.as_slice(), "y")?;
        g.check(
            "fast dx",
            fracture_tensor::relu_backward(&y, &dy)?.as_slice(),
            "dx",
        )?;
        let y = naive::relu_forward(&x);
        g.check("naive y", y.as_slice(), "y")?;
        g.check("naive dx", naive::relu_backward(&y, &dy)?.as_slice(), "dx")?;
        println!("{}: ok", g.name);
    }
    Ok(())
}

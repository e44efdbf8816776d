//! `fracture export`: a model file as an ONNX graph for ONNX Runtime, Triton and the like
//! (see `fracture_nn::onnx` for what the graph holds and `docs/DEPLOY.md` for serving it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use fracture_nn::Classifier;

/// Arguments of `fracture export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Model file (.safetensors) to export.
    #[arg(long)]
    pub model: PathBuf,
    /// The ONNX file to write (a regular file, replaced atomically if it exists; never the
    /// model file itself).
    #[arg(long, value_name = "FILE")]
    pub onnx: PathBuf,
}

/// Loads the model, writes the graph, and says what was written.
pub fn export(a: ExportArgs) -> Result<ExitCode> {
    let out = crate::output::OutputFile::check(&a.onnx, "--onnx", &[&a.model])?;
    if is_pytorch_checkpoint(&a.model) {
        bail!(
            "--model {}: a PyTorch checkpoint, not a fracture model file; turn it into one first with `fracture import --from {} --out model.safetensors`",
            a.model.display(),
            a.model.display()
        );
    }
    let clf = Classifier::load(&a.model)?;
    let bytes = fracture_nn::onnx::write(&clf, &out.path)
        .with_context(|| format!("cannot export {} to ONNX", a.model.display()))?;
    let m = &clf.meta;
    let s = m.model.image_size;
    println!(
        "wrote {} ({:.1} MB, ONNX opset {})",
        a.onnx.display(),
        bytes as f64 / 1e6,
        fracture_nn::onnx::OPSET
    );
    println!(
        "input   image: float32 [N, 1, {s}, {s}], {}",
        m.input_formula()
    );
    println!(
        "outputs p_fractured: float32 [N]{}; logits: float32 [N, {}]",
        if m.tta == fracture_nn::Tta::HFlip {
            " (flip-averaged inside the graph)"
        } else {
            ""
        },
        m.model.num_classes
    );
    println!(
        "score   python3 scripts/onnx_predict.py {} IMAGE...",
        a.onnx.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `true` when `path` starts as a `torch.save` file does (a zip archive, or a binary pickle)
/// and not as a safetensors file (an 8-byte header length, then `{`): `fracture import` turns
/// such a file into a model file.
fn is_pytorch_checkpoint(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 9];
    let n = std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .and_then(|_| std::fs::File::open(path).ok())
        .and_then(|mut f| f.read(&mut head).ok())
        .unwrap_or(0);
    if n == 9 && head[8] == b'{' {
        return false;
    }
    let zip = n >= 4 && (head[..4] == *b"PK\x03\x04" || head[..4] == *b"PK\x05\x06");
    let pickle = n >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]);
    zip || pickle
}

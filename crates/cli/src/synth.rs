//! `fracture synth`: a synthetic phantom dataset written as image files, in the layout that
//! `train --data` reads.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use fracture_nn::data::phantom::PhantomConfig;

#[derive(Args, Debug)]
// Negative numbers reach validation, which says what is wrong with them.
#[command(allow_negative_numbers = true)]
pub struct SynthArgs {
    /// Output root.
    #[arg(long)]
    out: PathBuf,
    /// Images per class in the training split (validation and test get a fifth each).
    #[arg(long, default_value_t = 500)]
    per_class: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: SynthArgs) -> Result<ExitCode> {
    if a.per_class == 0 {
        bail!("--per-class must be at least 1");
    }
    let cfg = PhantomConfig {
        size: a.size,
        seed: a.seed,
        ..PhantomConfig::with_train(2 * a.per_class)
    };
    cfg.write_folder(&a.out)?;
    println!(
        "wrote {} phantoms ({} train, {} val, {} test; half fractured) at {} px to {}",
        cfg.train + cfg.val + cfg.test,
        cfg.train,
        cfg.val,
        cfg.test,
        cfg.size,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

//! Checks and settings shared by several commands, made before any work: thread count,
//! threshold, image size, writable outputs; and the plural of "image".

use std::path::Path;

use anyhow::{bail, Context, Result};

/// `--threshold` must be a probability; checked before any work.
pub fn check_threshold(threshold: Option<f64>) -> Result<()> {
    if let Some(t) = threshold {
        if !(0.0..=1.0).contains(&t) {
            bail!("--threshold {t}: must be a probability in [0, 1] (P(fractured) at or above it is labelled positive)");
        }
    }
    Ok(())
}

/// "1 image", "2 images".
pub fn images(n: usize) -> String {
    if n == 1 {
        "1 image".into()
    } else {
        format!("{n} images")
    }
}

pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot set the number of threads")?;
    }
    Ok(())
}

/// Creates `dir` if needed and shows that a file can be written in it, before any work.
pub fn check_writable_dir(dir: &Path, what: &str) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the {what} {}", dir.display()))?;
    let probe = dir.join(format!(".fracture-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("cannot write into the {what} {}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Creates (or truncates) `file` to show it can be written, before any work.
pub fn check_writable_file(file: &Path, flag: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(file)
        .with_context(|| format!("{flag} {}: cannot write this file", file.display()))?;
    Ok(())
}

/// `--image-size` within what a model file may hold, checked before any work: a larger model
/// would train and then be refused by every command that opens it.
pub fn check_image_size(size: Option<usize>) -> Result<()> {
    let max = fracture_nn::ClassifierMeta::MAX_MODEL_IMAGE_SIZE;
    match size {
        Some(s) if s > max => bail!(
            "--image-size {s}: at most {max} px (the largest input a model file may have), e.g. 224 or 384"
        ),
        _ => Ok(()),
    }
}

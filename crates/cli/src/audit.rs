//! `fracture audit`: exact and near copies within and across the splits of a dataset, and the
//! quick exact-copy warning `fracture train` prints before it starts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use fracture_nn::data::audit::{shared_images, AuditConfig, AuditReport, Scan};
use fracture_nn::data::DatasetSplit;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Arguments of `fracture audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Dataset root holding train/, val/ and/or test/, each with class folders (any names).
    #[arg(long)]
    pub data: PathBuf,
    /// Print the whole report as JSON on stdout (counts per ordered pair of splits, groups,
    /// label conflicts, unreadable files, verdict).
    #[arg(long)]
    pub json: bool,
    /// Near copies: largest pHash distance in bits (of 63) under the best flip/rotation.
    #[arg(long, default_value_t = AuditConfig::default().max_hamming)]
    pub max_hamming: u32,
    /// Near copies: smallest correlation of the 32x32 thumbnails that confirms a candidate.
    #[arg(long, default_value_t = AuditConfig::default().min_correlation, allow_negative_numbers = true)]
    pub min_correlation: f32,
    /// Exit with status 1 when a file has a copy in another split or copies disagree on the label.
    #[arg(long)]
    pub fail_on_leak: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The audit's thresholds from the flags, checked.
pub fn config(max_hamming: u32, min_correlation: f32) -> Result<AuditConfig> {
    let cfg = AuditConfig {
        max_hamming,
        min_correlation,
        ..AuditConfig::default()
    };
    cfg.validate()
        .context("--max-hamming / --min-correlation")?;
    Ok(cfg)
}

/// A progress bar on stderr over `len` files (hidden when `quiet`).
pub fn file_bar(len: usize, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} files ({per_sec}, {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// Scans `files` with a progress bar.
pub fn scan_with_bar(
    root: &Path,
    files: Vec<fracture_nn::data::audit::AuditFile>,
    cfg: &AuditConfig,
    quiet: bool,
) -> Result<Scan> {
    let bar = file_bar(files.len(), "decoding", quiet);
    let started = std::time::Instant::now();
    let scan = Scan::run(root, files, cfg, &|| bar.inc(1))?;
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "decoded and compared {} files in {:.1} s",
            scan.files.len() + scan.unreadable.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(scan)
}

/// `fracture audit`.
pub fn run(a: AuditArgs) -> Result<ExitCode> {
    crate::set_threads(a.threads)?;
    let cfg = config(a.max_hamming, a.min_correlation)?;
    check_folder(&a.data, "--data")?;
    // The library's error names the folder.
    let files = fracture_nn::data::audit::list_dataset(&a.data).context("--data")?;
    let scan = scan_with_bar(&a.data, files, &cfg, a.quiet)?;
    let report = AuditReport::new(&scan);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(if a.fail_on_leak && !report.clean {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `dir` (given as `flag`) exists and is a folder: a file or a missing path is one clear error.
pub fn check_folder(dir: &std::path::Path, flag: &str) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => anyhow::bail!(
            "{flag} {} is a file, not a folder: give the folder that holds the images",
            dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("{flag} {}: no such folder", dir.display())
        }
        Err(e) => anyhow::bail!("{flag} {}: {e}", dir.display()),
    }
}

/// Warns on stderr when `val` or `test` hold images identical to training images (after
/// decoding and resizing: the bytes the loader already holds, so it costs a hash per image).
pub fn warn_shared_images(train: &DatasetSplit, val: &DatasetSplit, test: Option<&DatasetSplit>) {
    for other in std::iter::once(val).chain(test) {
        let shared = shared_images(train, other);
        if let Some(&(j, i)) = shared.first() {
            eprintln!(
                "warning: {} of {} {} images are exact copies of train images (e.g. {} = {}); \
                 {} scores will be optimistic. `fracture audit --data ROOT` also finds near \
                 copies; `fracture split` makes a grouped split",
                shared.len(),
                other.len(),
                other.split(),
                crate::escape_path(&other.paths()[j]),
                crate::escape_path(&train.paths()[i]),
                other.split()
            );
        }
    }
}

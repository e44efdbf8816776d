//! `fracture split`: a folder of class folders split into train/val/test by copy group.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use fracture_nn::data::audit::{
    list_class_folder, plan_split, write_split, AuditConfig, LinkMode, SplitFractions,
};
use fracture_nn::data::Split;

/// Arguments of `fracture split`.
#[derive(Args, Debug)]
pub struct SplitArgs {
    /// A folder of class folders (`<from>/<class>/<images>`) to split.
    #[arg(long = "from", value_name = "DIR")]
    pub from: PathBuf,
    /// Output root: `<out>/{train,val,test}/<class>/` and `<out>/manifest.csv`.
    #[arg(long)]
    pub out: PathBuf,
    /// Fraction of each class for val.
    #[arg(long, default_value_t = 0.15, allow_negative_numbers = true)]
    pub val: f64,
    /// Fraction of each class for test.
    #[arg(long, default_value_t = 0.15, allow_negative_numbers = true)]
    pub test: f64,
    /// Seed of the assignment (the same seed gives the same split).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Copy the files instead of linking to them.
    #[arg(long)]
    pub copy: bool,
    /// Replace a previous split in --out (only train/, val/, test/ and manifest.csv are removed).
    #[arg(long)]
    pub overwrite: bool,
    /// Near copies: largest pHash distance in bits (of 63) under the best flip/rotation.
    #[arg(long, default_value_t = AuditConfig::default().max_hamming)]
    pub max_hamming: u32,
    /// Near copies: smallest correlation of the 32x32 thumbnails that confirms a candidate.
    #[arg(long, default_value_t = AuditConfig::default().min_correlation, allow_negative_numbers = true)]
    pub min_correlation: f32,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `fracture split`.
pub fn run(a: SplitArgs) -> Result<ExitCode> {
    crate::set_threads(a.threads)?;
    let fractions = SplitFractions {
        val: a.val,
        test: a.test,
    };
    fractions.validate().context("--val / --test")?;
    let cfg = crate::audit::config(a.max_hamming, a.min_correlation)?;
    crate::audit::check_folder(&a.from, "--from")?;
    check_apart(&a.from, &a.out)?;
    // The library's error names the folder.
    let files = list_class_folder(&a.from, "all").context("--from")?;
    let scan = crate::audit::scan_with_bar(&a.from, files, &cfg, a.quiet)?;
    let plan = plan_split(&scan, fractions, a.seed)?;
    let mode = if a.copy {
        LinkMode::Copy
    } else {
        LinkMode::Symlink
    };
    let manifest = write_split(&scan, &plan, &a.out, mode, a.overwrite)
        .with_context(|| format!("--out {}", a.out.display()))?;
    let copies = plan.rows.len() - plan.groups;
    println!(
        "{} files in {} copy groups ({} files are copies of another); {} unreadable",
        plan.rows.len(),
        plan.groups,
        copies,
        scan.unreadable.len()
    );
    let mut classes: Vec<&str> = scan.files.iter().map(|f| f.file.class.as_str()).collect();
    classes.sort();
    classes.dedup();
    for split in Split::ALL {
        let per_class: Vec<String> = classes
            .iter()
            .map(|c| {
                let n = plan
                    .rows
                    .iter()
                    .filter(|r| r.split == Some(split) && scan.files[r.file].file.class == *c)
                    .count();
                format!("{c} {n}")
            })
            .collect();
        println!(
            "  {:<5} {:>6} files ({})",
            split.dir_name(),
            plan.count(split),
            per_class.join(", ")
        );
    }
    if plan.conflicting_groups > 0 {
        println!(
            "left out {} files in {} groups whose copies carry different labels (split `excluded` in the manifest)",
            plan.excluded(),
            plan.conflicting_groups
        );
    }
    for u in &scan.unreadable {
        eprintln!("unreadable: {u}");
    }
    println!("wrote {} and {}", a.out.display(), manifest.display());
    Ok(ExitCode::SUCCESS)
}

/// `--out` must not lie inside `--from` (the split would be written into the folder being
/// read, and its links and manifest read back as images of a class), nor `--from` inside
/// `--out` (`--overwrite` removes `--out`'s split folders). Compared as canonical paths; an
/// `--out` that does not exist yet is resolved through its nearest existing ancestor.
fn check_apart(from: &Path, out: &Path) -> Result<()> {
    let from_c = std::fs::canonicalize(from)
        .with_context(|| format!("--from {}: cannot resolve the path", from.display()))?;
    let out_c = resolve(out);
    if out_c.starts_with(&from_c) {
        bail!(
            "--out {} is inside --from {}: the split would be written into the folder it reads; choose an --out outside it",
            out.display(),
            from.display()
        );
    }
    if from_c.starts_with(&out_c) {
        bail!(
            "--from {} is inside --out {}: writing the split there could change the images being split; choose an --out outside it",
            from.display(),
            out.display()
        );
    }
    Ok(())
}

/// `p` made absolute with its existing part canonicalized (symbolic links resolved).
fn resolve(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut rest = Vec::new();
    let mut base = abs.as_path();
    loop {
        if let Ok(c) = std::fs::canonicalize(base) {
            let mut r = c;
            for part in rest.iter().rev() {
                r.push(part);
            }
            return r;
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            _ => return abs,
        }
    }
}

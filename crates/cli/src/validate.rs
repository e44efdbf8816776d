//! `fracture validate`: a local validation on a hospital's own labelled folder, written as
//! `report.json` and one self-contained `index.html`; with `--write-model`, a copy of the model
//! whose threshold reaches the target sensitivity on that data, its provenance recording how.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use fracture_nn::data::classes::align_classes;
use fracture_nn::data::{DatasetSplit, LoadOptions, Split};
use fracture_nn::validation::{LocalRecord, LocalValidation};
use fracture_nn::validation_report::{render_html, ReportContext};
use fracture_nn::{evaluate_split, Classifier};

use crate::choices::{BadFiles, SplitChoice};

#[derive(Args, Debug)]
// Negative numbers reach validation, which says what is wrong with them.
#[command(allow_negative_numbers = true)]
pub struct ValidateArgs {
    /// The model file to validate.
    #[arg(long)]
    pub model: PathBuf,
    /// The labelled folder: `<data>/<split>/{fractured,not_fractured}/...`
    #[arg(long)]
    pub data: PathBuf,
    /// The split folder to validate on.
    #[arg(long, value_enum, default_value_t = SplitChoice::Test)]
    pub split: SplitChoice,
    /// The sensitivity the local threshold must reach on this data, in (0, 1).
    #[arg(long, default_value_t = 0.90, value_name = "S")]
    pub target_sensitivity: f64,
    /// A CSV of per-image metadata (`path` relative to --data, and the --by column).
    #[arg(long, value_name = "CSV", requires = "by")]
    pub meta: Option<PathBuf>,
    /// The --meta column to report subgroups by.
    #[arg(long, value_name = "COLUMN", requires = "meta")]
    pub by: Option<String>,
    /// The folder for report.json and index.html (created; existing files are replaced).
    #[arg(long, value_name = "DIR")]
    pub report: PathBuf,
    /// Also write a copy of the model with the local threshold to this file.
    #[arg(long, value_name = "FILE")]
    pub write_model: Option<PathBuf>,
    /// What to do with an image that cannot be read.
    #[arg(long, value_enum, default_value_t = BadFiles::Skip, value_name = "POLICY")]
    pub bad_files: BadFiles,
    /// Bootstrap resamples of the intervals.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(a: ValidateArgs) -> Result<ExitCode> {
    crate::set_threads(a.threads)?;
    // Every check before any work: a bad flag must not cost a pass over the images.
    if !(a.target_sensitivity > 0.0 && a.target_sensitivity < 1.0) {
        bail!(
            "--target-sensitivity must lie strictly between 0 and 1, got {}",
            a.target_sensitivity
        );
    }
    if a.resamples < 100 {
        bail!("--resamples must be at least 100, got {}", a.resamples);
    }
    if let Some(out) = &a.write_model {
        if out == &a.model || same_file(out, &a.model) {
            bail!(
                "--write-model {} would overwrite the model being validated; name another file",
                out.display()
            );
        }
    }
    let mut clf = Classifier::load(&a.model)
        .with_context(|| format!("cannot read the model file {}", a.model.display()))?;
    let split = Split::from(a.split);
    let split_dir = a.data.join(split.dir_name());
    let options = LoadOptions {
        preprocess: clf.meta.preprocess,
        policy: a.bad_files.policy(false, false),
    };
    let (data, summary): (DatasetSplit, _) = DatasetSplit::load(&split_dir, split, &options)?;
    for f in &summary.skipped {
        eprintln!("warning: skipped {f}");
    }
    let data = align_classes(data, &clf.meta.class_names, &split_dir)?;
    let counts = data.class_counts();
    if counts.contains(&0) {
        bail!(
            "{} needs images of both classes ({}); found {:?}",
            split_dir.display(),
            clf.meta.class_names.join(" and "),
            counts
        );
    }
    let groups = match (&a.meta, &a.by) {
        (Some(csv), Some(col)) => Some(
            fracture_nn::subgroups::MetaColumn::groups_of(csv, col, data.paths(), &a.data)
                .with_context(|| format!("--meta {}", csv.display()))?,
        ),
        _ => None,
    };
    let fingerprint = fingerprint(&data, &a.data);
    let n_images = data.len();
    eprintln!(
        "validating {} on {} ({n_images} images) ...",
        a.model.display(),
        split_dir.display()
    );
    let ev = evaluate_split(&mut clf.net, data, clf.meta.normalization, 32, clf.meta.tta)?;
    let labels = ev.positives();
    let typical: Option<Vec<_>> = match (&clf.meta.model.typicality, &ev.typicality) {
        (Some(cfg), Some(t)) => Some(t.iter().map(|&s| cfg.judge(s)).collect()),
        _ => None,
    };
    let v = LocalValidation::new(
        &labels,
        &ev.scores,
        typical.as_deref(),
        groups
            .as_ref()
            .map(|g| (a.by.as_deref().unwrap_or(""), g.as_slice())),
        clf.meta.threshold,
        a.target_sensitivity,
        a.resamples,
        0,
    )?;
    let date = now_unix();
    let ctx = ReportContext {
        model: a.model.display().to_string(),
        model_description: clf.meta.model.describe(),
        data: format!(
            "{} ({} split): {fingerprint}",
            a.data.display(),
            split.dir_name()
        ),
        date: format!("{} (Unix time {date})", utc_date(date)),
    };
    let html = render_html(&v, &ctx)?;
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "model": ctx.model,
        "data": ctx.data,
        "date_unix": date,
        "validation": v,
    }))?;
    // Both files are complete before either replaces anything.
    std::fs::create_dir_all(&a.report)
        .with_context(|| format!("cannot create the report folder {}", a.report.display()))?;
    write_atomic(&a.report.join("report.json"), json.as_bytes())?;
    write_atomic(&a.report.join("index.html"), html.as_bytes())?;
    let f = &v.at_local_threshold;
    println!(
        "{n_images} images ({} fractured): ROC-AUC {:.3} ({:.3}-{:.3})",
        v.positives, v.auc, v.auc_ci[0], v.auc_ci[1]
    );
    let m = &v.at_model_threshold;
    println!(
        "model's threshold {:.4}: sensitivity {:.3}, specificity {:.3}",
        m.threshold, m.sensitivity, m.specificity
    );
    println!(
        "local threshold {:.4} (target sensitivity {}): sensitivity {:.3}, specificity {:.3}",
        f.threshold, a.target_sensitivity, f.sensitivity, f.specificity
    );
    match v.typical_share {
        Some(s) => println!("typical of the training radiographs: {:.1} %", 100.0 * s),
        None => println!("typicality: the model has no reference (cannot judge)"),
    }
    println!("report: {}", a.report.join("index.html").display());
    if let Some(out) = &a.write_model {
        if !f.threshold.is_finite() {
            bail!("no finite threshold reaches the target on this data; no model written");
        }
        let mut local = Classifier::load(&a.model)?;
        local.meta.threshold = f.threshold;
        local.meta.threshold_rule = format!(
            "local validation: sensitivity >= {} on {fingerprint} ({n_images} images)",
            a.target_sensitivity
        );
        local.meta.provenance.local_validation = Some(LocalRecord {
            data: fingerprint.clone(),
            n: n_images,
            target_sensitivity: a.target_sensitivity,
            threshold: f.threshold,
            date_unix: date,
        });
        local.save(out)?;
        println!("model with the local threshold: {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The folder's name and an FNV-1a hash of its relative paths and labels (as the trainer's
/// provenance names data), never this machine's absolute path.
fn fingerprint(data: &DatasetSplit, root: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (path, label) in data.paths().iter().zip(data.labels()) {
        let rel = path.strip_prefix(root).unwrap_or(path);
        for &b in rel
            .to_string_lossy()
            .as_bytes()
            .iter()
            .chain(&[0, *label as u8, 0])
        {
            hash ^= b as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let name = root
        .file_name()
        .map_or_else(|| root.to_string_lossy(), |n| n.to_string_lossy());
    format!("{name} ({} files, list fnv1a {hash:#018x})", data.len())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time (civil-from-days, Howard Hinnant's algorithm).
fn utc_date(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::utc_date(1_796_678_119), "2026-12-07 21:15 UTC");
    }
}

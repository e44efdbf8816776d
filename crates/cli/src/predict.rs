//! `fracture predict`: P(fractured) for image files and folders, streamed in batches.
//!
//! The folder walk ([`crate::walk::Walk`]) feeds
//! [`fracture_nn::batch_predict::predict_stream`], which decodes the next batches in parallel
//! while the network classifies the current one; this file only parses the flags and prints.
//! Results come out in the walk's order (sorted, depth first), on stdout (text or `--json`)
//! or, with `--out FILE`, appended to a results file
//! ([`fracture_nn::results_log::ResultsLog`]) batch by batch, which `--resume` continues
//! after a crash. A progress bar (count, rate, ETA) and a summary go to stderr.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::choices::BadFiles;
use fracture_nn::batch_predict::{predict_stream, Input, Scored, Scoring, StreamConfig};
use fracture_nn::overlay::{save_overlay, OverlayConfig, Probability};
use fracture_nn::prediction_record::PredictionRecord;
use fracture_nn::results_log::{Existing, RecordedPaths, ResultsLog, Tally};
use fracture_nn::{Classifier, GradCam};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::walk::Walk;

#[derive(Args, Debug)]
// Negative numbers reach validation, which says what is wrong with them.
#[command(allow_negative_numbers = true)]
pub struct PredictArgs {
    /// Model file (model.safetensors). Default: the committed FracAtlas model,
    /// `models/fracatlas.safetensors` (looked up in the current folder, then in the source tree
    /// this binary was built from).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Images, or folders searched recursively for image files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Threshold on P(fractured) (default: the model's operating threshold).
    #[arg(long)]
    threshold: Option<f64>,
    /// One JSON object per line: {"path", "p_fractured", "label"} or {"path", "error"}; with
    /// --heatmap also "heatmap" (the PNG written) and "peak" ([x, y] or null).
    #[arg(long)]
    json: bool,
    /// Append the JSON lines (as --json prints them) to FILE, one per image as each batch
    /// finishes, instead of printing them; for folders of any size (see --resume).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Continue the --out file of a killed or finished run: the files it already lists
    /// (scored or failed) are skipped, a torn last line is removed and redone.
    #[arg(long)]
    resume: bool,
    /// With --resume: remove the error lines from the --out file and try those files again.
    #[arg(long)]
    retry_failed: bool,
    /// Replace the --out file if it holds results (without it, or --resume, it is refused).
    #[arg(long)]
    overwrite: bool,
    /// Images per forward pass; the next two batches are decoded meanwhile. Memory grows with
    /// it (EfficientNet-Lite0 at 224 px: about 70 MB per image of the batch).
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// What to do with an image that cannot be read: skip (an error line for it, the others
    /// still classified, exit status 1 at the end) or fail (stop at the first; with --out, the
    /// results before it are kept).
    #[arg(long, value_enum, default_value_t = BadFiles::Skip, value_name = "POLICY")]
    bad_files: BadFiles,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Write a Grad-CAM overlay PNG per image into DIR (named after the image:
    /// `<stem>.gradcam.png`): the radiograph as the model sees it, the same with the heatmap of
    /// the fractured log-odds blended in and its peak marked, and a bar showing P(fractured)
    /// against the threshold. The peak is printed as [x, y] pixels of the model's input.
    #[arg(long, value_name = "DIR")]
    heatmap: Option<PathBuf>,
}

/// Where each image's result goes.
enum Sink {
    Stdout { json: bool },
    File(ResultsLog),
}

/// Counts of this run.
#[derive(Default)]
struct Counts {
    scored: usize,
    failed: usize,
    positive: usize,
    /// Scored images whose overlay could not be written.
    overlay_failed: usize,
}

pub fn run(mut a: PredictArgs) -> Result<ExitCode> {
    crate::set_threads(a.threads)?;
    crate::check_threshold(a.threshold)?;
    check_flags(&a)?;
    let model = match a.model.take() {
        Some(m) => m,
        None => default_model()?,
    };
    let mut clf = Classifier::load(&model)?;
    let untrained = untrained_warning(&clf.meta);
    if let Some(w) = &untrained {
        eprintln!("warning: {}: {w}", model.display());
    }
    let threshold = a.threshold.unwrap_or(clf.meta.threshold);
    let positive_name = clf.meta.class_names[clf.meta.positive_class].clone();
    // The overlay folder is made (and shown writable) before any work, and is not searched:
    // a second run must not classify the first run's overlays.
    if let Some(dir) = &a.heatmap {
        crate::check_writable_dir(dir, "heatmap folder")?;
    }
    let mut walk = Walk::new(a.paths.clone(), a.heatmap.as_deref(), true).peekable();
    if walk.peek().is_none() {
        bail!("no image files found in the given folder(s)");
    }
    // Opened (and locked, or refused) before any work.
    let mut sink = match &a.out {
        None => Sink::Stdout { json: a.json },
        Some(out) => {
            let existing = if a.resume {
                Existing::Resume {
                    retry_failed: a.retry_failed,
                }
            } else if a.overwrite {
                Existing::Overwrite
            } else {
                Existing::Refuse
            };
            let log = ResultsLog::open(out, existing, &positive_name).context("--out")?;
            if let Some(n) = log.torn_bytes() {
                eprintln!(
                    "warning: {}: removed a torn last line ({n} bytes, left by a killed run); its image is scored again",
                    out.display()
                );
            }
            if log.retried() > 0 {
                eprintln!(
                    "{}: removed {} error line(s); those files are tried again",
                    out.display(),
                    log.retried()
                );
            }
            Sink::File(log)
        }
    };
    let recorded = match &sink {
        Sink::File(log) => Some(log.recorded_paths()),
        Sink::Stdout { .. } => None,
    };
    let skipped = Arc::new(Skipped::default());
    let bar = progress_bar(a.quiet);
    count_in_background(&a, recorded.clone(), &bar);
    let inputs = unrecorded(walk, recorded, Arc::clone(&skipped));
    let mut cam = match &a.heatmap {
        Some(dir) => Some(Overlays {
            cam: GradCam::new(&clf)?,
            dir: dir.clone(),
            used: HashSet::new(),
            avoid_existing: a.resume,
            threshold,
            norm: clf.meta.normalization,
        }),
        None => None,
    };
    let config = StreamConfig {
        batch_size: a.batch_size,
        keep_pixels: a.heatmap.is_some(),
        threshold: Some(threshold),
        ..StreamConfig::default()
    };
    let start = Instant::now();
    let mut counts = Counts::default();
    for batch in predict_stream(&mut clf, inputs, &config)? {
        let batch = batch?;
        let n = batch.len() as u64;
        let stop_on_error = a.bad_files == BadFiles::Fail;
        let (lines, stop) = batch_lines(
            batch,
            &mut cam,
            &sink,
            &mut counts,
            &bar,
            stop_on_error,
            untrained.as_deref(),
        );
        if let Sink::File(log) = &mut sink {
            log.append(&lines)?;
        }
        if let Some(error) = stop {
            bar.abandon();
            bail!("{error} (pass --bad-files skip to go on past unreadable images)");
        }
        bar.inc(n);
    }
    bar.finish_and_clear();
    let before = match &sink {
        Sink::File(log) => Some((log.path().to_path_buf(), log.tally())),
        Sink::Stdout { .. } => None,
    };
    summary(&counts, &skipped, before, &positive_name, start);
    if let Some(w) = &untrained {
        eprintln!("warning: {}: {w}", model.display());
    }
    let failed = counts.failed + counts.overlay_failed + skipped.failed.load(Ordering::Relaxed);
    if failed > 0 {
        eprintln!("error: {failed} file(s) could not be classified or explained");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The warning every answer of a model whose classifier was never trained carries: what
/// `fracture import` writes (its provenance records 0 epochs) has pretrained features and a
/// randomly initialised classifier, so its probabilities and labels mean nothing yet.
pub fn untrained_warning(meta: &fracture_nn::ClassifierMeta) -> Option<String> {
    (meta.provenance.epochs == 0).then(|| {
        "the classifier was not trained (imported weights, 0 epochs): its probabilities and \
         labels mean nothing until `fracture train --pretrained` fine-tunes it"
            .to_string()
    })
}

/// Flags that only make sense together, checked before any work.
fn check_flags(a: &PredictArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size 0: must be at least 1 (images per forward pass, e.g. 8)");
    }
    if a.out.is_none() {
        for (set, flag) in [
            (a.resume, "--resume"),
            (a.overwrite, "--overwrite"),
            (a.retry_failed, "--retry-failed"),
        ] {
            if set {
                bail!("{flag} applies to the results file: add --out FILE");
            }
        }
    }
    if a.resume && a.overwrite {
        bail!("--resume and --overwrite contradict each other: --resume continues the --out file, --overwrite replaces it");
    }
    if a.retry_failed && !a.resume {
        bail!("--retry-failed goes with --resume (it retries the files the --out file lists as failed)");
    }
    Ok(())
}

/// Files left out because the results file already lists them.
#[derive(Default)]
struct Skipped {
    scored: AtomicUsize,
    failed: AtomicUsize,
}

/// The walk without the files `recorded` already lists (counted in `skipped`).
fn unrecorded(
    walk: impl Iterator<Item = crate::walk::Found> + Send + 'static,
    recorded: Option<RecordedPaths>,
    skipped: Arc<Skipped>,
) -> impl Iterator<Item = Input> + Send + 'static {
    use fracture_nn::results_log::Recorded;
    walk.filter(move |(path, _)| {
        let Some(done) = &recorded else {
            return true;
        };
        match done.get(&escape_path(path)) {
            None => true,
            Some(Recorded::Scored) => {
                skipped.scored.fetch_add(1, Ordering::Relaxed);
                false
            }
            Some(Recorded::Failed) => {
                skipped.failed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    })
    .map(|(path, error)| Input { path, error })
}

fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {human_pos} images, {per_sec} (counting files...)")
            .expect("valid template"),
    );
    bar
}

/// Walks the inputs a second time on a background thread, only counting, and gives the bar
/// its length (and so its ETA) when done. The process does not wait for it.
fn count_in_background(a: &PredictArgs, recorded: Option<RecordedPaths>, bar: &ProgressBar) {
    if bar.is_hidden() {
        return;
    }
    let (paths, exclude, bar) = (a.paths.clone(), a.heatmap.clone(), bar.clone());
    let _ = std::thread::Builder::new()
        .name("fracture-count".into())
        .spawn(move || {
            let n = Walk::new(paths, exclude.as_deref(), false)
                .filter(|(p, _)| {
                    recorded
                        .as_ref()
                        .is_none_or(|r| r.get(&escape_path(p)).is_none())
                })
                .count();
            bar.set_length(n as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "[{bar:30}] {human_pos}/{human_len} images, {per_sec}, ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
        });
}

/// Prints the results of one batch, or with --out returns them as JSON lines to append;
/// with --heatmap the overlays are drawn first. With `stop_on_error`, the first file that
/// cannot be classified ends the batch: the lines before it and its error are returned.
fn batch_lines(
    batch: Vec<Scored>,
    cam: &mut Option<Overlays>,
    sink: &Sink,
    counts: &mut Counts,
    bar: &ProgressBar,
    stop_on_error: bool,
    untrained: Option<&str>,
) -> (Vec<String>, Option<String>) {
    let mut lines = Vec::with_capacity(batch.len());
    let (to_file, json) = match sink {
        Sink::File(_) => (true, true),
        Sink::Stdout { json } => (false, *json),
    };
    for s in batch {
        let shown = escape_path(&s.path);
        let line = match s.outcome {
            Ok(mut scoring) => {
                if let Some(w) = untrained {
                    scoring.warning = Some(match scoring.warning.take() {
                        Some(other) => format!("{w}; {other}"),
                        None => w.to_string(),
                    });
                }
                counts.scored += 1;
                counts.positive += usize::from(scoring.positive);
                let heat = cam.as_mut().map(|c| c.draw(&s.path, &scoring));
                if let Some(Err(e)) = &heat {
                    counts.overlay_failed += 1;
                    bar.suspend(|| eprintln!("{shown}: error: {e}"));
                }
                if json {
                    json_line(&shown, &scoring, heat.as_ref())
                } else {
                    text_line(&shown, &scoring, heat.as_ref())
                }
            }
            Err(e) if stop_on_error => return (lines, Some(format!("{shown}: {e}"))),
            Err(e) => {
                counts.failed += 1;
                if !json {
                    bar.suspend(|| eprintln!("{shown}: error: {e}"));
                    continue;
                }
                if to_file {
                    bar.suspend(|| eprintln!("{shown}: error: {e}"));
                }
                PredictionRecord::failed(shown, e).to_line()
            }
        };
        if to_file {
            lines.push(line);
        } else {
            bar.suspend(|| println!("{line}"));
        }
    }
    (lines, None)
}

/// The record `predict --json` prints (and `--out` appends) for a scored image.
fn json_line(shown: &str, s: &Scoring, heat: Option<&Drawn>) -> String {
    let mut r = PredictionRecord::scored(
        shown,
        s.p_fractured,
        s.label.as_str(),
        s.typicality,
        s.warning.clone(),
    );
    r.sop_instance_uid = s.sop_instance_uid.clone(); // DICOM: match back to the archive
    match heat {
        Some(Ok((png, peak))) => {
            r.heatmap = Some(escape_path(png));
            r.peak = Some(*peak);
        }
        Some(Err(e)) => r.heatmap_error = Some(e.clone()),
        None => {}
    }
    r.to_line()
}

/// The tab-separated text line of a scored image.
fn text_line(shown: &str, s: &Scoring, heat: Option<&Drawn>) -> String {
    let mut line = format!("{shown}\tP(fractured) = {:.4}\t{}", s.p_fractured, s.label);
    if let Some(Ok((png, peak))) = heat {
        let peak = peak.map_or("none".into(), |[x, y]| format!("({x}, {y})"));
        line += &format!("\theatmap {} (peak {peak})", escape_path(png));
    }
    if let Some(t) = s.typicality.filter(|t| !t.typical) {
        line += &format!(
            "\tATYPICAL (score {:.3}): {}",
            t.score,
            fracture_nn::typicality::ATYPICAL_WARNING
        );
    }
    if let Some(n) = &s.warning {
        line += &format!("\twarning: {n}");
    }
    line
}

/// The overlay written for an image and the heatmap's peak, or why it could not be written.
type Drawn = std::result::Result<(PathBuf, Option<[usize; 2]>), String>;

/// Grad-CAM overlays of `--heatmap DIR`.
struct Overlays {
    cam: GradCam,
    dir: PathBuf,
    /// Overlay names taken in this run (two images with one file name get `-2`, `-3`, ...).
    used: HashSet<PathBuf>,
    /// With --resume, names already in DIR belong to images of the earlier run.
    avoid_existing: bool,
    threshold: f64,
    norm: fracture_nn::data::Normalization,
}

impl Overlays {
    /// The image's Grad-CAM overlay, written under a name derived from the file name and not
    /// yet used. A failure keeps the probability.
    fn draw(&mut self, path: &Path, s: &Scoring) -> Drawn {
        let gray = s.pixels.as_deref().unwrap_or_default();
        let x = fracture_nn::data::standardise(gray, &self.norm);
        let heat = self.cam.heatmap(&x).map_err(|e| e.to_string())?;
        let stem = path
            .file_stem()
            .map_or("image".into(), |s| s.to_string_lossy().into_owned());
        let mut png = self.dir.join(format!("{stem}.gradcam.png"));
        let mut k = 1;
        while self.used.contains(&png) || png == path || (self.avoid_existing && png.exists()) {
            k += 1;
            png = self.dir.join(format!("{stem}-{k}.gradcam.png"));
        }
        self.used.insert(png.clone());
        let probability = Probability {
            p: s.p_fractured,
            threshold: self.threshold,
        };
        save_overlay(
            &png,
            gray,
            &heat,
            Some(probability),
            &OverlayConfig::default(),
        )
        .map(|()| (png, heat.peak))
        .map_err(|e| e.to_string())
    }
}

/// The end of the run on stderr: this run's counts, and with --out the whole file's.
fn summary(
    c: &Counts,
    skipped: &Skipped,
    file: Option<(PathBuf, Tally)>,
    positive: &str,
    start: Instant,
) {
    let secs = start.elapsed().as_secs_f64();
    let n = c.scored + c.failed;
    let rate = if secs > 0.0 { n as f64 / secs } else { 0.0 };
    eprintln!(
        "predict: {} scored, {} failed, {} flagged as {positive} ({} in {secs:.1} s, {rate:.1} images/s)",
        c.scored,
        c.failed,
        c.positive,
        crate::images(n)
    );
    if c.overlay_failed > 0 {
        eprintln!(
            "predict: {} overlay(s) could not be written (the images are scored)",
            c.overlay_failed
        );
    }
    if let Some((path, before)) = file {
        let (ss, sf) = (
            skipped.scored.load(Ordering::Relaxed),
            skipped.failed.load(Ordering::Relaxed),
        );
        if ss + sf > 0 {
            eprintln!(
                "predict: skipped {} file(s) already in {} ({ss} scored, {sf} failed; --retry-failed tries failed ones again)",
                ss + sf,
                path.display()
            );
        }
        eprintln!(
            "predict: {} now holds {} lines: {} scored, {} failed, {} flagged as {positive}",
            path.display(),
            before.lines() + n,
            before.scored + c.scored,
            before.failed + c.failed,
            before.positive + c.positive
        );
    }
}

/// A path as printed by `predict`: UTF-8 names as they are, except that a backslash, tab,
/// newline or other control character is escaped (`\\`, `\t`, `\n`, `\xNN`) so that each
/// result stays one tab-separated line, and bytes that are not UTF-8 are written as `\xNN`
/// instead of being replaced. It is also the key by which `--resume` recognises a file.
pub fn escape_path(p: &Path) -> String {
    #[cfg(unix)]
    let bytes: &[u8] = std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str());
    #[cfg(not(unix))]
    let owned = p.to_string_lossy().into_owned().into_bytes();
    #[cfg(not(unix))]
    let bytes: &[u8] = &owned;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The model `predict` uses without `--model`: `models/fracatlas.safetensors` in the current
/// folder, else in the source tree this binary was built from.
fn default_model() -> Result<PathBuf> {
    let rel = Path::new("models").join("fracatlas.safetensors");
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(&rel);
    [rel.clone(), built]
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "no --model given and the default model {} is not here (run from the repository, or pass --model FILE)",
                rel.display()
            )
        })
}

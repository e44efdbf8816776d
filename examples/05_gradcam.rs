//! 05: Grad-CAM heatmaps, and how well their peaks find the fracture on phantoms.
//!
//! Trains the phantom model exactly as `fracture train` does without `--data` (64 px, 1200
//! training phantoms, 12 epochs, seed 0), or loads one with `--model`, then computes the
//! Grad-CAM heatmap of every fractured phantom of a fresh test split (400 images, 200 fractured,
//! never trained on) and counts a hit when the heatmap's peak lies within 10 % of the image size
//! of the recorded fracture line (the segment where the line crosses the bone). It prints the hit
//! rate for several target layers (the default first), next to the rate a uniformly random peak
//! would get.
//!
//! Run: `cargo run --release --example 05_gradcam` (trains: about 45 s of CPU time, 1-5 minutes
//! on a shared 2-core machine), or
//! `cargo run --release --example 05_gradcam -- --model runs/phantoms/model.safetensors`.
//! `--targets blocks.2.2,blocks.3.2+blocks.2.2` evaluates other targets (`+` fuses layers).
//! Add `--overlays docs/img` to write overlay PNGs of the first test phantoms.
//!
//! It should print a hit rate of at least 80 % for the default targets (the fused maps of the
//! last three stages): 83.0 % (166/200) when it trains the model itself; the last stage alone
//! gets 65.0 %. See docs/GRADCAM.md for the measured figures.

use std::path::PathBuf;

use anyhow::{bail, Context};
use fracture_nn::data::phantom::PhantomConfig;
use fracture_nn::data::{standardise, Split, FRACTURED};
use fracture_nn::gradcam::{distance_to_fracture, GradCam, Score};
use fracture_nn::overlay::{save_overlay, OverlayConfig, Probability};
use fracture_nn::{Classifier, FitInputs, ModelConfig, TrainConfig, Trainer};

struct Args {
    model: Option<PathBuf>,
    out: PathBuf,
    overlays: Option<PathBuf>,
    targets: Vec<String>,
    test: usize,
    test_seed: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        model: None,
        out: PathBuf::from("runs/example-gradcam"),
        overlays: None,
        targets: Vec::new(),
        test: 400,
        test_seed: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = Some(value()?.into()),
            "--out" => a.out = value()?.into(),
            "--overlays" => a.overlays = Some(value()?.into()),
            "--targets" => a.targets = value()?.split(',').map(str::to_string).collect(),
            "--test" => a.test = value()?.parse()?,
            "--test-seed" => a.test_seed = value()?.parse()?,
            other => bail!(
                "unknown argument {other:?}; usage: 05_gradcam [--model FILE] [--out DIR] [--overlays DIR] [--targets a,b] [--test N] [--test-seed S]"
            ),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let clf = match &args.model {
        Some(path) => Classifier::load(path)?,
        None => {
            // What `fracture train` does without --data (see crates/cli/src/main.rs).
            let mut data = PhantomConfig {
                size: 64,
                train: 1200,
                val: 240,
                test: 240,
                seed: 0,
                ..Default::default()
            }
            .folder()?;
            let config = TrainConfig {
                epochs: 12,
                verbose: true,
                ..Default::default()
            };
            let trainer = Trainer::new(config, &args.out);
            let (train, val) = (data.take_split(Split::Train)?, data.take_split(Split::Val)?);
            let out = trainer
                .fit(FitInputs::new(ModelConfig::phantom(64), train, val).with_data("phantoms"))?;
            println!(
                "trained; model written to {}",
                trainer.model_path().display()
            );
            out.classifier
        }
    };
    let size = clf.image_size();
    let set = PhantomConfig {
        size,
        train: 0,
        val: 0,
        test: args.test,
        seed: args.test_seed,
        ..Default::default()
    }
    .split(Split::Test)?;
    let fractured: Vec<usize> = (0..set.data.len())
        .filter(|&i| set.data.labels()[i] == FRACTURED)
        .collect();
    let tolerance = 0.1 * size as f32;
    println!(
        "{} fractured test phantoms at {size} px; a hit is a peak within {tolerance:.1} px of the fracture line",
        fractured.len()
    );

    // The default (the fused maps of the last three stages), then each layer on its own.
    let default = GradCam::default_targets(&clf.meta.model);
    let mut configs: Vec<Vec<String>> = vec![default.clone()];
    if args.targets.is_empty() {
        configs.extend(default.iter().map(|t| vec![t.clone()]));
        if let fracture_nn::model::Architecture::Plain(plain) = &clf.meta.model.arch {
            let last = plain.stages.len() - 1;
            configs.push(vec![format!("blocks.{last}.3")]);
            if last > 0 {
                configs.push(vec![format!("blocks.{}.3", last - 1)]);
            }
        }
    } else {
        configs = args
            .targets
            .iter()
            .map(|t| t.split('+').map(str::to_string).collect())
            .collect();
    }

    // Chance level: the share of the image within the tolerance of the line.
    let chance: f64 = fractured
        .iter()
        .map(|&i| {
            let line = set.fractures[i].expect("fractured phantoms have a line");
            let near = (0..size * size)
                .filter(|p| {
                    let pt = [(p % size) as f32 + 0.5, (p / size) as f32 + 0.5];
                    distance_to_fracture(pt, &line) <= tolerance
                })
                .count();
            near as f64 / (size * size) as f64
        })
        .sum::<f64>()
        / fractured.len() as f64;

    let pixels: Vec<f32> = fractured
        .iter()
        .flat_map(|&i| standardise(set.data.image(i), &clf.meta.normalization))
        .collect();
    for (targets, score) in configs
        .iter()
        .flat_map(|t| [(t, Score::LogOdds), (t, Score::Logit)])
    {
        let names: Vec<&str> = targets.iter().map(String::as_str).collect();
        let mut cam = GradCam::with_targets(&clf, &names)?.with_score(score);
        let mut hits = 0usize;
        let mut detected = (0usize, 0usize); // (hits, count) among P >= threshold
        let mut distances = Vec::new();
        for (chunk, idx) in pixels.chunks(50 * size * size).zip(fractured.chunks(50)) {
            let maps = cam.heatmap_batch(chunk, idx.len())?;
            for (heat, &i) in maps.iter().zip(idx) {
                let line = set.fractures[i].expect("fractured phantoms have a line");
                let d = heat
                    .peak_point()
                    .map_or(f32::INFINITY, |p| distance_to_fracture(p, &line));
                let hit = d <= tolerance;
                hits += usize::from(hit);
                if heat.probability() >= clf.meta.threshold {
                    detected.0 += usize::from(hit);
                    detected.1 += 1;
                }
                distances.push(d);
            }
        }
        distances.sort_by(f32::total_cmp);
        let sides: Vec<String> = cam.heatmap_batch(&pixels[..size * size], 1)?[0]
            .cams
            .iter()
            .map(|c| format!("{}x{}", c.height, c.width))
            .collect();
        println!(
            "{:<32} {:<8} hit rate {:5.1} % ({hits}/{}), {:5.1} % of the {} detected at the threshold; median distance {:.1} px",
            format!("{} ({})", targets.join("+"), sides.join(", ")),
            format!("{score:?}"),
            100.0 * hits as f64 / fractured.len() as f64,
            fractured.len(),
            100.0 * detected.0 as f64 / detected.1.max(1) as f64,
            detected.1,
            distances[distances.len() / 2]
        );
    }
    println!(
        "a uniformly random peak would hit {:.1} % of the time",
        100.0 * chance
    );

    if let Some(dir) = &args.overlays {
        // The first four fractured phantoms, the first intact one, and the first two fractured
        // ones whose peak misses the line, with the default targets.
        let mut cam = GradCam::new(&clf)?;
        let mut heats = Vec::new();
        for (chunk, idx) in pixels.chunks(50 * size * size).zip(fractured.chunks(50)) {
            heats.extend(
                cam.heatmap_batch(chunk, idx.len())?
                    .into_iter()
                    .zip(idx.iter().copied()),
            );
        }
        let misses = heats.iter().filter(|(h, i)| {
            let line = set.fractures[*i].expect("fractured phantoms have a line");
            h.peak_point()
                .is_none_or(|p| distance_to_fracture(p, &line) > tolerance)
        });
        let mut chosen: Vec<(&str, usize)> = fractured
            .iter()
            .take(4)
            .map(|&i| ("fractured", i))
            .collect();
        if let Some(i) = (0..set.data.len()).find(|&i| set.data.labels()[i] != FRACTURED) {
            chosen.push(("intact", i));
        }
        chosen.extend(misses.take(2).map(|(_, i)| ("miss", *i)));
        for (kind, i) in chosen {
            let gray = set.data.image(i);
            let heat = cam.heatmap(&standardise(gray, &clf.meta.normalization))?;
            let name = set.data.paths()[i]
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("phantom")
                .to_string();
            let path = dir.join(format!("gradcam-{kind}-{name}.png"));
            let p = Probability {
                p: heat.probability(),
                threshold: clf.meta.threshold,
            };
            save_overlay(&path, gray, &heat, Some(p), &OverlayConfig::default())?;
            let dist = set.fractures[i]
                .zip(heat.peak_point())
                .map(|(l, pt)| format!(", {:.1} px from the line", distance_to_fracture(pt, &l)));
            println!(
                "wrote {} (P(fractured) = {:.3}, peak {:?}{})",
                path.display(),
                p.p,
                heat.peak,
                dist.unwrap_or_default()
            );
        }
    }
    Ok(())
}

//! The speed benchmark of the reference CNN, following `../shared/bench/torch_reference.py`'s
//! protocol exactly, so that the two can run one after the other and be compared as a ratio.
//!
//! Model (`ModelConfig::reference`): 4 x [conv3x3 (pad 1, no bias) - BatchNorm2d - ReLU -
//! maxpool2], channels 1->32->64->128->256, global average pool, dropout(0.3), linear(256 -> 2).
//! Training step: forward in train mode, mean cross-entropy, zero_grad, backward, SGD step
//! (lr 0.01, momentum 0.9). Inference: eval mode, no caches.
//! Protocol: batch 32, `--warmup` untimed steps, then `--steps` timed steps each timed alone,
//! thread counts interleaved (1, 2, 1, 2, ...), one rayon pool per count.
//!
//! `--model lite0` times EfficientNet-Lite0 instead (`ModelConfig::lite0`, gray input, 2
//! classes, as `torch_reference.py --model lite0`), whose training step is AdamW (lr 1e-3,
//! weight decay 1e-4); its JSON lines gain `"model": "lite0"`.
//!
//! Run: `cargo run --release --example bench_reference -- --sizes 128,224 --threads 1,2`
//! or `cargo run --release --example bench_reference -- --model lite0 --sizes 224`
//!
//! It prints one JSON line per (size, mode, threads), as the PyTorch script does, with
//! `"impl": "fracture-nn"`:
//! `{"impl": "fracture-nn", "size": 128, "batch": 32, "mode": "train", "threads": 2, "img_per_s_median": ..., ...}`

use std::time::Instant;

use fracture_nn::layers::optim::{AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};
use fracture_nn::layers::{CrossEntropyLoss, Layer, Mode};
use fracture_nn::tensor::Tensor4;
use fracture_nn::ModelConfig;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

struct Args {
    sizes: Vec<usize>,
    threads: Vec<usize>,
    modes: Vec<String>,
    batch: usize,
    steps: usize,
    warmup: usize,
    lite0: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        sizes: vec![128],
        threads: vec![1, 2],
        modes: vec!["train".into(), "inference".into()],
        batch: 32,
        steps: 20,
        warmup: 3,
        lite0: false,
    };
    let list = |v: &str| -> anyhow::Result<Vec<usize>> {
        v.split(',').map(|s| Ok(s.trim().parse()?)).collect()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--sizes" => a.sizes = list(&v)?,
            "--threads" => a.threads = list(&v)?,
            "--modes" => a.modes = v.split(',').map(str::to_string).collect(),
            "--batch" => a.batch = v.parse()?,
            "--steps" => a.steps = v.parse()?,
            "--warmup" => a.warmup = v.parse()?,
            "--model" => {
                a.lite0 = match v.as_str() {
                    "lite0" => true,
                    "reference" => false,
                    other => anyhow::bail!("unknown --model {other} (reference or lite0)"),
                }
            }
            other => anyhow::bail!(
                "unknown flag {other} (--sizes, --threads, --modes, --batch, --steps, --warmup, --model)"
            ),
        }
    }
    Ok(a)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    let pools: Vec<rayon::ThreadPool> = a
        .threads
        .iter()
        .map(|&t| rayon::ThreadPoolBuilder::new().num_threads(t).build())
        .collect::<Result<_, _>>()?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for &size in &a.sizes {
        for mode in &a.modes {
            let train = match mode.as_str() {
                "train" => true,
                "inference" => false,
                other => anyhow::bail!("unknown mode {other}"),
            };
            let (model, mut opt, lr): (_, Box<dyn Optimizer>, f32) = if a.lite0 {
                let opt = AdamW::new(AdamWConfig {
                    weight_decay: 1e-4,
                    ..Default::default()
                })?;
                (ModelConfig::lite0(size), Box::new(opt), 1e-3)
            } else {
                let opt = Sgd::new(SgdConfig {
                    momentum: 0.9,
                    ..Default::default()
                })?;
                (ModelConfig::reference(size), Box::new(opt), 0.01)
            };
            let mut net = model.build(0)?;
            let x: Vec<f32> = (0..a.batch * size * size)
                .map(|_| rng.sample(StandardNormal))
                .collect();
            let x = Tensor4::from_vec([a.batch, 1, size, size], x)?;
            let y: Vec<usize> = (0..a.batch).map(|_| rng.gen_range(0..2)).collect();
            let loss = CrossEntropyLoss::default();
            let mut step = |net: &mut fracture_nn::layers::Sequential| -> anyhow::Result<()> {
                if train {
                    let logits = net.forward(&x, Mode::Train)?;
                    let (_, dlogits) = loss.forward_backward(&logits, &y)?;
                    net.zero_grad();
                    net.backward_params_only(&dlogits)?;
                    opt.step(net, lr)?;
                } else {
                    net.forward(&x, Mode::Eval)?;
                }
                Ok(())
            };
            let mut times: Vec<Vec<f64>> = vec![Vec::new(); a.threads.len()];
            for pool in &pools {
                for _ in 0..a.warmup {
                    pool.install(|| step(&mut net))?;
                }
            }
            for _ in 0..a.steps {
                for (i, pool) in pools.iter().enumerate() {
                    let t0 = Instant::now();
                    pool.install(|| step(&mut net))?;
                    times[i].push(a.batch as f64 / t0.elapsed().as_secs_f64());
                }
            }
            for (i, &t) in a.threads.iter().enumerate() {
                let v = &mut times[i];
                let (min, max) = (
                    v.iter().copied().fold(f64::INFINITY, f64::min),
                    v.iter().copied().fold(0.0, f64::max),
                );
                let mut line = serde_json::json!({
                        "impl": "fracture-nn", "size": size, "batch": a.batch, "mode": mode, "threads": t,
                        "img_per_s_median": (median(v) * 100.0).round() / 100.0,
                        "img_per_s_min": (min * 100.0).round() / 100.0,
                        "img_per_s_max": (max * 100.0).round() / 100.0,
                        "steps": a.steps,
                });
                if a.lite0 {
                    line["model"] = "lite0".into();
                }
                println!("{line}");
            }
        }
    }
    Ok(())
}

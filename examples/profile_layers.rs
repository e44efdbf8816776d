//! Where the time of a training step goes, layer by layer, for the reference CNN of
//! `../shared/bench` (the model of `examples/bench_reference.rs`, laid out flat so that every
//! layer can be timed on its own).
//!
//! For each layer it prints the median wall time of its forward pass (train mode) and of its
//! backward pass over `--steps` steps, and the share of the whole step, in the spirit of the
//! PyTorch profiler table the speed issue quotes (conv / batch norm / ReLU / max pool).
//!
//! Run: `cargo run --release --example profile_layers -- --size 128 --threads 2 --steps 10`
//! (add `--eval 1` for inference: eval mode, forward only).

use std::time::Instant;

use fracture_nn::layers::{
    BatchNorm2dConfig, Conv2dConfig, CrossEntropyLoss, DropoutConfig, GlobalAvgPool, Layer,
    LinearConfig, MaxPool2dConfig, Mode, Relu,
};
use fracture_nn::tensor::Tensor4;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

fn arg(name: &str, default: usize) -> anyhow::Result<usize> {
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == name {
            let v = it
                .next()
                .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?;
            return Ok(v.parse()?);
        }
    }
    Ok(default)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let size = arg("--size", 128)?;
    let threads = arg("--threads", 2)?;
    let steps = arg("--steps", 10)?.max(1);
    let batch = arg("--batch", 32)?;
    // `--eval 1`: inference (eval mode, forward only) instead of a training step.
    let eval = arg("--eval", 0)? != 0;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut layers: Vec<(String, Box<dyn Layer>)> = Vec::new();
    let mut c = 1;
    for (i, w) in [32, 64, 128, 256].into_iter().enumerate() {
        let conv = Conv2dConfig::new(c, w, 3)
            .with_padding(1)
            .with_bias(false)
            .init(&mut rng)?;
        layers.push((format!("conv{i} {c}->{w}"), Box::new(conv)));
        layers.push((
            format!("bn{i}"),
            Box::new(BatchNorm2dConfig::new(w).init()?),
        ));
        layers.push((format!("relu{i}"), Box::new(Relu::new())));
        layers.push((
            format!("pool{i}"),
            Box::new(MaxPool2dConfig::new(2).init()?),
        ));
        c = w;
    }
    layers.push(("gap".into(), Box::new(GlobalAvgPool::new())));
    layers.push((
        "dropout".into(),
        Box::new(DropoutConfig::new(0.3).init(&mut rng)?),
    ));
    layers.push((
        "fc".into(),
        Box::new(LinearConfig::new(256, 2).init(&mut rng)?),
    ));
    let x: Vec<f32> = (0..batch * size * size)
        .map(|_| rng.sample(StandardNormal))
        .collect();
    let x = Tensor4::from_vec([batch, 1, size, size], x)?;
    let y: Vec<usize> = (0..batch).map(|_| rng.gen_range(0..2)).collect();
    let loss = CrossEntropyLoss::default();
    let n = layers.len();
    let mut fwd = vec![Vec::new(); n];
    let mut bwd = vec![Vec::new(); n];
    let mut whole = Vec::new();
    for step in 0..steps + 2 {
        pool.install(|| -> anyhow::Result<()> {
            let t_step = Instant::now();
            let mut h = x.clone();
            let mut tf = vec![0.0; n];
            for (i, (_, l)) in layers.iter_mut().enumerate() {
                let t0 = Instant::now();
                h = l.forward(&h, if eval { Mode::Eval } else { Mode::Train })?;
                tf[i] = t0.elapsed().as_secs_f64();
            }
            let (_, mut g) = loss.forward_backward(&h, &y)?;
            let mut tb = vec![0.0; n];
            for (i, (_, l)) in layers.iter_mut().enumerate().rev() {
                if eval {
                    break;
                }
                l.zero_grad();
                let t0 = Instant::now();
                if i == 0 {
                    l.backward_params_only(&g)?;
                } else {
                    g = l.backward(&g)?;
                }
                tb[i] = t0.elapsed().as_secs_f64();
            }
            // Two warm-up steps fill the buffer pool and the caches.
            if step >= 2 {
                whole.push(t_step.elapsed().as_secs_f64());
                for i in 0..n {
                    fwd[i].push(tf[i]);
                    bwd[i].push(tb[i]);
                }
            }
            Ok(())
        })?;
    }
    let total = median(&mut whole);
    println!(
        "reference CNN, {}, batch {batch}, {size} px, {threads} thread(s), median of {steps} steps: {:.1} ms per step, {:.1} images/s",
        if eval { "inference" } else { "training step" },
        total * 1e3,
        batch as f64 / total
    );
    println!("| layer | forward ms | backward ms | share of step |");
    println!("|---|---:|---:|---:|");
    let mut kinds: Vec<(&str, f64)> = Vec::new();
    for (i, (name, l)) in layers.iter().enumerate() {
        let (f, b) = (median(&mut fwd[i]), median(&mut bwd[i]));
        println!(
            "| {name} | {:.2} | {:.2} | {:.1} % |",
            f * 1e3,
            b * 1e3,
            100.0 * (f + b) / total
        );
        match kinds.iter_mut().find(|(k, _)| *k == l.kind()) {
            Some((_, t)) => *t += f + b,
            None => kinds.push((l.kind(), f + b)),
        }
    }
    println!("\nby kind: {}", {
        let v: Vec<String> = kinds
            .iter()
            .map(|(k, t)| format!("{k} {:.1} %", 100.0 * t / total))
            .collect();
        v.join(", ")
    });
    Ok(())
}

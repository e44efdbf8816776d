//! The fused `BnReluPool` against the chain it replaces (`BatchNorm2d -> Relu -> MaxPool2d(2)`),
//! forward + backward in training mode, at the reference model's shapes (batch 32: 32x128x128,
//! 64x64x64, 128x32x32, 256x16x16), with 1 and 2 threads.
//!
//! The machine is shared (other jobs run), so absolute times are noisy: the two variants run
//! alternately in the same process, and the report is the median over repetitions of each
//! variant's time and of the per-repetition ratio unfused / fused (> 1: fused is faster).
//! "owned" is the fused layer fed through `BnReluPool::forward_owned`, which keeps the input
//! instead of copying it.
//!
//! Run: `cargo bench -p fracture-layers --bench fused -- [REPS]` (default 7 repetitions;
//! `FUSED_SHAPES=0,1` limits the shapes by index, `FUSED_THREADS=2` the thread counts).

use std::hint::black_box;
use std::time::Instant;

use fracture_layers::{
    BatchNorm2dConfig, BnReluPool, BnReluPoolConfig, Layer, MaxPool2dConfig, Mode, Relu, Sequential,
};
use fracture_tensor::Tensor4;
use rand::{Rng, SeedableRng};

const SHAPES: [[usize; 4]; 4] = [
    [32, 32, 128, 128],
    [32, 64, 64, 64],
    [32, 128, 32, 32],
    [32, 256, 16, 16],
];

fn random(shape: [usize; 4], seed: u64) -> Tensor4 {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor4::from_vec(shape, (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
        .expect("length matches shape")
}

/// Seconds of (forward, backward) in training mode.
fn step(layer: &mut dyn Layer, x: &Tensor4, dy: &Tensor4) -> (f64, f64) {
    let t0 = Instant::now();
    let y = layer.forward(black_box(x), Mode::Train).expect("forward");
    let t1 = Instant::now();
    layer.zero_grad();
    let dx = layer.backward(black_box(dy)).expect("backward");
    let t2 = Instant::now();
    black_box((y, dx));
    ((t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64())
}

/// As [`step`] with [`BnReluPool::forward_owned`] (the input is cloned outside the timing, as
/// a caller that owns the convolution's output would hand it over).
fn step_owned(layer: &mut BnReluPool, x: &Tensor4, dy: &Tensor4) -> (f64, f64) {
    let x = x.clone();
    let t0 = Instant::now();
    let y = layer
        .forward_owned(black_box(x), Mode::Train)
        .expect("forward");
    let t1 = Instant::now();
    layer.zero_grad();
    let dx = layer.backward(black_box(dy)).expect("backward");
    let t2 = Instant::now();
    black_box((y, dx));
    ((t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn list_env(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn main() {
    let reps: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(7)
        .max(1);
    let shapes = list_env("FUSED_SHAPES", &[0, 1, 2, 3]);
    let threads = list_env("FUSED_THREADS", &[1, 2]);
    println!("times in ms (medians); ratios unfused / fused (> 1: fused is faster)");
    println!(
        "{:>20} {:>3} | {:>13} | {:>13} | {:>13} | {:>6} {:>6} {:>6} {:>6}",
        "shape", "thr", "unfused f/b", "fused f/b", "owned f/b", "fwd", "bwd", "step", "owned"
    );
    for &threads in &threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        for &si in &shapes {
            let Some(&shape) = SHAPES.get(si) else {
                continue;
            };
            pool.install(|| {
                let c = shape[1];
                let x = random(shape, 1);
                let dy = random([shape[0], c, shape[2] / 2, shape[3] / 2], 2);
                let mut unfused = Sequential::new()
                    .with("1", BatchNorm2dConfig::new(c).init().expect("bn"))
                    .expect("name")
                    .with("2", Relu::new())
                    .expect("name")
                    .with("3", MaxPool2dConfig::new(2).init().expect("pool"))
                    .expect("name");
                let mut fused = BnReluPoolConfig::new(c).init().expect("fused");
                let mut owned = BnReluPoolConfig::new(c).init().expect("fused");
                // Warm-up: fills the buffer pool and the layers' spare buffers.
                step(&mut unfused, &x, &dy);
                step(&mut fused, &x, &dy);
                step_owned(&mut owned, &x, &dy);
                // Per repetition: unfused, fused and owned (fwd, bwd) seconds.
                let mut t: Vec<[f64; 6]> = Vec::new();
                for _ in 0..reps {
                    let (uf, ub) = step(&mut unfused, &x, &dy);
                    let (ff, fb) = step(&mut fused, &x, &dy);
                    let (of, ob) = step_owned(&mut owned, &x, &dy);
                    t.push([uf, ub, ff, fb, of, ob]);
                }
                let med = |f: &dyn Fn(&[f64; 6]) -> f64| {
                    median(&mut t.iter().map(f).collect::<Vec<f64>>())
                };
                let ms: Vec<f64> = (0..6).map(|i| med(&|r| r[i] * 1e3)).collect();
                let fwd = med(&|r| r[0] / r[2]);
                let bwd = med(&|r| r[1] / r[3]);
                let stp = med(&|r| (r[0] + r[1]) / (r[2] + r[3]));
                let own = med(&|r| (r[0] + r[1]) / (r[4] + r[5]));
                let shape = format!("{shape:?}");
                println!(
                    "{shape:>20} {threads:>3} | {:>6.1} {:>6.1} | {:>6.1} {:>6.1} | {:>6.1} {:>6.1} \
                     | {fwd:>5.2}x {bwd:>5.2}x {stp:>5.2}x {own:>5.2}x",
                    ms[0], ms[1], ms[2], ms[3], ms[4], ms[5]
                );
            });
        }
    }
}

//! The two `sgemm` backends (`matrixmultiply` and this crate's AVX-512 kernel) on the matrix
//! products of the convolutions that matter, single-threaded.
//!
//! Shapes are the exact calls `conv_gemm` makes (forward `W * cols`, weight gradient
//! `dY * cols^T` with B read through swapped strides, input gradient `W^T * dY` with A read
//! through swapped strides; C row-major, row stride `OH * OW` where the product fills a block of
//! an image's rows) for
//! - `ref128` / `ref224`: the reference CNN (conv3x3 1-32-64-128-256, each stage at half the
//!   previous size), batch-parallel path, at 128 and 224 px;
//! - `res256`: a residual net of widths 16-32-64-128 at 256 px (stride-2 stem, then stages at
//!   128, 64, 32 and 16 px): the 3x3 convolutions of stages 0, 1 and 3.
//!
//! Two parts:
//! 1. criterion, one group per shape with both backends next to each other; throughput is in
//!    elements = multiply-adds (`m * k * n`), so GFLOP/s = 2 x Gelem/s;
//! 2. (only under `cargo bench`) a table of paired ratios: each round times both backends back
//!    to back (about 10 ms each, wall clock), alternating which goes first. It prints the best
//!    and median GFLOP/s of each and the median and quartiles of the per-round ratio
//!    `matrixmultiply time / avx512 time`. On a shared machine the ratios (other work hits both
//!    halves of a round alike) and the best rounds (the quiet moments) are the figures to
//!    quote. (Thread CPU time from `/proc/thread-self/schedstat` was tried: for a thread that
//!    is not descheduled it can stay unchanged for 50 ms and more, so it cannot time a round.)
//!
//! Run: `cargo bench -p fracture-tensor --bench gemm -- --warm-up-time 1 --measurement-time 3`
//! (add a name filter such as `ref128` to run fewer shapes; `FRACTURE_GEMM_ROUNDS` sets the
//! rounds of the ratio table, default 31). On a CPU without AVX-512F only `matrixmultiply` runs.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use fracture_tensor::{sgemm_backend, sgemm_with, GemmBackend};

/// Which of the convolution's products a shape is.
#[derive(Clone, Copy)]
enum Kind {
    /// `y[O, cols] = W[O, K] * col[K, cols]`, C row stride `np`.
    Forward,
    /// `dw[O, K] (+)= dY[O, cols] * col^T`, A row stride `np`, B column-major, beta 1.
    WeightGrad,
    /// `dcol[K, cols] = W^T * dY[O, cols]`, A column-major, B row stride `np`.
    InputGrad,
}

/// One product: `m x k` times `k x n`; `np` is the row stride of the image-plane operand.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    kind: Kind,
    np: usize,
}

const fn s(name: &'static str, m: usize, k: usize, n: usize, kind: Kind, np: usize) -> Shape {
    Shape {
        name,
        m,
        k,
        n,
        kind,
        np,
    }
}

use Kind::{Forward as F, InputGrad as X, WeightGrad as W};

/// `conv_gemm` blocks each image into rows whose im2col matrix holds at most 384 Ki floats;
/// `n` below is one such block (`rows * OW`) and `np` the plane (`OH * OW`).
const SHAPES: &[Shape] = &[
    // Reference CNN at 128 px: stages 128, 64, 32, 16 px; K = 9, 288, 576, 1152.
    s("ref128/s1/fwd", 32, 9, 16384, F, 16384),
    s("ref128/s2/fwd", 64, 288, 1024, F, 4096),
    s("ref128/s3/fwd", 128, 576, 512, F, 1024),
    s("ref128/s4/fwd", 256, 1152, 256, F, 256),
    s("ref128/s1/dw", 32, 16384, 9, W, 16384),
    s("ref128/s2/dw", 64, 1024, 288, W, 4096),
    s("ref128/s3/dw", 128, 512, 576, W, 1024),
    s("ref128/s4/dw", 256, 256, 1152, W, 256),
    s("ref128/s2/dx", 288, 64, 1024, X, 4096),
    s("ref128/s3/dx", 576, 128, 512, X, 1024),
    s("ref128/s4/dx", 1152, 256, 256, X, 256),
    // Reference CNN at 224 px: stages 224, 112, 56, 28 px.
    s("ref224/s1/fwd", 32, 9, 50176, F, 50176),
    s("ref224/s2/fwd", 64, 288, 1344, F, 12544),
    s("ref224/s3/fwd", 128, 576, 672, F, 3136),
    s("ref224/s4/fwd", 256, 1152, 280, F, 784),
    s("ref224/s1/dw", 32, 50176, 9, W, 50176),
    s("ref224/s2/dw", 64, 1344, 288, W, 12544),
    s("ref224/s3/dw", 128, 672, 576, W, 3136),
    s("ref224/s4/dw", 256, 280, 1152, W, 784),
    s("ref224/s2/dx", 288, 64, 1344, X, 12544),
    s("ref224/s3/dx", 576, 128, 672, X, 3136),
    s("ref224/s4/dx", 1152, 256, 280, X, 784),
    // Residual 16-32-64-128 at 256 px: stage 0 (16 ch, 128 px), stage 1 conv2 (32 ch, 64 px),
    // stage 3 conv2 (128 ch, 16 px).
    s("res256/s0/fwd", 16, 144, 2432, F, 16384),
    s("res256/s0/dw", 16, 2432, 144, W, 16384),
    s("res256/s0/dx", 144, 16, 2432, X, 16384),
    s("res256/s1/fwd", 32, 288, 1024, F, 4096),
    s("res256/s1/dw", 32, 1024, 288, W, 4096),
    s("res256/s1/dx", 288, 32, 1024, X, 4096),
    s("res256/s3/fwd", 128, 1152, 256, F, 256),
    s("res256/s3/dw", 128, 256, 1152, W, 256),
    s("res256/s3/dx", 1152, 128, 256, X, 256),
];

/// Operands of one product, laid out as `conv_gemm` passes them.
struct Problem {
    shape: Shape,
    a: Vec<f32>,
    rsa: isize,
    csa: isize,
    b: Vec<f32>,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: Vec<f32>,
    rsc: isize,
}

fn filled(len: usize, seed: u32) -> Vec<f32> {
    // Deterministic values in [-0.5, 0.5); the kernels' speed does not depend on them.
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

impl Problem {
    fn new(sh: Shape) -> Problem {
        let (m, k, n, np) = (sh.m, sh.k, sh.n, sh.np);
        let (alen, rsa, csa, blen, rsb, csb, clen, rsc, beta) = match sh.kind {
            Kind::Forward => (m * k, k, 1, k * n, n, 1, (m - 1) * np + n, np, 0.0),
            Kind::WeightGrad => ((m - 1) * np + k, np, 1, k * n, 1, k, m * n, n, 1.0),
            Kind::InputGrad => (m * k, 1, m, (k - 1) * np + n, np, 1, m * n, n, 0.0),
        };
        Problem {
            shape: sh,
            a: filled(alen, 1),
            rsa: rsa as isize,
            csa: csa as isize,
            b: filled(blen, 2),
            rsb: rsb as isize,
            csb: csb as isize,
            beta,
            c: filled(clen, 3),
            rsc: rsc as isize,
        }
    }

    fn run(&mut self, be: GemmBackend) {
        let sh = self.shape;
        sgemm_with(
            be,
            sh.m,
            sh.k,
            sh.n,
            1.0,
            &self.a,
            self.rsa,
            self.csa,
            &self.b,
            self.rsb,
            self.csb,
            self.beta,
            &mut self.c,
            self.rsc,
            1,
        )
        .expect("valid shapes");
        // Keep a beta = 1 accumulation from growing without bound over many runs.
        if self.beta != 0.0 {
            self.c[0] = 0.0;
        }
    }

    fn flops(&self) -> f64 {
        2.0 * (self.shape.m * self.shape.k * self.shape.n) as f64
    }
}

fn backends() -> Vec<GemmBackend> {
    [GemmBackend::MatrixMultiply, GemmBackend::Avx512]
        .into_iter()
        .filter(|b| b.is_available())
        .collect()
}

fn criterion_part(c: &mut Criterion) {
    for &sh in SHAPES {
        let mut p = Problem::new(sh);
        let mut g = c.benchmark_group(format!("gemm/{}", sh.name));
        g.throughput(Throughput::Elements((sh.m * sh.k * sh.n) as u64));
        for be in backends() {
            g.bench_function(BenchmarkId::from_parameter(be.name()), |bch| {
                bch.iter(|| p.run(be))
            });
        }
        g.finish();
    }
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn ratio_table(filter: Option<&str>) {
    let bes = backends();
    if bes.len() < 2 {
        println!("\nratio table skipped: this CPU has no AVX-512F");
        return;
    }
    let rounds: usize = std::env::var("FRACTURE_GEMM_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(31)
        .max(1);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\npaired ratios, {rounds} rounds of ~10 ms per backend, wall time, load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<16} {:>15}  {:>19}  {:>19}  {:>6} {:>13}",
        "shape", "m x k x n", "mm GF/s best (med)", "avx GF/s best (med)", "ratio", "(quartiles)"
    );
    for &sh in SHAPES {
        if filter.is_some_and(|f| !sh.name.contains(f)) {
            continue;
        }
        let mut p = Problem::new(sh);
        // Calls per timing: about 10 ms.
        let t0 = Instant::now();
        p.run(bes[0]);
        p.run(bes[1]);
        let reps = ((0.02 / t0.elapsed().as_secs_f64()) as usize).clamp(1, 100_000);
        let mut times = [Vec::new(), Vec::new()];
        let mut ratios = Vec::new();
        for round in 0..rounds {
            let mut t = [0.0; 2];
            for step in 0..2 {
                let i = if round % 2 == 0 { step } else { 1 - step };
                let t0 = Instant::now();
                for _ in 0..reps {
                    p.run(bes[i]);
                }
                t[i] = t0.elapsed().as_secs_f64() / reps as f64;
                times[i].push(t[i]);
            }
            ratios.push(t[0] / t[1]);
        }
        let gf = |v: &mut Vec<f64>| {
            let (best, med) = (quantile(v, 0.0), quantile(v, 0.5));
            format!(
                "{:.1} ({:.1})",
                p.flops() / best / 1e9,
                p.flops() / med / 1e9
            )
        };
        let (g0, g1) = (gf(&mut times[0]), gf(&mut times[1]));
        println!(
            "{:<16} {:>15}  {:>19}  {:>19}  {:>6.2} ({:.2}..{:.2})",
            sh.name,
            format!("{}x{}x{}", sh.m, sh.k, sh.n),
            g0,
            g1,
            quantile(&mut ratios, 0.5),
            quantile(&mut ratios, 0.25),
            quantile(&mut ratios, 0.75)
        );
    }
}

/// The positional name filter among criterion's arguments (skipping option values).
fn name_filter(args: &[String]) -> Option<&str> {
    const TAKES_VALUE: &[&str] = &[
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--profile-time",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--nresamples",
        "--output-format",
        "--plotting-backend",
        "--color",
        "-c",
        "-s",
        "-b",
    ];
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
        } else if TAKES_VALUE.contains(&a.as_str()) {
            skip = true;
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

fn main() {
    println!(
        "sgemm backend in use: {} (this bench runs every available backend)",
        sgemm_backend()
    );
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    criterion_part(&mut c);
    c.final_summary();
    // The ratio table only under `cargo bench` (cargo passes `--bench`), not `cargo test`.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--bench") {
        ratio_table(name_filter(&args));
    }
}

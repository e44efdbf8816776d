//! Convolution throughput measured in CPU time, for a machine shared with other work.
//!
//! Wall-clock figures (the `conv` criterion bench) fall when other processes compete for the
//! cores. This harness instead runs each convolution of `conv` in a one-thread rayon pool and
//! divides its floating-point operations by the CPU time the process's threads actually got
//! (Linux `/proc/self/task/*/schedstat`), which time-slicing does not inflate. It prints, per
//! shape and op, the median over the runs of wall time and CPU time and the GFLOP/s per core
//! from CPU time, then the same op's median wall time in a two-thread pool, and the load
//! average before and after. FLOP counts are as in `conv` (forward `2*N*O*OH*OW*C*KH*KW`,
//! backward with dx twice that). Outputs are reused (`_into` variants), as in training.
//!
//! Run: `cargo bench --bench conv_cpu_time` (set `FRACTURE_BENCH_RUNS`, default 7).

use fracture_tensor::{
    conv2d_backward_into, conv2d_forward_into, conv2d_output_shape, Conv2dGrads, ConvParams,
    ConvWorkspace, Tensor4,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// CPU time consumed so far by all threads of this process, in seconds (None off Linux).
fn cpu_seconds() -> Option<f64> {
    let mut total_ns = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(entry.ok()?.path().join("schedstat")).ok()?;
        total_ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total_ns as f64 * 1e-9)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median wall and CPU seconds of `runs` calls of `f` (after one warm-up call).
fn measure(runs: usize, f: &mut dyn FnMut()) -> (f64, Option<f64>) {
    f();
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let c0 = cpu_seconds();
        let t0 = Instant::now();
        f();
        walls.push(t0.elapsed().as_secs_f64());
        if let (Some(c0), Some(c1)) = (c0, cpu_seconds()) {
            cpus.push(c1 - c0);
        }
    }
    let cpu = (cpus.len() == runs).then(|| median(cpus));
    (median(walls), cpu)
}

fn random(rng: &mut ChaCha8Rng, shape: [usize; 4]) -> Tensor4 {
    let n = shape.iter().product();
    Tensor4::from_vec(shape, (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
        .expect("length matches shape")
}

fn main() {
    let runs: usize = std::env::var("FRACTURE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
        .max(1);
    // (input, output channels, padding), all 3x3 stride 1 as in the `conv` bench.
    let shapes = [
        ([32, 1, 128, 128], 32, 1),
        ([32, 32, 64, 64], 64, 1),
        ([32, 64, 32, 32], 128, 1),
        ([32, 128, 16, 16], 256, 1),
        ([2, 3, 320, 320], 16, 0),
    ];
    let pools: Vec<rayon::ThreadPool> = [1, 2]
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .expect("thread pool")
        })
        .collect();
    println!("load average before: {}", load_average());
    println!(
        "{:<44} {:>10} {:>10} {:>12} {:>12}",
        "op (1 thread unless noted)", "wall ms", "cpu ms", "GFLOP/s/cpu", "2-thr wall ms"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for (x_shape, o, pad) in shapes {
        let w_shape = [o, x_shape[1], 3, 3];
        let p = ConvParams {
            stride: [1, 1],
            padding: [pad, pad],
            ..ConvParams::default()
        };
        let out = conv2d_output_shape(x_shape, w_shape, p).expect("valid bench shape");
        let x = random(&mut rng, x_shape);
        let w = random(&mut rng, w_shape);
        let dy = random(&mut rng, out);
        let flops = 2.0 * out.iter().product::<usize>() as f64 * (x_shape[1] * 9) as f64;
        let [n, c, h, _] = x_shape;
        let pad_name = if pad == 1 {
            String::new()
        } else {
            format!("_p{pad}")
        };
        let name = format!("n{n}_c{c}_o{o}_{h}x{h}_k3{pad_name}");
        let mut ops: Vec<(&str, f64, bool)> =
            vec![("fwd", flops, false), ("bwd", 2.0 * flops, true)];
        if c <= 3 {
            ops.push(("bwd_nodx", flops, false));
        }
        for (op, op_flops, need_dx) in ops {
            let mut results = Vec::new();
            for pool in &pools {
                let mut ws = ConvWorkspace::default();
                let mut y = Tensor4::zeros([0, 0, 0, 0]);
                let mut grads = Conv2dGrads {
                    dx: None,
                    dw: Tensor4::zeros([0, 0, 0, 0]),
                    db: Vec::new(),
                };
                let r = pool.install(|| {
                    measure(runs, &mut || {
                        let res = if op == "fwd" {
                            conv2d_forward_into(&x, &w, None, p, &mut ws, &mut y)
                        } else {
                            conv2d_backward_into(&x, &w, &dy, p, need_dx, &mut ws, &mut grads)
                        };
                        res.expect("convolution");
                    })
                });
                results.push(r);
            }
            let (wall1, cpu1) = results[0];
            let (wall2, _) = results[1];
            let (cpu_ms, gflops) = match cpu1 {
                Some(c) => (
                    format!("{:.2}", c * 1e3),
                    format!("{:.1}", op_flops / c / 1e9),
                ),
                None => ("n/a".into(), "n/a".into()),
            };
            println!(
                "{:<44} {:>10.2} {:>10} {:>12} {:>12.2}",
                format!("conv2d_{op}_{name}"),
                wall1 * 1e3,
                cpu_ms,
                gflops,
                wall2 * 1e3
            );
        }
    }
    println!("load average after: {}", load_average());
}

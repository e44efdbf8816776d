//! The fast kernels give bit-identical results whatever the rayon thread count: every shape is
//! run in pools of 1, 2 and 3 threads and the outputs compared with `==`. The shapes cover the
//! batch-parallel path (N >= threads), the split-GEMM path (N < threads), the fixed dw chunks by
//! batch index (N >= 8) and by output rows (N < 8), im2col in several row blocks, and the
//! pointwise 1x1 special case; the direct grouped / depthwise kernels; and the fused batch norm
//! -> activation -> pool kernel on both of its schedules.

mod common;

use common::{random_tensor, random_vec, rng};
use fracture_tensor::{
    bn_act_pool_backward, bn_act_pool_forward, conv2d_backward, conv2d_forward,
    global_avg_pool_backward, global_avg_pool_forward, max_pool2d_backward, max_pool2d_forward,
    relu_backward, relu_forward, BnActCacheRequest, BnActPoolParams, BnActStats, ConvParams,
    ConvWorkspace, PoolParams, Tensor4,
};

type Outputs = Vec<Vec<f32>>;

fn run_all(x: &Tensor4, w: &Tensor4, b: &[f32], p: ConvParams, dy_seed: u64) -> Outputs {
    let mut ws = ConvWorkspace::default();
    let y = conv2d_forward(x, w, Some(b), p, &mut ws).unwrap();
    let dy = random_tensor(&mut rng(dy_seed), y.shape());
    let g = conv2d_backward(x, w, &dy, p, true, &mut ws).unwrap();
    let (pooled, arg) = max_pool2d_forward(&y, PoolParams::square(3, 2, 1)).unwrap();
    let dpool = max_pool2d_backward(&pooled, &arg, y.shape()).unwrap();
    let r = relu_forward(&y);
    let dr = relu_backward(&r, &dy).unwrap();
    let gap = global_avg_pool_forward(&y);
    let dgap = global_avg_pool_backward(&gap, y.shape()).unwrap();
    vec![
        y.into_vec(),
        g.dx.unwrap().into_vec(),
        g.dw.into_vec(),
        g.db,
        pooled.into_vec(),
        arg.iter().map(|&i| i as f32).collect(),
        dpool.into_vec(),
        dr.into_vec(),
        gap.into_vec(),
        dgap.into_vec(),
    ]
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let cases = [
        // N < threads (split GEMM, dw split by rows), 3x3 padded.
        (
            [1, 3, 20, 17],
            [8, 3, 3, 3],
            ConvParams {
                stride: [1, 1],
                padding: [1, 1],
                ..ConvParams::default()
            },
        ),
        // N == 2, strided and non-square.
        (
            [2, 4, 15, 22],
            [5, 4, 3, 2],
            ConvParams {
                stride: [2, 1],
                padding: [1, 0],
                ..ConvParams::default()
            },
        ),
        // N >= 8: dw chunks by batch index.
        (
            [9, 2, 12, 12],
            [6, 2, 3, 3],
            ConvParams {
                stride: [1, 1],
                padding: [1, 1],
                ..ConvParams::default()
            },
        ),
        // Several im2col row blocks per image, batch-parallel and split paths.
        (
            [1, 16, 70, 70],
            [3, 16, 5, 5],
            ConvParams {
                stride: [1, 1],
                padding: [2, 2],
                ..ConvParams::default()
            },
        ),
        (
            [2, 16, 70, 70],
            [3, 16, 5, 5],
            ConvParams {
                stride: [1, 1],
                padding: [2, 2],
                ..ConvParams::default()
            },
        ),
        // Pointwise, both paths.
        ([1, 6, 9, 11], [7, 6, 1, 1], ConvParams::default()),
        ([5, 6, 9, 11], [7, 6, 1, 1], ConvParams::default()),
    ];
    for (i, (xs, wsh, p)) in cases.into_iter().enumerate() {
        let mut r = rng(100 + i as u64);
        let x = random_tensor(&mut r, xs);
        let w = random_tensor(&mut r, wsh);
        let b = random_vec(&mut r, wsh[0]);
        let mut reference: Option<Outputs> = None;
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let out = pool.install(|| run_all(&x, &w, &b, p, 999));
            match &reference {
                None => reference = Some(out),
                Some(want) => {
                    for (k, (got, want)) in out.iter().zip(want).enumerate() {
                        let same = got.len() == want.len()
                            && got
                                .iter()
                                .zip(want)
                                .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "case {i}, output #{k}: {threads} threads differ from 1 thread"
                        );
                    }
                }
            }
        }
    }
}

/// Grouped and depthwise convolutions (the direct kernels): forward, dx, dw and db are
/// bit-identical in pools of 1, 2 and 3 threads, and dw / db do not depend on whether dx was
/// requested (the depthwise backward fuses both gradients in one sweep when it is).
#[test]
fn grouped_results_do_not_depend_on_thread_count() {
    let p = |s: usize, pad: usize, groups: usize| ConvParams {
        stride: [s, s],
        padding: [pad, pad],
        groups,
    };
    let cases = [
        // Depthwise 3x3 stride 1, 5x5 stride 2, 3x3 stride 2 on an odd plane.
        ([4, 8, 17, 19], [8, 1, 3, 3], p(1, 1, 8)),
        ([9, 6, 16, 15], [6, 1, 5, 5], p(2, 2, 6)),
        ([1, 5, 11, 7], [5, 1, 3, 3], p(2, 1, 5)),
        // Depthwise multiplier 2, and three groups of two channels.
        ([2, 3, 10, 10], [6, 1, 3, 3], p(1, 1, 3)),
        ([3, 6, 9, 9], [9, 2, 3, 3], p(1, 1, 3)),
    ];
    for (i, (xs, wsh, p)) in cases.into_iter().enumerate() {
        let mut r = rng(200 + i as u64);
        let x = random_tensor(&mut r, xs);
        let w = random_tensor(&mut r, wsh);
        let b = random_vec(&mut r, wsh[0]);
        let run = || {
            let mut ws = ConvWorkspace::default();
            let y = conv2d_forward(&x, &w, Some(&b), p, &mut ws).unwrap();
            let dy = random_tensor(&mut rng(999), y.shape());
            let g = conv2d_backward(&x, &w, &dy, p, true, &mut ws).unwrap();
            let g2 = conv2d_backward(&x, &w, &dy, p, false, &mut ws).unwrap();
            assert_eq!(
                (&g.dw, &g.db),
                (&g2.dw, &g2.db),
                "case {i}: dw depends on need_dx"
            );
            vec![
                y.into_vec(),
                g.dx.unwrap().into_vec(),
                g.dw.into_vec(),
                g.db,
            ]
        };
        let mut reference: Option<Outputs> = None;
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let out = pool.install(run);
            match &reference {
                None => reference = Some(out),
                Some(want) => {
                    for (k, (got, want)) in out.iter().zip(want).enumerate() {
                        let same = got.len() == want.len()
                            && got
                                .iter()
                                .zip(want)
                                .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "grouped case {i}, output #{k}: {threads} threads differ from 1 thread"
                        );
                    }
                }
            }
        }
    }
}

/// The fused batch norm -> ReLU / ReLU6 -> [2x2 max pool] kernel: output, batch statistics,
/// dx, dgamma and dbeta are bit-identical in pools of 1, 2 and 3 threads, on planes below and
/// above the size (1024 values) from which each channel is normalised by the task that
/// computed its statistics, with both statistics, both activations, pool on and off.
#[test]
fn bn_act_pool_results_do_not_depend_on_thread_count() {
    let shapes = [[3, 5, 7, 9], [2, 3, 33, 34], [9, 4, 16, 17]];
    let mut case = 0;
    for (si, shape) in shapes.into_iter().enumerate() {
        for (pool, batch, cap) in [
            (true, true, f32::INFINITY),
            (false, true, 6.0),
            (true, false, 6.0),
            (false, false, f32::INFINITY),
        ] {
            case += 1;
            let mut r = rng(300 + si as u64);
            let c = shape[1];
            let x = random_tensor(&mut r, shape);
            let gamma: Vec<f32> = random_vec(&mut r, c).iter().map(|v| 5.0 * v).collect();
            let beta = random_vec(&mut r, c);
            let var: Vec<f32> = random_vec(&mut r, c)
                .iter()
                .map(|v| 1.0 + 0.5 * v)
                .collect();
            let mean = random_vec(&mut r, c);
            let stats = if batch {
                BnActStats::Batch
            } else {
                BnActStats::Given {
                    mean: &mean,
                    var: &var,
                }
            };
            let p = BnActPoolParams {
                gamma: &gamma,
                beta: &beta,
                stats,
                eps: 1e-5,
                cap,
                pool,
            };
            let run = || {
                let out = bn_act_pool_forward(&x, &p, Some(BnActCacheRequest::default())).unwrap();
                let dy = random_tensor(&mut rng(999), out.y.shape());
                let g = bn_act_pool_backward(out.cache.as_ref().unwrap(), &dy).unwrap();
                let stats: Vec<f32> = out
                    .batch_stats
                    .unwrap_or_default()
                    .iter()
                    .flat_map(|s| [s.mean as f32, s.var as f32])
                    .collect();
                vec![out.y.into_vec(), stats, g.dx.into_vec(), g.dgamma, g.dbeta]
            };
            let mut reference: Option<Outputs> = None;
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let out = pool.install(run);
                match &reference {
                    None => reference = Some(out),
                    Some(want) => {
                        for (k, (got, want)) in out.iter().zip(want).enumerate() {
                            let same = got.len() == want.len()
                                && got
                                    .iter()
                                    .zip(want)
                                    .all(|(a, b)| a.to_bits() == b.to_bits());
                            assert!(
                                same,
                                "bn_act_pool case {case}, output #{k}: {threads} threads differ from 1 thread"
                            );
                        }
                    }
                }
            }
        }
    }
}

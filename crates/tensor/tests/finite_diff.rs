//! Finite differences: central differences in f64 confirm every backward pass.
//!
//! For each op a tiny f64 forward is written here (independent of the crate), the scalar loss
//! `L = sum(y * r)` with a random `r` is differentiated numerically with respect to every input
//! element, and the result is compared with the crate's backward given `dy = r`, for both the
//! fast and the naive kernels. The f32 inputs are exactly representable in f64, so the only
//! differences are the f32 rounding of the analytical gradients.

mod common;

use common::{random_tensor, random_vec, rng};
use fracture_tensor::{
    bn_act_pool_backward, bn_act_pool_forward, naive, BnActCacheRequest, BnActPoolParams,
    BnActStats, ConvParams, ConvWorkspace, PoolParams, Tensor4,
};

const EPS: f64 = 1e-6;

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| f64::from(v)).collect()
}

/// Central difference of `loss` with respect to every element of `at`.
fn numeric_grad(at: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut p = at.to_vec();
    (0..at.len())
        .map(|i| {
            let orig = p[i];
            p[i] = orig + EPS;
            let up = loss(&p);
            p[i] = orig - EPS;
            let down = loss(&p);
            p[i] = orig;
            (up - down) / (2.0 * EPS)
        })
        .collect()
}

fn assert_grad(what: &str, analytic: &[f32], numeric: &[f64]) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: length");
    for (i, (&a, &n)) in analytic.iter().zip(numeric).enumerate() {
        let err = (f64::from(a) - n).abs();
        assert!(
            err <= 1e-4 * n.abs() + 2e-5,
            "{what}[{i}]: analytic {a} vs numeric {n} (|diff| {err:e})"
        );
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// f64 direct convolution: x [n,c,h,w], w [o,c/groups,kh,kw].
#[allow(clippy::too_many_arguments)]
fn conv64(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    wsh: [usize; 4],
    b: &[f64],
    p: ConvParams,
) -> Vec<f64> {
    let [n, xc, h, wd] = xs;
    // c: input channels per group; output channel oi reads input channels of group oi / og.
    let [o, c, kh, kw] = wsh;
    let og = o / p.groups;
    let oh = (h + 2 * p.padding[0] - kh) / p.stride[0] + 1;
    let ow = (wd + 2 * p.padding[1] - kw) / p.stride[1] + 1;
    let mut y = vec![0.0; n * o * oh * ow];
    for ni in 0..n {
        for oi in 0..o {
            for yi in 0..oh {
                for xi in 0..ow {
                    let mut acc = b[oi];
                    for ci in 0..c {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let ih = (yi * p.stride[0] + ki) as isize - p.padding[0] as isize;
                                let iw = (xi * p.stride[1] + kj) as isize - p.padding[1] as isize;
                                if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < wd {
                                    let xci = oi / og * c + ci;
                                    acc += x
                                        [((ni * xc + xci) * h + ih as usize) * wd + iw as usize]
                                        * w[((oi * c + ci) * kh + ki) * kw + kj];
                                }
                            }
                        }
                    }
                    y[((ni * o + oi) * oh + yi) * ow + xi] = acc;
                }
            }
        }
    }
    y
}

#[test]
fn conv2d_backward_matches_finite_differences() {
    let cases = [
        (
            [2, 3, 7, 6],
            [4, 3, 3, 2],
            ConvParams {
                stride: [2, 1],
                padding: [1, 0],
                ..ConvParams::default()
            },
        ),
        (
            [1, 2, 5, 5],
            [3, 2, 5, 5],
            ConvParams {
                stride: [1, 1],
                padding: [2, 2],
                ..ConvParams::default()
            },
        ),
        ([2, 2, 6, 9], [2, 2, 1, 1], ConvParams::default()),
        (
            [1, 3, 8, 7],
            [2, 3, 3, 3],
            ConvParams {
                stride: [3, 3],
                padding: [2, 2],
                ..ConvParams::default()
            },
        ),
        (
            [3, 1, 4, 4],
            [2, 1, 2, 3],
            ConvParams {
                stride: [1, 2],
                padding: [0, 1],
                ..ConvParams::default()
            },
        ),
    ];
    for (i, (xs, wsh, p)) in cases.into_iter().enumerate() {
        check_conv_case(i, xs, wsh, p);
    }
}

/// Grouped and depthwise convolutions (the direct kernels): depthwise 3x3 and 5x5 with strides
/// 1 and 2, a depthwise multiplier of 2, and two groups of two channels with a non-square
/// kernel and stride.
#[test]
fn grouped_conv2d_backward_matches_finite_differences() {
    let p = |s: [usize; 2], pad: [usize; 2], groups: usize| ConvParams {
        stride: s,
        padding: pad,
        groups,
    };
    let cases = [
        ([2, 4, 7, 6], [4, 1, 3, 3], p([1, 1], [1, 1], 4)),
        ([1, 3, 9, 8], [3, 1, 5, 5], p([2, 2], [2, 2], 3)),
        ([2, 3, 6, 7], [3, 1, 3, 3], p([2, 2], [1, 1], 3)),
        ([1, 2, 5, 5], [4, 1, 3, 3], p([2, 1], [1, 0], 2)),
        ([2, 4, 6, 5], [6, 2, 3, 2], p([1, 2], [1, 0], 2)),
    ];
    for (i, (xs, wsh, p)) in cases.into_iter().enumerate() {
        check_conv_case(100 + i, xs, wsh, p);
    }
}

/// Compares the fast and naive backward passes of one convolution with central differences.
fn check_conv_case(i: usize, xs: [usize; 4], wsh: [usize; 4], p: ConvParams) {
    let mut r = rng(20 + i as u64);
    let x = random_tensor(&mut r, xs);
    let w = random_tensor(&mut r, wsh);
    let b = random_vec(&mut r, wsh[0]);
    let (x64, w64, b64) = (to64(x.as_slice()), to64(w.as_slice()), to64(&b));
    let out = fracture_tensor::conv2d_output_shape(xs, wsh, p).unwrap();
    let dy = random_tensor(&mut r, out);
    let r64 = to64(dy.as_slice());

    let ndx = numeric_grad(&x64, |v| dot(&conv64(v, xs, &w64, wsh, &b64, p), &r64));
    let ndw = numeric_grad(&w64, |v| dot(&conv64(&x64, xs, v, wsh, &b64, p), &r64));
    let ndb = numeric_grad(&b64, |v| dot(&conv64(&x64, xs, &w64, wsh, v, p), &r64));

    // The f64 forward agrees with ours, so the loss being differentiated is the right one.
    let y = fracture_tensor::conv2d_forward(&x, &w, Some(&b), p, &mut ConvWorkspace::default())
        .unwrap();
    assert_grad(
        &format!("case {i} y"),
        y.as_slice(),
        &conv64(&x64, xs, &w64, wsh, &b64, p),
    );

    let fast =
        fracture_tensor::conv2d_backward(&x, &w, &dy, p, true, &mut ConvWorkspace::default())
            .unwrap();
    let slow = naive::conv2d_backward(&x, &w, &dy, p, true).unwrap();
    for (kind, g) in [("fast", fast), ("naive", slow)] {
        assert_grad(
            &format!("case {i} {kind} dx"),
            g.dx.unwrap().as_slice(),
            &ndx,
        );
        assert_grad(&format!("case {i} {kind} dw"), g.dw.as_slice(), &ndw);
        assert_grad(&format!("case {i} {kind} db"), &g.db, &ndb);
    }
}

/// f64 max pooling with -inf padding.
fn max_pool64(x: &[f64], xs: [usize; 4], p: PoolParams) -> Vec<f64> {
    let [n, c, h, w] = xs;
    let oh = (h + 2 * p.padding[0] - p.kernel[0]) / p.stride[0] + 1;
    let ow = (w + 2 * p.padding[1] - p.kernel[1]) / p.stride[1] + 1;
    let mut y = vec![f64::NEG_INFINITY; n * c * oh * ow];
    for nc in 0..n * c {
        for yi in 0..oh {
            for xi in 0..ow {
                let out = &mut y[(nc * oh + yi) * ow + xi];
                for ki in 0..p.kernel[0] {
                    for kj in 0..p.kernel[1] {
                        let ih = (yi * p.stride[0] + ki) as isize - p.padding[0] as isize;
                        let iw = (xi * p.stride[1] + kj) as isize - p.padding[1] as isize;
                        if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < w {
                            *out = out.max(x[(nc * h + ih as usize) * w + iw as usize]);
                        }
                    }
                }
            }
        }
    }
    y
}

#[test]
fn max_pool2d_backward_matches_finite_differences() {
    let cases = [
        ([2, 2, 6, 6], PoolParams::square(2, 2, 0)),
        ([1, 3, 7, 5], PoolParams::square(3, 2, 1)),
        (
            [2, 1, 5, 8],
            PoolParams {
                kernel: [2, 3],
                stride: [1, 2],
                padding: [1, 1],
            },
        ),
    ];
    for (i, (xs, p)) in cases.into_iter().enumerate() {
        let mut r = rng(40 + i as u64);
        let x = random_tensor(&mut r, xs);
        let x64 = to64(x.as_slice());
        let out = fracture_tensor::max_pool2d_output_shape(xs, p).unwrap();
        let dy = random_tensor(&mut r, out);
        let r64 = to64(dy.as_slice());
        let ndx = numeric_grad(&x64, |v| dot(&max_pool64(v, xs, p), &r64));
        let (_, arg) = fracture_tensor::max_pool2d_forward(&x, p).unwrap();
        let dx = fracture_tensor::max_pool2d_backward(&dy, &arg, xs).unwrap();
        assert_grad(&format!("case {i} fast dx"), dx.as_slice(), &ndx);
        let (_, arg) = naive::max_pool2d_forward(&x, p).unwrap();
        let dx = naive::max_pool2d_backward(&dy, &arg, xs).unwrap();
        assert_grad(&format!("case {i} naive dx"), dx.as_slice(), &ndx);
    }
}

#[test]
fn global_avg_pool_backward_matches_finite_differences() {
    let xs = [2, 3, 4, 5];
    let mut r = rng(60);
    let x = random_tensor(&mut r, xs);
    let x64 = to64(x.as_slice());
    let dy = random_tensor(&mut r, [2, 3, 1, 1]);
    let r64 = to64(dy.as_slice());
    let gap =
        |v: &[f64]| -> Vec<f64> { v.chunks(20).map(|p| p.iter().sum::<f64>() / 20.0).collect() };
    let ndx = numeric_grad(&x64, |v| dot(&gap(v), &r64));
    let fast = fracture_tensor::global_avg_pool_backward(&dy, xs).unwrap();
    assert_grad("fast dx", fast.as_slice(), &ndx);
    assert_grad(
        "naive dx",
        naive::global_avg_pool_backward(&dy, xs).unwrap().as_slice(),
        &ndx,
    );
    assert_grad(
        "fast y",
        fracture_tensor::global_avg_pool_forward(&x).as_slice(),
        &gap(&x64),
    );
}

#[test]
fn relu_backward_matches_finite_differences() {
    let xs = [2, 3, 4, 4];
    let mut r = rng(80);
    // Keep inputs away from the kink at 0, where the derivative is undefined.
    let data: Vec<f32> = random_vec(&mut r, 96)
        .into_iter()
        .map(|v| if v.abs() < 0.01 { 0.5 } else { v })
        .collect();
    let x = Tensor4::from_vec(xs, data).unwrap();
    let x64 = to64(x.as_slice());
    let dy = random_tensor(&mut r, xs);
    let r64 = to64(dy.as_slice());
    let ndx = numeric_grad(&x64, |v| {
        v.iter().zip(&r64).map(|(x, r)| x.max(0.0) * r).sum()
    });
    let y = fracture_tensor::relu_forward(&x);
    assert_grad(
        "fast dx",
        fracture_tensor::relu_backward(&y, &dy).unwrap().as_slice(),
        &ndx,
    );
    let y = naive::relu_forward(&x);
    assert_grad(
        "naive dx",
        naive::relu_backward(&y, &dy).unwrap().as_slice(),
        &ndx,
    );
}

/// f64 batch norm (batch statistics when `given` is `None`) -> ReLU capped at `cap` -> 2x2
/// max pool when `pool`.
#[allow(clippy::too_many_arguments)]
fn bn_act_pool64(
    x: &[f64],
    xs: [usize; 4],
    gamma: &[f64],
    beta: &[f64],
    given: Option<(&[f64], &[f64])>,
    eps: f64,
    cap: f64,
    pool: bool,
) -> Vec<f64> {
    let [n, c, h, w] = xs;
    let hw = h * w;
    let mut z = vec![0.0; x.len()];
    for ci in 0..c {
        let vals = || (0..n).flat_map(move |ni| (0..hw).map(move |j| (ni * c + ci) * hw + j));
        let (mean, var) = match given {
            Some((m, v)) => (m[ci], v[ci]),
            None => {
                let m = (n * hw) as f64;
                let mean = vals().map(|i| x[i]).sum::<f64>() / m;
                (mean, vals().map(|i| (x[i] - mean).powi(2)).sum::<f64>() / m)
            }
        };
        for i in vals() {
            let t = (x[i] - mean) / (var + eps).sqrt();
            z[i] = (t * gamma[ci] + beta[ci]).clamp(0.0, cap);
        }
    }
    if pool {
        max_pool64(&z, xs, PoolParams::square(2, 2, 0))
    } else {
        z
    }
}

#[test]
fn bn_act_pool_backward_matches_finite_differences() {
    // (shape, pool, batch statistics, cap): odd sizes leave a row or column out of the pool.
    let cases = [
        ([2, 2, 5, 4], true, true, f64::INFINITY),
        ([1, 3, 3, 3], false, true, 6.0),
        ([2, 2, 4, 5], true, false, 6.0),
        ([3, 1, 2, 3], false, false, f64::INFINITY),
    ];
    let eps = 1e-3;
    for (i, (xs, pool, batch, cap)) in cases.into_iter().enumerate() {
        let c = xs[1];
        let mut r = rng(90 + i as u64);
        let x = random_tensor(&mut r, xs);
        let gamma: Vec<f32> = random_vec(&mut r, c).iter().map(|v| 5.0 * v).collect();
        let beta = random_vec(&mut r, c);
        let mean = random_vec(&mut r, c);
        let var: Vec<f32> = random_vec(&mut r, c)
            .iter()
            .map(|v| 1.0 + 0.5 * v)
            .collect();
        let (x64, g64, b64) = (to64(x.as_slice()), to64(&gamma), to64(&beta));
        let (m64, v64) = (to64(&mean), to64(&var));
        let given = (!batch).then_some((&m64[..], &v64[..]));
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
            eps: eps as f32,
            cap: cap as f32,
            pool,
        };
        let dy = random_tensor(&mut r, p.output_shape(xs));
        let r64 = to64(dy.as_slice());
        let f = |x: &[f64], g: &[f64], b: &[f64]| {
            dot(&bn_act_pool64(x, xs, g, b, given, eps, cap, pool), &r64)
        };
        let ndx = numeric_grad(&x64, |v| f(v, &g64, &b64));
        let ndg = numeric_grad(&g64, |v| f(&x64, v, &b64));
        let ndb = numeric_grad(&b64, |v| f(&x64, &g64, v));
        let out = bn_act_pool_forward(&x, &p, Some(BnActCacheRequest::default())).unwrap();
        let fast = bn_act_pool_backward(out.cache.as_ref().unwrap(), &dy).unwrap();
        let slow = naive::bn_act_pool_backward(&x, &p, &dy).unwrap();
        for (kind, g) in [("fast", &fast), ("naive", &slow)] {
            assert_grad(&format!("case {i} {kind} dx"), g.dx.as_slice(), &ndx);
            assert_grad(&format!("case {i} {kind} dgamma"), &g.dgamma, &ndg);
            assert_grad(&format!("case {i} {kind} dbeta"), &g.dbeta, &ndb);
        }
        // The forward too, against the f64 one.
        let y64 = bn_act_pool64(&x64, xs, &g64, &b64, given, eps, cap, pool);
        assert_grad(&format!("case {i} fast y"), out.y.as_slice(), &y64);
    }
}

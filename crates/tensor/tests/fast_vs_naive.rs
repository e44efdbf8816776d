//! proptest: the fast kernels agree with the naive ones on random shapes (batch 1-3, channels
//! 1-9, height and width 1-17 independently, kernel 1-5, stride 1-3, padding 0-2, each axis
//! drawn separately; grouped and depthwise convolutions with 1-12 channels), and a shape whose
//! output would be empty is an error from both, not a panic. The fused batch norm -> ReLU /
//! ReLU6 -> [2x2 max pool] kernel against its oracle on batch 1-4, channels 1-6, height and
//! width 1-13, pool on/off, ReLU/ReLU6, batch/given statistics.

mod common;

use common::{check_close, random_tensor, random_vec, rng};
use fracture_tensor::{
    conv2d_output_shape, max_pool2d_output_shape, naive, BatchStats, BnActCacheRequest,
    BnActPoolParams, BnActStats, Conv2dGrads, ConvParams, ConvWorkspace, PoolParams, Tensor4,
    TensorError,
};
use proptest::prelude::*;

/// GEMM sums in f32 against f64 nested loops: allow for rounding over a few thousand terms.
const REL: f32 = 1e-4;
const ABS: f32 = 1e-4;

#[derive(Debug, Clone)]
struct Case {
    x: [usize; 4],
    o: usize,
    k: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    bias: bool,
    seed: u64,
    /// Convolution groups (1 except in [`grouped_case`]).
    groups: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..=3, 1usize..=9, 1usize..=17, 1usize..=17),
        1usize..=9,
        (1usize..=5, 1usize..=5),
        (1usize..=3, 1usize..=3),
        (0usize..=2, 0usize..=2),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|((n, c, h, w), o, k, s, p, bias, seed)| Case {
            x: [n, c, h, w],
            o,
            k: [k.0, k.1],
            stride: [s.0, s.1],
            padding: [p.0, p.1],
            bias,
            seed,
            groups: 1,
        })
}

/// Grouped convolutions: batch 1-3, channels 1-12 split into a random divisor of groups
/// (depthwise, groups = channels, in about a third of the cases), 1-3 output channels per
/// group, height and width 1-17, kernel 1-5, stride 1-2, padding 0-2.
fn grouped_case() -> impl Strategy<Value = Case> {
    (
        (1usize..=3, 1usize..=12, 1usize..=17, 1usize..=17),
        (0usize..12, 0usize..3, 1usize..=3),
        (1usize..=5, 1usize..=5),
        (1usize..=2, 1usize..=2),
        (0usize..=2, 0usize..=2),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |((n, c, h, w), (pick, mode, per_group), k, s, p, bias, seed)| {
                let divisors: Vec<usize> = (1..=c).filter(|g| c % g == 0).collect();
                let groups = if mode == 0 {
                    c
                } else {
                    divisors[pick % divisors.len()]
                };
                Case {
                    x: [n, c, h, w],
                    o: groups * per_group,
                    k: [k.0, k.1],
                    stride: [s.0, s.1],
                    padding: [p.0, p.1],
                    bias,
                    seed,
                    groups,
                }
            },
        )
}

fn is_empty_output<T>(r: &Result<T, TensorError>) -> bool {
    matches!(r, Err(TensorError::EmptyOutput { .. }))
}

fn conv_case(t: &Case) -> Result<(), TestCaseError> {
    let w_shape = [t.o, t.x[1] / t.groups, t.k[0], t.k[1]];
    let p = ConvParams {
        stride: t.stride,
        padding: t.padding,
        groups: t.groups,
    };
    let mut r = rng(t.seed);
    let x = random_tensor(&mut r, t.x);
    let w = random_tensor(&mut r, w_shape);
    let b = t.bias.then(|| random_vec(&mut r, t.o));
    let mut ws = ConvWorkspace::default();
    match conv2d_output_shape(t.x, w_shape, p) {
        Err(e) => {
            prop_assert!(matches!(e, TensorError::EmptyOutput { .. }), "{}", e);
            let fast = fracture_tensor::conv2d_forward(&x, &w, b.as_deref(), p, &mut ws);
            prop_assert!(is_empty_output(&fast), "{:?}", fast.err());
            let slow = naive::conv2d_forward(&x, &w, b.as_deref(), p);
            prop_assert!(is_empty_output(&slow), "{:?}", slow.err());
            // Backward with any dy must fail the same way.
            let dy = random_tensor(&mut r, [t.x[0], t.o, 1, 1]);
            let fast = fracture_tensor::conv2d_backward(&x, &w, &dy, p, true, &mut ws);
            prop_assert!(is_empty_output(&fast), "{:?}", fast.err());
            let slow = naive::conv2d_backward(&x, &w, &dy, p, true);
            prop_assert!(is_empty_output(&slow), "{:?}", slow.err());
        }
        Ok(out) => {
            let fast = fracture_tensor::conv2d_forward(&x, &w, b.as_deref(), p, &mut ws).unwrap();
            let slow = naive::conv2d_forward(&x, &w, b.as_deref(), p).unwrap();
            prop_assert_eq!(fast.shape(), out);
            check_close("y", fast.as_slice(), slow.as_slice(), REL, ABS)
                .map_err(TestCaseError::fail)?;

            let dy = random_tensor(&mut r, out);
            let need_dx = !t.seed.is_multiple_of(4);
            let fast = fracture_tensor::conv2d_backward(&x, &w, &dy, p, need_dx, &mut ws).unwrap();
            let slow = naive::conv2d_backward(&x, &w, &dy, p, need_dx).unwrap();
            check_close("dw", fast.dw.as_slice(), slow.dw.as_slice(), REL, ABS)
                .map_err(TestCaseError::fail)?;
            check_close("db", &fast.db, &slow.db, REL, ABS).map_err(TestCaseError::fail)?;
            prop_assert_eq!(fast.dx.is_some(), need_dx);
            if let (Some(f), Some(s)) = (&fast.dx, &slow.dx) {
                check_close("dx", f.as_slice(), s.as_slice(), REL, ABS)
                    .map_err(TestCaseError::fail)?;
            }
        }
    }
    Ok(())
}

fn pool_case(t: &Case) -> Result<(), TestCaseError> {
    let p = PoolParams {
        kernel: t.k,
        stride: t.stride,
        padding: t.padding,
    };
    let mut r = rng(t.seed);
    let x = random_tensor(&mut r, t.x);
    match max_pool2d_output_shape(t.x, p) {
        Err(e) => {
            prop_assert!(
                matches!(
                    e,
                    TensorError::EmptyOutput { .. } | TensorError::InvalidParameter { .. }
                ),
                "{}",
                e
            );
            let kind = std::mem::discriminant(&e);
            let fast = fracture_tensor::max_pool2d_forward(&x, p).err();
            prop_assert_eq!(
                fast.as_ref().map(std::mem::discriminant),
                Some(kind),
                "{:?}",
                fast
            );
            let slow = naive::max_pool2d_forward(&x, p).err();
            prop_assert_eq!(
                slow.as_ref().map(std::mem::discriminant),
                Some(kind),
                "{:?}",
                slow
            );
        }
        Ok(out) => {
            let (yf, af) = fracture_tensor::max_pool2d_forward(&x, p).unwrap();
            let (ys, as_) = naive::max_pool2d_forward(&x, p).unwrap();
            prop_assert_eq!(yf.shape(), out);
            // Same comparisons in the same order: bit-identical, same argmax.
            prop_assert_eq!(yf.as_slice(), ys.as_slice());
            prop_assert_eq!(&af, &as_);
            let dy = random_tensor(&mut r, out);
            let dxf = fracture_tensor::max_pool2d_backward(&dy, &af, t.x).unwrap();
            let dxs = naive::max_pool2d_backward(&dy, &as_, t.x).unwrap();
            prop_assert_eq!(dxf.as_slice(), dxs.as_slice());

            // The `_into` variants, over buffers holding garbage of another size.
            let mut y_into = Tensor4::from_vec([1, 1, 1, 3], vec![f32::NAN; 3]).unwrap();
            let mut a_into = vec![u32::MAX; 5];
            fracture_tensor::max_pool2d_forward_into(&x, p, &mut y_into, &mut a_into).unwrap();
            prop_assert_eq!(y_into.shape(), out);
            prop_assert_eq!(y_into.as_slice(), ys.as_slice());
            prop_assert_eq!(&a_into, &as_);
            let mut dx_into = Tensor4::from_vec([1, 1, 1, 2], vec![f32::NAN; 2]).unwrap();
            fracture_tensor::max_pool2d_backward_into(&dy, &a_into, t.x, &mut dx_into).unwrap();
            prop_assert_eq!(dx_into.shape(), t.x);
            prop_assert_eq!(dx_into.as_slice(), dxs.as_slice());
        }
    }
    Ok(())
}

fn elementwise_case(t: &Case) -> Result<(), TestCaseError> {
    let mut r = rng(t.seed);
    let x = random_tensor(&mut r, t.x);
    let yf = fracture_tensor::global_avg_pool_forward(&x);
    let ys = naive::global_avg_pool_forward(&x);
    check_close("gap y", yf.as_slice(), ys.as_slice(), 1e-5, 1e-6).map_err(TestCaseError::fail)?;
    let dy = random_tensor(&mut r, [t.x[0], t.x[1], 1, 1]);
    let dxf = fracture_tensor::global_avg_pool_backward(&dy, t.x).unwrap();
    let dxs = naive::global_avg_pool_backward(&dy, t.x).unwrap();
    prop_assert_eq!(dxf.as_slice(), dxs.as_slice());

    let yf = fracture_tensor::relu_forward(&x);
    let ys = naive::relu_forward(&x);
    prop_assert_eq!(yf.as_slice(), ys.as_slice());
    let dy = random_tensor(&mut r, t.x);
    let dxf = fracture_tensor::relu_backward(&yf, &dy).unwrap();
    let dxs = naive::relu_backward(&yf, &dy).unwrap();
    prop_assert_eq!(dxf.as_slice(), dxs.as_slice());
    let mut dx_in_place = dy.clone();
    fracture_tensor::relu_backward_inplace(&yf, &mut dx_in_place).unwrap();
    prop_assert_eq!(dx_in_place.as_slice(), dxs.as_slice());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn conv2d_fast_equals_naive(t in case()) {
        conv_case(&t)?;
    }

    #[test]
    fn grouped_conv2d_fast_equals_naive(t in grouped_case()) {
        conv_case(&t)?;
    }

    #[test]
    fn max_pool2d_fast_equals_naive(t in case()) {
        pool_case(&t)?;
    }

    /// Ties, NaN and -inf: the fast kernels pick the same element as the naive ones (the
    /// first maximum in window order, the first NaN), in the special-cased 2x2 stride-2 path
    /// and the general one.
    #[test]
    fn max_pool2d_ties_and_nan_agree(
        t in case(),
        picks in proptest::collection::vec(0usize..5, 3 * 9 * 17 * 17),
        two_by_two in any::<bool>(),
    ) {
        const VALUES: [f32; 5] = [f32::NEG_INFINITY, -1.0, 0.0, 1.0, f32::NAN];
        let len: usize = t.x.iter().product();
        let data = picks[..len].iter().map(|&i| VALUES[i]).collect();
        let x = Tensor4::from_vec(t.x, data).unwrap();
        let p = if two_by_two {
            PoolParams::square(2, 2, 0)
        } else {
            PoolParams { kernel: t.k, stride: t.stride, padding: [t.padding[0].min(t.k[0] / 2), t.padding[1].min(t.k[1] / 2)] }
        };
        if let Ok((ys, as_)) = naive::max_pool2d_forward(&x, p) {
            let (yf, af) = fracture_tensor::max_pool2d_forward(&x, p).unwrap();
            prop_assert_eq!(&af, &as_);
            let same = yf.as_slice().iter().zip(ys.as_slice()).all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(same, "values differ: {:?} vs {:?}", yf.as_slice(), ys.as_slice());
        } else {
            prop_assert!(fracture_tensor::max_pool2d_forward(&x, p).is_err());
        }
    }

    #[test]
    fn gap_and_relu_fast_equal_naive(t in case()) {
        elementwise_case(&t)?;
    }
}

/// A shape every case above could miss: a reused workspace sized for a large convolution must
/// still give right answers for a small one and back (stale scratch must never leak in), and
/// the `_into` variants must ignore whatever their reused output buffers held.
#[test]
fn workspace_reuse_across_shapes() {
    let mut r = rng(7);
    let mut ws = ConvWorkspace::default();
    let mut y_into = Tensor4::zeros([0, 0, 0, 0]);
    let mut g_into = Conv2dGrads {
        dx: None,
        dw: Tensor4::zeros([0, 0, 0, 0]),
        db: vec![],
    };
    let shapes = [
        (
            [3, 5, 17, 13],
            [6, 5, 3, 3],
            ConvParams {
                stride: [1, 1],
                padding: [1, 1],
                ..ConvParams::default()
            },
        ),
        (
            [1, 2, 4, 5],
            [3, 2, 2, 3],
            ConvParams {
                stride: [2, 1],
                padding: [0, 2],
                ..ConvParams::default()
            },
        ),
        ([2, 4, 9, 9], [4, 4, 1, 1], ConvParams::default()),
        // Large enough that the im2col matrix is processed in several blocks of output rows.
        // ... also with a batch of 8, where dx is fused into the dw pass.
        (
            [8, 16, 40, 70],
            [3, 16, 5, 5],
            ConvParams {
                stride: [1, 1],
                padding: [2, 2],
                ..ConvParams::default()
            },
        ),
        (
            [2, 16, 70, 66],
            [4, 16, 5, 5],
            ConvParams {
                stride: [1, 2],
                padding: [2, 1],
                ..ConvParams::default()
            },
        ),
        (
            [3, 5, 17, 13],
            [6, 5, 3, 3],
            ConvParams {
                stride: [1, 1],
                padding: [1, 1],
                ..ConvParams::default()
            },
        ),
    ];
    for (xs, wsh, p) in shapes {
        let x = random_tensor(&mut r, xs);
        let w = random_tensor(&mut r, wsh);
        let y = fracture_tensor::conv2d_forward(&x, &w, None, p, &mut ws).unwrap();
        let want = naive::conv2d_forward(&x, &w, None, p).unwrap();
        common::assert_close("y", y.as_slice(), want.as_slice(), REL, ABS);
        let dy = random_tensor(&mut r, y.shape());
        let g = fracture_tensor::conv2d_backward(&x, &w, &dy, p, true, &mut ws).unwrap();
        let gw = naive::conv2d_backward(&x, &w, &dy, p, true).unwrap();
        common::assert_close("dw", g.dw.as_slice(), gw.dw.as_slice(), REL, ABS);
        let want_dx = gw.dx.unwrap();
        common::assert_close("dx", g.dx.unwrap().as_slice(), want_dx.as_slice(), REL, ABS);

        // Poison the reused buffers, then recompute into them.
        y_into.as_slice_mut().fill(f32::NAN);
        g_into.dw.as_slice_mut().fill(f32::NAN);
        g_into.db.fill(f32::NAN);
        if let Some(dx) = &mut g_into.dx {
            dx.as_slice_mut().fill(f32::NAN);
        }
        let b = random_vec(&mut r, wsh[0]);
        fracture_tensor::conv2d_forward_into(&x, &w, Some(&b), p, &mut ws, &mut y_into).unwrap();
        let want = naive::conv2d_forward(&x, &w, Some(&b), p).unwrap();
        assert_eq!(y_into.shape(), want.shape());
        common::assert_close("y into", y_into.as_slice(), want.as_slice(), REL, ABS);
        fracture_tensor::conv2d_backward_into(&x, &w, &dy, p, true, &mut ws, &mut g_into).unwrap();
        assert_eq!(g_into.dw.shape(), wsh);
        common::assert_close("dw into", g_into.dw.as_slice(), gw.dw.as_slice(), REL, ABS);
        common::assert_close("db into", &g_into.db, &gw.db, REL, ABS);
        let dx = g_into.dx.as_ref().expect("dx requested");
        common::assert_close("dx into", dx.as_slice(), want_dx.as_slice(), REL, ABS);
    }
    fracture_tensor::conv2d_backward_into(
        &random_tensor(&mut r, [1, 1, 3, 3]),
        &random_tensor(&mut r, [1, 1, 3, 3]),
        &random_tensor(&mut r, [1, 1, 1, 1]),
        ConvParams::default(),
        false,
        &mut ws,
        &mut g_into,
    )
    .unwrap();
    assert!(g_into.dx.is_none());
}

/// One fused batch norm -> ReLU / ReLU6 -> [2x2 max pool] case.
#[derive(Debug, Clone)]
struct BnCase {
    x: [usize; 4],
    pool: bool,
    relu6: bool,
    batch: bool,
    /// Forward without copying the input, then [`BnActPoolCache::keep_input`].
    hand_over: bool,
    /// Length of a garbage window-code allocation handed to the forward.
    spare: usize,
    seed: u64,
}

/// Batch 1-4, channels 1-6, height and width 1-13 (odd included), pool on/off, ReLU/ReLU6,
/// batch/given statistics.
fn bn_case() -> impl Strategy<Value = BnCase> {
    (
        (1usize..=4, 1usize..=6, 1usize..=13, 1usize..=13),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        0usize..2000,
        any::<u64>(),
    )
        .prop_map(
            |((n, c, h, w), (pool, relu6, batch, hand_over), spare, seed)| BnCase {
                x: [n, c, h, w],
                pool,
                relu6,
                batch,
                hand_over,
                spare,
                seed,
            },
        )
}

/// The fused kernel's f32 arithmetic against the oracle's f64: a few ulps per step, times
/// `1 / sigma` (at most `1 / sqrt(eps)` = 32 here) where a mean is subtracted.
const BN_REL: f32 = 1e-4;
const BN_ABS: f32 = 1e-4;

fn bn_act_pool_case(t: &BnCase) -> Result<(), TestCaseError> {
    let mut r = rng(t.seed);
    let c = t.x[1];
    let x = random_tensor(&mut r, t.x);
    // gamma up to 5 so that ReLU6's cap is reached.
    let gamma: Vec<f32> = random_vec(&mut r, c).iter().map(|v| 5.0 * v).collect();
    let beta = random_vec(&mut r, c);
    let mean: Vec<f32> = random_vec(&mut r, c).iter().map(|v| 0.5 * v).collect();
    let var: Vec<f32> = random_vec(&mut r, c)
        .iter()
        .map(|v| 1.0 + 0.9 * v)
        .collect();
    let stats = if t.batch {
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
        eps: 1e-3,
        cap: if t.relu6 { 6.0 } else { f32::INFINITY },
        pool: t.pool,
    };
    let request = BnActCacheRequest {
        copy_input: !t.hand_over,
        spare_codes: (0..t.spare).map(|i| (i * 37) as u8).collect(),
    };
    let slow = naive::bn_act_pool_forward(&x, &p);
    let fast = fracture_tensor::bn_act_pool_forward(&x, &p, Some(request));
    let (slow_y, slow_stats, fast) = match (slow, fast) {
        (Ok((y, s)), Ok(f)) => (y, s, f),
        (Err(a), Err(b)) => {
            // Too small to pool, or a single value per channel with batch statistics.
            prop_assert_eq!(&a.to_string().replace("naive::", ""), &b.to_string());
            let [n, _, h, w] = t.x;
            prop_assert!((t.pool && (h < 2 || w < 2)) || (t.batch && n * h * w < 2));
            return Ok(());
        }
        (a, b) => {
            return Err(TestCaseError::fail(format!(
                "naive {:?} vs fast {:?}",
                a.err(),
                b.err()
            )))
        }
    };
    prop_assert_eq!(fast.y.shape(), p.output_shape(t.x));
    check_close("y", fast.y.as_slice(), slow_y.as_slice(), BN_REL, BN_ABS)
        .map_err(TestCaseError::fail)?;
    prop_assert_eq!(fast.batch_stats.is_some(), t.batch);
    if let (Some(f), Some(s)) = (&fast.batch_stats, &slow_stats) {
        let f32s = |v: &[BatchStats]| -> Vec<f32> {
            v.iter()
                .flat_map(|s| [s.mean as f32, s.var as f32])
                .collect()
        };
        check_close("batch stats", &f32s(f), &f32s(s), 1e-6, 1e-7).map_err(TestCaseError::fail)?;
    }

    let mut cache = fast.cache.expect("a cache was asked for");
    if t.hand_over {
        cache.keep_input(x.clone()).unwrap();
    }
    prop_assert!(!cache.needs_input());
    let dy = random_tensor(&mut r, fast.y.shape());
    let fast = fracture_tensor::bn_act_pool_backward(&cache, &dy).unwrap();
    let slow = naive::bn_act_pool_backward(&x, &p, &dy).unwrap();
    check_close("dx", fast.dx.as_slice(), slow.dx.as_slice(), BN_REL, BN_ABS)
        .map_err(TestCaseError::fail)?;
    check_close("dgamma", &fast.dgamma, &slow.dgamma, BN_REL, BN_ABS)
        .map_err(TestCaseError::fail)?;
    check_close("dbeta", &fast.dbeta, &slow.dbeta, BN_REL, BN_ABS).map_err(TestCaseError::fail)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn bn_act_pool_fast_equals_naive(t in bn_case()) {
        bn_act_pool_case(&t)?;
    }
}

/// A cache whose forward did not copy the input and was not given it is an error, not a
/// panic, and a wrong-shaped `dy` or handed-over input is named.
#[test]
fn bn_act_pool_cache_misuse_is_an_error() {
    let mut r = rng(11);
    let x = random_tensor(&mut r, [2, 3, 4, 4]);
    let (gamma, beta) = (random_vec(&mut r, 3), random_vec(&mut r, 3));
    let p = BnActPoolParams::relu(&gamma, &beta, BnActStats::Batch);
    let request = BnActCacheRequest {
        copy_input: false,
        ..Default::default()
    };
    let mut cache = fracture_tensor::bn_act_pool_forward(&x, &p, Some(request))
        .unwrap()
        .cache
        .unwrap();
    let dy = random_tensor(&mut r, [2, 3, 2, 2]);
    let err = fracture_tensor::bn_act_pool_backward(&cache, &dy).unwrap_err();
    assert!(err.to_string().contains("keep_input"), "{err}");
    let err = cache.keep_input(Tensor4::zeros([2, 3, 4, 5])).unwrap_err();
    assert!(err.to_string().contains("[2, 3, 4, 4]"), "{err}");
    cache.keep_input(x).unwrap();
    let err =
        fracture_tensor::bn_act_pool_backward(&cache, &Tensor4::zeros([2, 3, 4, 4])).unwrap_err();
    assert!(err.to_string().contains("[2, 3, 2, 2]"), "{err}");
    assert!(fracture_tensor::bn_act_pool_backward(&cache, &dy).is_ok());
    // Parameters of the wrong length are named.
    let short = BnActPoolParams::relu(&gamma[..2], &beta, BnActStats::Batch);
    let x = random_tensor(&mut r, [2, 3, 4, 4]);
    let err = fracture_tensor::bn_act_pool_forward(&x, &short, None).unwrap_err();
    assert!(err.to_string().contains("gamma"), "{err}");
    let err = naive::bn_act_pool_forward(&x, &short).unwrap_err();
    assert!(err.to_string().contains("gamma"), "{err}");
}

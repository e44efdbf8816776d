//! Bad input gives a clear error, never a panic: shape mismatches, empty outputs, invalid
//! parameters (grouped convolutions included), short GEMM slices and out-of-range argmax
//! indices, for fast and naive kernels.

use fracture_tensor::{
    conv2d_backward, conv2d_forward, global_avg_pool_backward, max_pool2d_backward,
    max_pool2d_forward, naive, relu_backward, sgemm, ConvParams, ConvWorkspace, PoolParams,
    Tensor4, TensorError,
};

fn msg<T: std::fmt::Debug>(r: Result<T, TensorError>) -> (TensorError, String) {
    let e = r.expect_err("expected an error");
    let s = e.to_string();
    (e, s)
}

#[test]
fn tensor_construction_errors() {
    let (e, s) = msg(Tensor4::from_vec([2, 3, 4, 5], vec![0.0; 119]));
    assert!(matches!(
        e,
        TensorError::LengthMismatch {
            expected: 120,
            got: 119,
            ..
        }
    ));
    assert!(s.contains("[2, 3, 4, 5]"), "{s}");
    let (e, s) = msg(Tensor4::zeros([2, 3, 4, 5]).reshape([2, 3, 4, 4]));
    assert!(matches!(e, TensorError::ShapeMismatch { .. }));
    assert!(
        s.contains("120 elements") && s.contains("96 elements"),
        "{s}"
    );
    assert!(Tensor4::from_vec([usize::MAX, 2, 1, 1], vec![]).is_err());
}

/// Grouped convolutions: groups 0, channel counts not divisible by groups and a weight with the
/// wrong number of input channels per group are errors (never panics) from every entry point,
/// fast and naive, forward and backward, `_into` variants included.
#[test]
fn grouped_conv_errors_name_the_problem() {
    let mut ws = ConvWorkspace::default();
    let x = Tensor4::zeros([2, 6, 5, 5]);
    let g = |groups: usize| ConvParams {
        padding: [1, 1],
        groups,
        ..ConvParams::default()
    };
    let dy = Tensor4::zeros([2, 6, 5, 5]);
    let check_all =
        |w: &Tensor4, p: ConvParams, want: &dyn Fn(&TensorError) -> bool, needle: &str| {
            let mut ws = ConvWorkspace::default();
            let mut y = Tensor4::zeros([1, 1, 1, 1]);
            let mut grads = fracture_tensor::Conv2dGrads {
                dx: None,
                dw: Tensor4::zeros([1, 1, 1, 1]),
                db: vec![],
            };
            let errs = [
                conv2d_forward(&x, w, None, p, &mut ws).map(|_| ()),
                fracture_tensor::conv2d_forward_into(&x, w, None, p, &mut ws, &mut y),
                conv2d_backward(&x, w, &dy, p, true, &mut ws).map(|_| ()),
                fracture_tensor::conv2d_backward_into(&x, w, &dy, p, false, &mut ws, &mut grads),
                naive::conv2d_forward(&x, w, None, p).map(|_| ()),
                naive::conv2d_backward(&x, w, &dy, p, true).map(|_| ()),
                fracture_tensor::conv2d_output_shape(x.shape(), w.shape(), p).map(|_| ()),
            ];
            for (i, r) in errs.into_iter().enumerate() {
                let (e, s) = msg(r);
                assert!(want(&e), "entry point {i}: {e:?}");
                assert!(s.contains(needle), "entry point {i}: {s}");
            }
        };
    let invalid_groups =
        |e: &TensorError| matches!(e, TensorError::InvalidParameter { name: "groups", .. });

    // groups 0.
    check_all(
        &Tensor4::zeros([6, 6, 3, 3]),
        g(0),
        &invalid_groups,
        "at least one group",
    );
    // C = 6 not divisible by 4 (O = 8 is).
    check_all(
        &Tensor4::zeros([8, 1, 3, 3]),
        g(4),
        &invalid_groups,
        "multiples of groups",
    );
    // O = 4 not divisible by 3 (C = 6 is).
    check_all(
        &Tensor4::zeros([4, 2, 3, 3]),
        g(3),
        &invalid_groups,
        "output channels (4)",
    );
    // Depthwise weight must be [O, 1, KH, KW]; [6, 6, 3, 3] is the groups = 1 shape.
    check_all(
        &Tensor4::zeros([6, 6, 3, 3]),
        g(6),
        &|e| matches!(e, TensorError::ShapeMismatch { .. }),
        "input channels per group",
    );
    // Two groups: weight [6, 2, 3, 3] has 2 channels per group, x needs 3.
    check_all(
        &Tensor4::zeros([6, 2, 3, 3]),
        g(2),
        &|e| matches!(e, TensorError::ShapeMismatch { .. }),
        "[6, 2, 3, 3]",
    );
    // The valid grouped shapes pass, and a bias of the wrong length is still caught.
    assert!(conv2d_forward(&x, &Tensor4::zeros([6, 3, 3, 3]), None, g(2), &mut ws).is_ok());
    let (e, _) = msg(conv2d_forward(
        &x,
        &Tensor4::zeros([6, 1, 3, 3]),
        Some(&[0.0; 5]),
        g(6),
        &mut ws,
    ));
    assert!(matches!(
        e,
        TensorError::LengthMismatch {
            expected: 6,
            got: 5,
            ..
        }
    ));
    // dy of the wrong shape for a depthwise backward.
    let (e, _) = msg(conv2d_backward(
        &x,
        &Tensor4::zeros([6, 1, 3, 3]),
        &Tensor4::zeros([2, 6, 4, 4]),
        g(6),
        true,
        &mut ws,
    ));
    assert!(matches!(e, TensorError::ShapeMismatch { .. }));
}

#[test]
fn conv_errors_name_the_problem() {
    let mut ws = ConvWorkspace::default();
    let x = Tensor4::zeros([2, 3, 4, 4]);
    let p = ConvParams::default();

    let (e, s) = msg(conv2d_forward(
        &x,
        &Tensor4::zeros([5, 2, 3, 3]),
        None,
        p,
        &mut ws,
    ));
    assert!(matches!(e, TensorError::ShapeMismatch { .. }));
    assert!(
        s.contains("conv2d_forward") && s.contains("[5, 2, 3, 3]"),
        "{s}"
    );

    let w = Tensor4::zeros([5, 3, 3, 3]);
    let (e, _) = msg(conv2d_forward(&x, &w, Some(&[0.0; 4]), p, &mut ws));
    assert!(matches!(
        e,
        TensorError::LengthMismatch {
            expected: 5,
            got: 4,
            ..
        }
    ));

    let zero_stride = ConvParams {
        stride: [0, 1],
        padding: [0, 0],
        ..ConvParams::default()
    };
    let (e, _) = msg(conv2d_forward(&x, &w, None, zero_stride, &mut ws));
    assert!(matches!(
        e,
        TensorError::InvalidParameter { name: "stride", .. }
    ));

    // Kernel larger than the padded input: empty output, from every entry point.
    let big = Tensor4::zeros([5, 3, 7, 7]);
    let (e, s) = msg(conv2d_forward(
        &x,
        &big,
        None,
        ConvParams {
            padding: [1, 1],
            ..p
        },
        &mut ws,
    ));
    assert!(matches!(e, TensorError::EmptyOutput { .. }));
    assert!(
        s.contains("larger than the padded input height 4 + 2*1 = 6"),
        "{s}"
    );
    assert!(naive::conv2d_forward(&x, &big, None, p).is_err());
    let dy = Tensor4::zeros([2, 5, 1, 1]);
    assert!(matches!(
        conv2d_backward(&x, &big, &dy, p, true, &mut ws),
        Err(TensorError::EmptyOutput { .. })
    ));
    assert!(naive::conv2d_backward(&x, &big, &dy, p, true).is_err());

    // Empty batch and empty planes are errors too.
    let (e, _) = msg(conv2d_forward(
        &Tensor4::zeros([0, 3, 4, 4]),
        &w,
        None,
        p,
        &mut ws,
    ));
    assert!(matches!(e, TensorError::EmptyOutput { .. }));
    let (e, _) = msg(conv2d_forward(
        &Tensor4::zeros([1, 3, 0, 4]),
        &w,
        None,
        p,
        &mut ws,
    ));
    assert!(matches!(e, TensorError::EmptyOutput { .. }));

    // dy of the wrong shape.
    let (e, s) = msg(conv2d_backward(
        &x,
        &w,
        &Tensor4::zeros([2, 5, 3, 2]),
        p,
        true,
        &mut ws,
    ));
    assert!(matches!(e, TensorError::ShapeMismatch { .. }));
    assert!(
        s.contains("[2, 5, 2, 2]") && s.contains("[2, 5, 3, 2]"),
        "{s}"
    );
}

#[test]
fn pool_and_elementwise_errors() {
    let x = Tensor4::zeros([1, 2, 3, 3]);
    let (e, _) = msg(max_pool2d_forward(&x, PoolParams::square(4, 1, 0)));
    assert!(matches!(e, TensorError::EmptyOutput { .. }));
    let (e, s) = msg(max_pool2d_forward(&x, PoolParams::square(2, 1, 2)));
    assert!(
        matches!(
            e,
            TensorError::InvalidParameter {
                name: "padding",
                ..
            }
        ),
        "{s}"
    );
    assert!(matches!(
        max_pool2d_forward(&x, PoolParams::square(2, 0, 0)),
        Err(TensorError::InvalidParameter { name: "stride", .. })
    ));
    assert!(naive::max_pool2d_forward(&x, PoolParams::square(4, 1, 0)).is_err());

    let dy = Tensor4::zeros([1, 2, 1, 1]);
    let (e, _) = msg(max_pool2d_backward(&dy, &[0, 9], [1, 2, 3, 3]));
    assert!(matches!(
        e,
        TensorError::IndexOutOfRange {
            position: 1,
            index: 9,
            plane_len: 9,
            ..
        }
    ));
    assert!(naive::max_pool2d_backward(&dy, &[0, 9], [1, 2, 3, 3]).is_err());
    let (e, _) = msg(max_pool2d_backward(&dy, &[0], [1, 2, 3, 3]));
    assert!(matches!(e, TensorError::LengthMismatch { .. }));
    assert!(max_pool2d_backward(&dy, &[0, 0], [1, 3, 3, 3]).is_err());

    assert!(global_avg_pool_backward(&dy, [1, 3, 4, 4]).is_err());
    assert!(global_avg_pool_backward(&Tensor4::zeros([1, 2, 2, 1]), [1, 2, 4, 4]).is_err());
    assert!(relu_backward(&x, &Tensor4::zeros([1, 2, 3, 2])).is_err());
    assert!(naive::relu_backward(&x, &Tensor4::zeros([1, 2, 3, 2])).is_err());
}

#[test]
fn sgemm_refuses_bad_slices_and_aliasing() {
    let a = [1.0f32; 6];
    let mut c = [0.0f32; 4];
    // A is 2x3 but only 5 elements are given.
    let (e, _) = msg(sgemm(
        2,
        3,
        2,
        1.0,
        &a[..5],
        3,
        1,
        &a,
        2,
        1,
        0.0,
        &mut c,
        2,
        1,
    ));
    assert!(matches!(
        e,
        TensorError::SliceTooShort {
            operand: "a",
            needed: 6,
            got: 5,
            ..
        }
    ));
    let (e, _) = msg(sgemm(
        2,
        3,
        2,
        1.0,
        &a,
        3,
        1,
        &a,
        2,
        1,
        0.0,
        &mut c[..3],
        2,
        1,
    ));
    assert!(matches!(e, TensorError::SliceTooShort { operand: "c", .. }));
    // Row stride 1 with column stride 1: C(0,1) and C(1,0) would share memory.
    let (e, _) = msg(sgemm(2, 3, 2, 1.0, &a, 3, 1, &a, 2, 1, 0.0, &mut c, 1, 1));
    assert!(matches!(e, TensorError::InvalidParameter { .. }));
    assert!(naive::gemm(2, 3, 2, 1.0, &a, 3, 1, &a, 2, 1, 0.0, &mut c, 1, 1).is_err());
    // Overflowing strides.
    assert!(sgemm(2, 2, 2, 1.0, &a, isize::MAX, 1, &a, 2, 1, 0.0, &mut c, 2, 1).is_err());
}

#[test]
fn absurd_parameters_are_errors_not_panics() {
    let x = Tensor4::zeros([1, 1, 4, 4]);
    let w = Tensor4::zeros([1, 1, 3, 3]);
    let mut ws = ConvWorkspace::default();
    for pad in [usize::MAX, usize::MAX / 2, usize::MAX / 8, 1 << 40] {
        let p = ConvParams {
            stride: [1, 1],
            padding: [pad, pad],
            ..ConvParams::default()
        };
        assert!(
            conv2d_forward(&x, &w, None, p, &mut ws).is_err(),
            "pad {pad}"
        );
        assert!(naive::conv2d_forward(&x, &w, None, p).is_err(), "pad {pad}");
        let pool = PoolParams {
            kernel: [usize::MAX, usize::MAX],
            stride: [1, 1],
            padding: [pad.min(usize::MAX / 2), pad.min(usize::MAX / 2)],
        };
        assert!(max_pool2d_forward(&x, pool).is_err(), "pool pad {pad}");
    }
    let huge_stride = ConvParams {
        stride: [usize::MAX, usize::MAX],
        padding: [0, 0],
        ..ConvParams::default()
    };
    let y = conv2d_forward(&x, &w, None, huge_stride, &mut ws).unwrap();
    assert_eq!(y.shape(), [1, 1, 1, 1]);
}

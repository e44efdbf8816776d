//! Bad input gives a clear error, never a panic: shape mismatches, empty outputs, invalid
//! parameters, short GEMM slices and out-of-range argmax indices, for fast and naive kernels.

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

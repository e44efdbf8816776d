//! # fracture-tensor
//!
//! NCHW f32 tensors and the CPU kernels of fracture-nn, each with its backward pass: im2col +
//! GEMM convolution (and a direct kernel for grouped and depthwise convolution), max pooling, global average pooling and ReLU, plus a checked wrapper over
//! `matrixmultiply`'s sgemm. The fast kernels run in parallel with `rayon` and give bit-identical
//! results whatever the number of threads. [`naive`] holds an obviously-correct nested-loop
//! version of every kernel, the oracle the fast ones are tested against.
//!
//! ## Public items
//! - [`Tensor4`]: 4-D tensor (`zeros`, `from_vec`, `from_array`, `shape`, `len`, `is_empty`,
//!   `as_slice`, `as_slice_mut`, `array`, `array_mut`, `into_vec`, `reshape`). 2-D activations are
//!   `[N, F, 1, 1]`.
//! - [`TensorError`], [`Result`]: the crate's error type; bad input never panics.
//! - Convolution: [`ConvParams`] (stride, padding and `groups`, PyTorch's semantics: weight
//!   `[O, C / groups, KH, KW]`; `groups == C` is depthwise), [`conv2d_output_shape`],
//!   [`ConvWorkspace`], [`conv2d_forward`], [`conv2d_backward`] returning [`Conv2dGrads`], and
//!   [`conv2d_forward_into`] / [`conv2d_backward_into`], which reuse the caller's output buffers.
//!   One group runs im2col + GEMM; more groups run a direct kernel vectorised along contiguous
//!   (flattened) output planes, parallel over `(image, channel)` planes.
//! - Pooling: [`PoolParams`], [`max_pool2d_output_shape`], [`max_pool2d_forward`],
//!   [`max_pool2d_backward`] (and their `_into` variants [`max_pool2d_forward_into`],
//!   [`max_pool2d_backward_into`]), [`global_avg_pool_forward`], [`global_avg_pool_backward`].
//! - Activation: [`relu_forward`], [`relu_forward_inplace`], [`relu_backward`],
//!   [`relu_backward_inplace`]; ReLU6 [`relu6_forward_inplace`], [`relu6_backward_inplace`].
//! - Batch norm: [`batch_norm_stats`] ([`BatchStats`]); fused batch norm -> ReLU / ReLU6 ->
//!   optional 2x2 max pool, [`bn_act_pool_forward`] ([`BnActPoolParams`], [`BnActStats`],
//!   [`BnActCacheRequest`], [`BnActPoolOutput`], [`BnActPoolCache`]) and
//!   [`bn_act_pool_backward`] ([`BnActPoolGrads`]).
//!
//! ## Memory
//! Buffers of 256 KiB and more are recycled through a process-wide pool (a dropped
//! [`Tensor4`] gives its buffer back; [`pooled_bytes`], [`set_pool_limit_bytes`],
//! [`release_pooled_buffers`]), so a training loop that allocates the same shapes every step
//! stops paying page faults after its first step. Without the pool, every plain kernel's output
//! would be a fresh allocation. On Linux a fresh multi-megabyte
//! buffer costs page faults (measured: about 30 ms of CPU for 67 MB, the size of one
//! batch-32 activation of the reference model's first layer), more than the arithmetic of
//! cheap ops. In a training loop prefer the `_into` / `_inplace` variants with buffers kept
//! between steps; their results are identical.
//! - Matrix product: [`sgemm`] (strided, so transposes are free).
//! - [`naive`]: the reference kernels with the same contracts.
//!
//! ```
//! use fracture_tensor::*;
//! let x = Tensor4::zeros([2, 3, 16, 16]);
//! let w = Tensor4::zeros([8, 3, 3, 3]);
//! let p = ConvParams { padding: [1, 1], ..ConvParams::default() };
//! let mut ws = ConvWorkspace::default();
//! let y = conv2d_forward(&x, &w, Some(&[0.0; 8]), p, &mut ws)?;
//! let y = relu_forward(&y);
//! let (y, _argmax) = max_pool2d_forward(&y, PoolParams::square(2, 2, 0))?;
//! assert_eq!(global_avg_pool_forward(&y).shape(), [2, 8, 1, 1]);
//! # Ok::<(), TensorError>(())
//! ```

// Unsafe code here: the AVX-512 GEMM kernel (gemm_avx512.rs), the matrixmultiply call
// (gemm.rs) and the AVX2 dispatch of the SIMD kernels; every `unsafe fn` documents its
// `# Safety` contract and every `unsafe` block says why it holds.
#![deny(unsafe_op_in_unsafe_fn)]

mod batch_stats;
mod bn_act_pool;
mod bn_act_pool_simd;
mod conv;
mod conv_direct;
mod conv_gemm;
mod error;
mod gemm;
mod gemm_avx512;
mod im2col;
pub mod naive;
mod pool;
mod recycle;
mod relu;
mod sum;
mod tensor;
mod workspace;

pub use batch_stats::{batch_norm_stats, BatchStats};
pub use bn_act_pool::{
    bn_act_pool_backward, bn_act_pool_forward, BnActCacheRequest, BnActPoolCache, BnActPoolGrads,
    BnActPoolOutput, BnActPoolParams, BnActStats,
};
pub use conv::{
    conv2d_backward, conv2d_backward_into, conv2d_forward, conv2d_forward_into,
    conv2d_output_shape, Conv2dGrads, ConvParams,
};
pub use error::{Result, TensorError};
pub use gemm::{sgemm, sgemm_backend, sgemm_with, GemmBackend};
pub use pool::{
    global_avg_pool_backward, global_avg_pool_forward, max_pool2d_backward,
    max_pool2d_backward_into, max_pool2d_forward, max_pool2d_forward_into, max_pool2d_output_shape,
    PoolParams,
};
pub use recycle::{
    pool_limit_bytes, pooled_bytes, release_pooled_buffers, set_pool_limit_bytes,
    DEFAULT_POOL_LIMIT_BYTES, MIN_POOLED_BYTES,
};
pub use relu::{
    relu6_backward_inplace, relu6_forward_inplace, relu_backward, relu_backward_inplace,
    relu_forward, relu_forward_inplace,
};
pub use tensor::Tensor4;
pub use workspace::ConvWorkspace;

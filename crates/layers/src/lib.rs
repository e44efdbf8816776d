//! # fracture-layers
//!
//! Hand-written CNN layers with backprop on top of `fracture-tensor`, the softmax cross-entropy
//! loss, SGD and AdamW with learning-rate schedules and gradient clipping, and safetensors
//! checkpoints whose tensor names and shapes follow PyTorch's `state_dict`.
//!
//! - [`Layer`]: forward/backward and named parameter/buffer walks; [`Mode`] (train, eval,
//!   eval-with-grad); [`Param`], [`Buffer`].
//! - Layers, each built from a `*Config` with `Default` and `init`: [`Conv2d`],
//!   [`BatchNorm2d`], [`Relu`], [`MaxPool2d`], [`GlobalAvgPool`], [`Dropout`], [`Linear`],
//!   [`Flatten`], [`ResidualBlock`], [`InvertedResidual`] (EfficientNet's MBConv), composed in a
//!   [`Sequential`]; an [`Ensemble`] averages the outputs of several networks; a [`MaskHead`]
//!   predicts a finding's location from a map in the middle of a network, as a side output.
//! - [`loss`]: [`CrossEntropyLoss`], [`softmax`].
//! - [`optim`]: [`optim::Sgd`], [`optim::AdamW`], [`optim::LrSchedule`],
//!   [`optim::clip_grad_norm`], serialisable [`optim::OptimizerState`].
//! - [`checkpoint`]: atomic save/load of models and optimizer state.
//! - [`pth`]: a reader of PyTorch `torch.save` checkpoints that never runs their code.
//!
//! Gradients accumulate into [`Param::grad`]; call [`Layer::zero_grad`] before each backward.
//!
//! ```
//! use fracture_layers::optim::Optimizer;
//! use fracture_layers::*;
//! use fracture_tensor::Tensor4;
//! use rand::SeedableRng;
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
//! let mut net = Sequential::new()
//!     .with("conv", Conv2dConfig::new(1, 4, 3).with_padding(1).init(&mut rng)?)?
//!     .with("bn", BatchNorm2dConfig::new(4).init()?)?
//!     .with("relu", Relu::new())?
//!     .with("pool", GlobalAvgPool::new())?
//!     .with("fc", LinearConfig::new(4, 2).init(&mut rng)?)?;
//! let mut opt = optim::Sgd::new(optim::SgdConfig { momentum: 0.9, ..Default::default() })?;
//! let x = Tensor4::from_vec([2, 1, 4, 4], (0..32).map(|v| v as f32 / 32.0).collect())?;
//! let logits = net.forward(&x, Mode::Train)?;
//! let (loss, dlogits) = CrossEntropyLoss::new().forward_backward(&logits, &[0, 1])?;
//! assert!(loss.is_finite());
//! net.zero_grad();
//! net.backward_params_only(&dlogits)?;
//! opt.step(&mut net, 0.1)?;
//! # Ok::<(), fracture_layers::LayersError>(())
//! ```

#![forbid(unsafe_code)]

pub mod batch_norm;
pub mod bn_relu_pool;
pub mod checkpoint;
pub mod conv2d;
pub mod dropout;
pub mod ensemble;
pub mod error;
pub mod flatten;
pub mod global_avg_max_pool;
pub mod global_avg_pool;
pub mod init;
pub mod inverted_residual;
pub mod layer;
pub mod linear;
pub mod loss;
pub mod mask_head;
pub mod max_pool;
pub mod optim;
pub mod pth;
pub mod relu;
pub mod residual;
pub mod sequential;

pub use batch_norm::{BatchNorm2d, BatchNorm2dConfig};
pub use bn_relu_pool::{BnReluPool, BnReluPoolConfig};
pub use conv2d::{Conv2d, Conv2dConfig};
pub use dropout::{Dropout, DropoutConfig};
pub use ensemble::Ensemble;
pub use error::{LayersError, Result};
pub use flatten::Flatten;
pub use global_avg_max_pool::GlobalAvgMaxPool;
pub use global_avg_pool::GlobalAvgPool;
pub use inverted_residual::{InvertedResidual, InvertedResidualConfig};
pub use layer::{
    find_in, find_in_mut, join_name, Buffer, IntoBoxedLayer, Layer, Mode, Param, RngStream,
};
pub use linear::{Linear, LinearConfig};
pub use loss::{log_softmax, softmax, CrossEntropyLoss};
pub use mask_head::{mask_bce_with_logits, MaskHead, MASK_PRIOR_LOGIT};
pub use max_pool::{MaxPool2d, MaxPool2dConfig};
pub use relu::{Activation, Relu};
pub use residual::{ResidualBlock, ResidualBlockConfig};
pub use sequential::Sequential;

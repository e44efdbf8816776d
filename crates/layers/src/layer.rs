//! The [`Layer`] trait every layer implements, the forward [`Mode`], and the trainable
//! [`Param`] and non-trainable [`Buffer`] tensors a layer owns.
//!
//! # Conventions
//! - Activations are NCHW [`Tensor4`]s; 2-D activations `[N, F]` are stored as `[N, F, 1, 1]`.
//! - `forward` in [`Mode::Train`] or [`Mode::EvalWithGrad`] caches what `backward` needs; one
//!   cached forward serves one `backward` (which consumes the cache). [`Mode::Eval`] caches
//!   nothing, and a following `backward` returns [`LayersError::NoForwardCache`].
//! - Gradients **accumulate**: `backward` adds into [`Param::grad`], as PyTorch does. Call
//!   [`Layer::zero_grad`] before each backward pass (the optimizers in [`crate::optim`] read
//!   `grad` and never reset it).
//! - Every parameter and buffer has a PyTorch `state_dict` name built from the names given to
//!   the layers of a [`crate::Sequential`] (`blocks.0.conv.weight`, `bn1.running_mean`), and a
//!   PyTorch shape (conv weight `[O, C, KH, KW]`, linear weight `[out, in]`, vectors `[C]`)
//!   used by checkpoints.

use fracture_tensor::Tensor4;

use crate::error::{LayersError, Result};

/// How a forward pass behaves.
///
/// ```
/// use fracture_layers::Mode;
/// assert!(Mode::Train.is_training() && Mode::Train.caches());
/// assert!(!Mode::EvalWithGrad.is_training() && Mode::EvalWithGrad.caches());
/// assert!(!Mode::Eval.caches());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// Training: batch norm uses batch statistics and updates its running statistics, dropout
    /// drops, and every layer caches what `backward` needs (PyTorch `model.train()`).
    Train,
    /// Inference: batch norm uses its running statistics, dropout is the identity, nothing is
    /// cached (PyTorch `model.eval()` under `torch.no_grad()`).
    Eval,
    /// Inference behaviour as [`Mode::Eval`], but with caches kept so that `backward` works, e.g.
    /// for Grad-CAM (PyTorch `model.eval()` with autograd on). Running statistics are not updated.
    EvalWithGrad,
}

impl Mode {
    /// `true` only for [`Mode::Train`].
    pub fn is_training(self) -> bool {
        matches!(self, Mode::Train)
    }

    /// `true` when forward keeps what backward needs ([`Mode::Train`], [`Mode::EvalWithGrad`]).
    pub fn caches(self) -> bool {
        !matches!(self, Mode::Eval)
    }
}

fn check_torch_shape(value: &Tensor4, torch_shape: &[usize]) -> Result<()> {
    let n: usize = torch_shape.iter().product();
    if n != value.len() || torch_shape.is_empty() {
        return Err(LayersError::Param {
            name: String::new(),
            reason: format!(
                "PyTorch shape {torch_shape:?} does not hold the {} values of a tensor of shape {:?}",
                value.len(),
                value.shape()
            ),
        });
    }
    Ok(())
}

/// A trainable tensor and its gradient (same shape), plus the shape PyTorch gives it.
///
/// ```
/// use fracture_layers::Param;
/// use fracture_tensor::Tensor4;
/// // A linear weight [out=2, in=3] is stored as [2, 3, 1, 1].
/// let p = Param::new(Tensor4::zeros([2, 3, 1, 1]), &[2, 3]).unwrap();
/// assert_eq!(p.torch_shape(), &[2, 3]);
/// assert_eq!(p.grad.shape(), [2, 3, 1, 1]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// The parameter's value.
    pub value: Tensor4,
    /// Its accumulated gradient, same shape as `value`.
    pub grad: Tensor4,
    torch_shape: Vec<usize>,
}

impl Param {
    /// A parameter with a zero gradient; `torch_shape` must hold exactly `value.len()` elements.
    pub fn new(value: Tensor4, torch_shape: &[usize]) -> Result<Self> {
        check_torch_shape(&value, torch_shape)?;
        Ok(Param {
            grad: Tensor4::zeros(value.shape()),
            value,
            torch_shape: torch_shape.to_vec(),
        })
    }

    /// The shape PyTorch gives this tensor (what checkpoints store).
    pub fn torch_shape(&self) -> &[usize] {
        &self.torch_shape
    }

    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// `true` if the parameter holds no scalar.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Sets the gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grad.as_slice_mut().fill(0.0);
    }

    /// Adds `g` (same number of elements) into the gradient.
    pub(crate) fn accumulate_grad(&mut self, g: &[f32]) {
        debug_assert_eq!(g.len(), self.grad.len());
        for (a, b) in self.grad.as_slice_mut().iter_mut().zip(g) {
            *a += *b;
        }
    }
}

/// A non-trainable tensor saved with the model (batch norm's running statistics).
///
/// ```
/// use fracture_layers::Buffer;
/// use fracture_tensor::Tensor4;
/// let b = Buffer::new(Tensor4::zeros([4, 1, 1, 1]), &[4]).unwrap();
/// assert_eq!(b.torch_shape(), &[4]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// The buffer's value.
    pub value: Tensor4,
    torch_shape: Vec<usize>,
}

impl Buffer {
    /// A buffer; `torch_shape` must hold exactly `value.len()` elements.
    pub fn new(value: Tensor4, torch_shape: &[usize]) -> Result<Self> {
        check_torch_shape(&value, torch_shape)?;
        Ok(Buffer {
            value,
            torch_shape: torch_shape.to_vec(),
        })
    }

    /// The shape PyTorch gives this tensor (what checkpoints store).
    pub fn torch_shape(&self) -> &[usize] {
        &self.torch_shape
    }
}

/// The state of a layer's own random stream: the next draw (e.g. a dropout mask) comes from
/// ChaCha8 seeded with `seed` on stream `counter`, after which `counter` is incremented.
///
/// ```
/// let s = fracture_layers::RngStream { seed: 7, counter: 0 };
/// assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"seed":7,"counter":0}"#);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RngStream {
    /// Seed of the ChaCha8 generator.
    pub seed: u64,
    /// Index of the next stream to draw from (number of draws so far).
    pub counter: u64,
}

/// Joins a name prefix and a local name with a dot (`""` + `"weight"` = `"weight"`).
///
/// ```
/// assert_eq!(fracture_layers::join_name("blocks.0", "conv"), "blocks.0.conv");
/// assert_eq!(fracture_layers::join_name("", "fc"), "fc");
/// ```
pub fn join_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Turns a boxed layer into a `Box<dyn Layer>`; implemented for every [`Layer`], so that the
/// trait's default [`Layer::into_chain`] can hand the layer itself back.
///
/// ```
/// use fracture_layers::{IntoBoxedLayer, Layer, Relu};
/// let layer: Box<dyn Layer> = Box::new(Relu::new()).into_boxed_layer();
/// assert_eq!(layer.kind(), Relu::new().kind());
/// ```
pub trait IntoBoxedLayer {
    /// `self` as a trait object.
    fn into_boxed_layer(self: Box<Self>) -> Box<dyn Layer>;
}

impl<T: Layer + 'static> IntoBoxedLayer for T {
    fn into_boxed_layer(self: Box<Self>) -> Box<dyn Layer> {
        self
    }
}

/// A differentiable layer: forward, backward, and walks over its named tensors.
///
/// Implementors provide `forward`, `backward` and the four `visit_*` walks over parameters and
/// buffers; everything else has a default. See the [module docs](self) for the caching and
/// gradient-accumulation conventions.
///
/// ```
/// use fracture_layers::{Layer, LinearConfig, Mode};
/// use fracture_tensor::Tensor4;
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let mut fc = LinearConfig::new(3, 2).init(&mut rng).unwrap();
/// let x = Tensor4::from_vec([1, 3, 1, 1], vec![1.0, 2.0, 3.0]).unwrap();
/// let y = fc.forward(&x, Mode::Train).unwrap();
/// fc.zero_grad();
/// let dx = fc.backward(&Tensor4::from_vec([1, 2, 1, 1], vec![1.0, 0.0]).unwrap()).unwrap();
/// assert_eq!((y.shape(), dx.shape()), ([1, 2, 1, 1], [1, 3, 1, 1]));
/// let names: Vec<String> = fc.named_params().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["weight", "bias"]);
/// assert_eq!(fc.num_params(), 8);
/// ```
pub trait Layer: Send + IntoBoxedLayer {
    /// Short kind name for messages, e.g. `"Conv2d"`.
    fn kind(&self) -> &'static str;

    /// Computes the output; caches inputs for `backward` when `mode.caches()`.
    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4>;

    /// As [`Layer::forward`], taking the input by value: a layer that caches its input for
    /// backward keeps this one without a copy. [`crate::Sequential`] hands every layer after the
    /// first the previous layer's output this way. Default: `forward(&x, mode)`.
    fn forward_owned(&mut self, x: Tensor4, mode: Mode) -> Result<Tensor4> {
        self.forward(&x, mode)
    }

    /// Given `dy = dL/d(output)`, accumulates parameter gradients and returns `dL/d(input)`.
    /// Consumes the cache of the last forward pass.
    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4>;

    /// As [`Layer::backward`] but without computing the input gradient (for the first layer of a
    /// network, where it would be thrown away). The default calls `backward`.
    fn backward_params_only(&mut self, dy: &Tensor4) -> Result<()> {
        self.backward(dy).map(|_| ())
    }

    /// The direct sub-layers with their local names, in walk order: the module tree. A local
    /// name may hold dots (`downsample.0`); the state-dict name of a child's tensor is
    /// `prefix.local_name.tensor`. Default: none (a leaf).
    ///
    /// A composite layer implements this (and [`Layer::children_mut`], same names, same order)
    /// and inherits every walk below from it, so its tensors are listed in one place.
    fn children(&self) -> Vec<(&str, &dyn Layer)> {
        Vec::new()
    }

    /// Mutable twin of [`Layer::children`], same names and order. Default: none.
    fn children_mut(&mut self) -> Vec<(&str, &mut dyn Layer)> {
        Vec::new()
    }

    /// Calls `f(name, param)` for each parameter, names prefixed by `prefix` (see
    /// [`join_name`]). Default: walks [`Layer::children_mut`]; a leaf with parameters
    /// overrides it.
    fn visit_params<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, &'a mut Param)) {
        for (name, child) in self.children_mut() {
            child.visit_params(&join_name(prefix, name), f);
        }
    }

    /// Read-only twin of [`Layer::visit_params`], same names and order.
    fn visit_params_ref<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a Param)) {
        for (name, child) in self.children() {
            child.visit_params_ref(&join_name(prefix, name), f);
        }
    }

    /// Calls `f(name, buffer)` for each buffer (running statistics). Default: walks the
    /// children.
    fn visit_buffers<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, &'a mut Buffer)) {
        for (name, child) in self.children_mut() {
            child.visit_buffers(&join_name(prefix, name), f);
        }
    }

    /// Read-only twin of [`Layer::visit_buffers`]. Default: walks the children.
    fn visit_buffers_ref<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a Buffer)) {
        for (name, child) in self.children() {
            child.visit_buffers_ref(&join_name(prefix, name), f);
        }
    }

    /// Calls `f(name, stream)` for each random stream (dropout), so that checkpoints can save it
    /// and a resumed run draws the same masks. Default: walks the children.
    fn visit_rng_streams(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut RngStream)) {
        for (name, child) in self.children_mut() {
            child.visit_rng_streams(&join_name(prefix, name), f);
        }
    }

    /// Read-only twin of [`Layer::visit_rng_streams`]. Default: walks the children.
    fn visit_rng_streams_ref(&self, prefix: &str, f: &mut dyn FnMut(&str, &RngStream)) {
        for (name, child) in self.children() {
            child.visit_rng_streams_ref(&join_name(prefix, name), f);
        }
    }

    /// Drops any cached forward state (frees memory). Default: clears the children; a layer
    /// with a cache of its own overrides it (and calls [`Layer::clear_children_cache`]).
    fn clear_cache(&mut self) {
        self.clear_children_cache();
    }

    /// Clears the cache of every child (what [`Layer::clear_cache`] does by default).
    fn clear_children_cache(&mut self) {
        for (_, child) in self.children_mut() {
            child.clear_cache();
        }
    }

    /// This layer as a chain of layers that computes the same function one after the other,
    /// each named by its state-dict path under `name`: what a caller needs to read the
    /// activation between any two of them (Grad-CAM). Default: the layer itself, under `name`.
    /// A [`crate::Sequential`] gives its children's chains in order; a fused
    /// [`crate::BnReluPool`] standing in a `Sequential` for the unfused `BatchNorm2d, ReLU,
    /// MaxPool2d` gives those back (see [`crate::BnReluPool::unfuse`]). Layers whose inside is
    /// not a chain (residual blocks, ensembles) stay whole.
    ///
    /// ```
    /// use fracture_layers::{BnReluPoolConfig, Conv2dConfig, Layer, Sequential};
    /// use rand::SeedableRng;
    /// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    /// let stage = Sequential::new()
    ///     .with("0", Conv2dConfig::new(1, 4, 3).init(&mut rng).unwrap()).unwrap()
    ///     .with("1", BnReluPoolConfig::new(4).init().unwrap()).unwrap();
    /// let net = Sequential::new().with("blocks", Sequential::new().with("0", stage).unwrap()).unwrap();
    /// let chain = Box::new(net).into_chain("");
    /// let names: Vec<&str> = chain.iter().map(|(n, _)| n.as_str()).collect();
    /// assert_eq!(names, ["blocks.0.0", "blocks.0.1", "blocks.0.2", "blocks.0.3"]);
    /// assert_eq!(chain[1].1.kind(), "BatchNorm2d");
    /// ```
    fn into_chain(self: Box<Self>, name: &str) -> Vec<(String, Box<dyn Layer>)> {
        vec![(name.to_string(), self.into_boxed_layer())]
    }

    /// This layer as [`std::any::Any`], so that a tool walking a model (the ONNX exporter of
    /// `fracture-nn`) can downcast it and read the concrete layer's config (a convolution's
    /// stride, padding and groups; a batch norm's epsilon), which neither [`Layer::kind`] nor
    /// the parameters hold. Default: `None`; every layer of this crate whose behaviour depends
    /// on a config returns itself.
    ///
    /// ```
    /// use fracture_layers::{Conv2d, Conv2dConfig, Layer};
    /// use rand::SeedableRng;
    /// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    /// let layer: Box<dyn Layer> = Box::new(Conv2dConfig::new(1, 4, 3).with_stride(2).init(&mut rng).unwrap());
    /// let conv = layer.as_any().and_then(|a| a.downcast_ref::<Conv2d>()).unwrap();
    /// assert_eq!(conv.config().stride, [2, 2]);
    /// ```
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// Mutable twin of [`Layer::as_any`], for a caller that drives a layer's side outputs (the
    /// trainer hands a [`crate::MaskHead`] its loss gradient). Default: `None`.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }

    /// This layer as a [`crate::Sequential`], if it is one (so that a caller can run a chain
    /// layer by layer). Default: `None`.
    fn as_sequential_mut(&mut self) -> Option<&mut crate::Sequential> {
        None
    }

    /// The parameter with state-dict name `name` (`"blocks.3.conv1.weight"`), if any.
    fn param(&self, name: &str) -> Option<&Param> {
        let mut found = None;
        self.visit_params_ref("", &mut |n, p| {
            if found.is_none() && n == name {
                found = Some(p);
            }
        });
        found
    }

    /// The parameter with state-dict name `name`, mutably, if any.
    fn param_mut(&mut self, name: &str) -> Option<&mut Param> {
        let mut found = None;
        self.visit_params("", &mut |n, p| {
            if found.is_none() && n == name {
                found = Some(p);
            }
        });
        found
    }

    /// The buffer with state-dict name `name` (`"_bn0.running_mean"`), if any.
    fn buffer(&self, name: &str) -> Option<&Buffer> {
        let mut found = None;
        self.visit_buffers_ref("", &mut |n, b| {
            if found.is_none() && n == name {
                found = Some(b);
            }
        });
        found
    }

    /// Sets every parameter gradient to zero.
    fn zero_grad(&mut self) {
        self.visit_params("", &mut |_, p| p.zero_grad());
    }

    /// Total number of trainable scalars.
    fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit_params_ref("", &mut |_, p| n += p.len());
        n
    }

    /// All parameters with their state-dict names, in walk order.
    fn named_params(&self) -> Vec<(String, &Param)> {
        let mut v = Vec::new();
        self.visit_params_ref("", &mut |name, p| v.push((name.to_string(), p)));
        v
    }

    /// All parameters, mutably, with their state-dict names, in walk order.
    fn named_params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut v = Vec::new();
        self.visit_params("", &mut |name, p| v.push((name.to_string(), p)));
        v
    }

    /// All buffers with their state-dict names, in walk order.
    fn named_buffers(&self) -> Vec<(String, &Buffer)> {
        let mut v = Vec::new();
        self.visit_buffers_ref("", &mut |name, b| v.push((name.to_string(), b)));
        v
    }
}

/// The sub-layer of `layer` at a dotted path of local names; local names
/// that hold dots themselves (`downsample.0`) are matched as a whole.
///
/// ```
/// use fracture_layers::{find_in, Layer, ResidualBlockConfig};
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let block = ResidualBlockConfig::new(4, 8, 2).init(&mut rng).unwrap();
/// assert_eq!(find_in(&block, "downsample.1").unwrap().kind(), "BatchNorm2d");
/// assert!(find_in(&block, "conv9").is_none());
/// ```
pub fn find_in<'a>(layer: &'a dyn Layer, path: &str) -> Option<&'a dyn Layer> {
    if path.is_empty() {
        return Some(layer);
    }
    for (name, child) in layer.children() {
        if path == name {
            return Some(child);
        }
        if let Some(rest) = path.strip_prefix(name).and_then(|r| r.strip_prefix('.')) {
            if let Some(found) = find_in(child, rest) {
                return Some(found);
            }
        }
    }
    None
}

/// Mutable twin of [`find_in`].
///
/// ```
/// use fracture_layers::{find_in_mut, Layer, ResidualBlockConfig};
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let mut block = ResidualBlockConfig::new(4, 8, 2).init(&mut rng).unwrap();
/// assert_eq!(find_in_mut(&mut block, "downsample.1").unwrap().kind(), "BatchNorm2d");
/// ```
pub fn find_in_mut<'a>(layer: &'a mut dyn Layer, path: &str) -> Option<&'a mut dyn Layer> {
    if path.is_empty() {
        return Some(layer);
    }
    for (name, child) in layer.children_mut() {
        if path == name {
            return Some(child);
        }
        if let Some(rest) = path.strip_prefix(name).and_then(|r| r.strip_prefix('.')) {
            if let Some(found) = find_in_mut(child, rest) {
                return Some(found);
            }
        }
    }
    None
}

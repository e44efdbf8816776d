//! A chain of named layers, itself a [`Layer`].

use fracture_tensor::Tensor4;

use crate::error::{LayersError, Result};
use crate::layer::{Layer, Mode};

/// Layers applied in order, each under a name that prefixes its tensors' state-dict names.
///
/// PyTorch equivalent: `nn.Sequential(OrderedDict(...))` (or a module whose attributes are
/// visited in order). Names must be non-empty and contain no `.`; nest a `Sequential` to get
/// dotted names such as `blocks.0.conv.weight`.
///
/// Layers are accessible one by one through [`Sequential::layers_mut`], so a caller can run the
/// network piece by piece and keep an intermediate activation or gradient (e.g. for Grad-CAM).
///
/// ```
/// use fracture_layers::*;
/// use fracture_tensor::Tensor4;
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let block = Sequential::new()
///     .with("conv", Conv2dConfig::new(1, 4, 3).with_padding(1).init(&mut rng)?)?
///     .with("bn", BatchNorm2dConfig::new(4).init()?)?
///     .with("relu", Relu::new())?;
/// let mut net = Sequential::new()
///     .with("blocks", Sequential::new().with("0", block)?)?
///     .with("pool", GlobalAvgPool::new())?
///     .with("fc", LinearConfig::new(4, 2).init(&mut rng)?)?;
/// let names: Vec<String> = net.named_params().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names[0], "blocks.0.conv.weight");
/// assert_eq!(net.named_buffers()[0].0, "blocks.0.bn.running_mean");
/// let logits = net.forward(&Tensor4::zeros([2, 1, 8, 8]), Mode::Train)?;
/// assert_eq!(logits.shape(), [2, 2, 1, 1]);
/// net.zero_grad();
/// net.backward_params_only(&Tensor4::zeros([2, 2, 1, 1]))?;
/// # Ok::<(), fracture_layers::LayersError>(())
/// ```
#[derive(Default)]
pub struct Sequential {
    layers: Vec<(String, Box<dyn Layer>)>,
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_list();
        for (name, layer) in &self.layers {
            l.entry(&format_args!("{name}: {}", layer.kind()));
        }
        l.finish()
    }
}

impl Sequential {
    /// An empty chain (the identity).
    pub fn new() -> Self {
        Sequential::default()
    }

    /// Appends `layer` under `name`; errors if the name is empty, contains `.` or is taken.
    pub fn push(
        &mut self,
        name: impl Into<String>,
        layer: impl Layer + 'static,
    ) -> Result<&mut Self> {
        self.push_boxed(name, Box::new(layer))
    }

    /// As [`Sequential::push`] for an already boxed layer.
    pub fn push_boxed(
        &mut self,
        name: impl Into<String>,
        layer: Box<dyn Layer>,
    ) -> Result<&mut Self> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("empty")
        } else if name.contains('.') {
            Some("contains '.' (nest a Sequential instead)")
        } else if self.layers.iter().any(|(n, _)| *n == name) {
            Some("already used in this Sequential")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(LayersError::LayerName { name, reason });
        }
        self.layers.push((name, layer));
        Ok(self)
    }

    /// Inserts `layer` under `name` right after the layer called `after`; errors as
    /// [`Sequential::push`] does, or if there is no layer `after`.
    ///
    /// ```
    /// use fracture_layers::{Relu, Sequential};
    /// let mut seq = Sequential::new().with("a", Relu::new())?.with("c", Relu::new())?;
    /// seq.insert_after("a", "b", Box::new(Relu::new()))?;
    /// assert_eq!(seq.param_names().len(), 0);
    /// let names: Vec<&str> = seq.layers().iter().map(|(n, _)| n.as_str()).collect();
    /// assert_eq!(names, ["a", "b", "c"]);
    /// # Ok::<(), fracture_layers::LayersError>(())
    /// ```
    pub fn insert_after(
        &mut self,
        after: &str,
        name: impl Into<String>,
        layer: Box<dyn Layer>,
    ) -> Result<&mut Self> {
        let Some(at) = self.layers.iter().position(|(n, _)| n == after) else {
            return Err(LayersError::LayerName {
                name: after.to_string(),
                reason: "no layer of that name to insert after",
            });
        };
        self.push_boxed(name, layer)?;
        let last = self.layers.pop().expect("just pushed");
        self.layers.insert(at + 1, last);
        Ok(self)
    }

    /// Removes the layer called `name` and returns it, if there is one.
    ///
    /// ```
    /// use fracture_layers::{Relu, Sequential};
    /// let mut seq = Sequential::new().with("a", Relu::new())?.with("b", Relu::new())?;
    /// assert!(seq.remove("a").is_some() && seq.remove("a").is_none());
    /// assert_eq!(seq.len(), 1);
    /// # Ok::<(), fracture_layers::LayersError>(())
    /// ```
    pub fn remove(&mut self, name: &str) -> Option<Box<dyn Layer>> {
        let at = self.layers.iter().position(|(n, _)| n == name)?;
        Some(self.layers.remove(at).1)
    }

    /// Builder form of [`Sequential::push`].
    pub fn with(mut self, name: impl Into<String>, layer: impl Layer + 'static) -> Result<Self> {
        self.push(name, layer)?;
        Ok(self)
    }

    /// The named layers, in order.
    pub fn layers(&self) -> &[(String, Box<dyn Layer>)] {
        &self.layers
    }

    /// The named layers, mutably, in order (`.rev()` walks them backwards, as backward does);
    /// names cannot be changed through this.
    pub fn layers_mut(
        &mut self,
    ) -> impl DoubleEndedIterator<Item = (&str, &mut Box<dyn Layer>)> + ExactSizeIterator {
        self.layers.iter_mut().map(|(n, l)| (n.as_str(), l))
    }

    /// The layer called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&dyn Layer> {
        self.layers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l.as_ref())
    }

    /// The layer called `name`, mutably, if any.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Box<dyn Layer>> {
        self.layers
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l)
    }

    /// Number of direct children.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// `true` if the chain has no layer.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// State-dict names of all parameters, in walk order.
    pub fn param_names(&self) -> Vec<String> {
        self.named_params().into_iter().map(|(n, _)| n).collect()
    }
}

impl Layer for Sequential {
    fn kind(&self) -> &'static str {
        "Sequential"
    }

    fn into_chain(self: Box<Self>, name: &str) -> Vec<(String, Box<dyn Layer>)> {
        self.layers
            .into_iter()
            .flat_map(|(n, layer)| layer.into_chain(&crate::layer::join_name(name, &n)))
            .collect()
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        let mut iter = self.layers.iter_mut();
        let Some((_, first)) = iter.next() else {
            return Ok(x.clone());
        };
        let mut h = first.forward(x, mode)?;
        for (_, layer) in iter {
            h = layer.forward_owned(h, mode)?;
        }
        Ok(h)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        let mut iter = self.layers.iter_mut().rev();
        let Some((_, last)) = iter.next() else {
            return Ok(dy.clone());
        };
        let mut g = last.backward(dy)?;
        for (_, layer) in iter {
            g = layer.backward(&g)?;
        }
        Ok(g)
    }

    fn backward_params_only(&mut self, dy: &Tensor4) -> Result<()> {
        let Some(((_, first), rest)) = self.layers.split_first_mut() else {
            return Ok(());
        };
        let mut g = None;
        for (_, layer) in rest.iter_mut().rev() {
            g = Some(layer.backward(g.as_ref().unwrap_or(dy))?);
        }
        first.backward_params_only(g.as_ref().unwrap_or(dy))
    }

    fn as_sequential_mut(&mut self) -> Option<&mut Sequential> {
        Some(self)
    }

    fn children(&self) -> Vec<(&str, &dyn Layer)> {
        self.layers
            .iter()
            .map(|(n, l)| (n.as_str(), l.as_ref()))
            .collect()
    }

    fn children_mut(&mut self) -> Vec<(&str, &mut dyn Layer)> {
        self.layers
            .iter_mut()
            .map(|(n, l)| (n.as_str(), l.as_mut() as &mut dyn Layer))
            .collect()
    }
}

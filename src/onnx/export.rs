//! The walk from a [`crate::Classifier`]'s network to ONNX nodes.
//!
//! The walk reads the model itself: [`Layer::kind`] says what a layer is,
//! [`Layer::children`] gives the module tree with its state-dict names, and
//! [`Layer::as_any`] hands over the concrete layer whose config (stride, padding, groups,
//! epsilon, activation, pooling) and tensors are written out. A composite whose wiring is not a
//! chain ([`ResidualBlock`], [`InvertedResidual`], [`fracture_layers::Ensemble`]) is wired here as its
//! `forward` does; a layer of a kind the walk does not know is an error naming it and its path,
//! never a silently wrong graph.
//!
//! Batch norm in inference is an affine map per channel, so a convolution followed by one
//! becomes a single convolution: with `s = gamma / sqrt(running_var + eps)`,
//! `W' = W * s` (per output channel) and `b' = (b - running_mean) * s + beta`, computed in f64.

use fracture_layers::{
    Activation, BatchNorm2d, BnReluPool, Conv2d, InvertedResidual, Layer, Linear, MaxPool2d, Relu,
    ResidualBlock,
};

use super::graph::{attr_int, attr_ints, GraphBuilder};
use crate::error::{Error, Result};

/// The running statistics and affine parameters of a batch norm, fused or not.
struct BnStats<'a> {
    gamma: &'a [f32],
    beta: &'a [f32],
    mean: &'a [f32],
    var: &'a [f32],
    eps: f32,
}

impl BnStats<'_> {
    /// Per-channel scale `gamma / sqrt(var + eps)` and shift `beta - mean * scale`, in f64.
    fn scale_shift(&self) -> Vec<(f64, f64)> {
        (0..self.gamma.len())
            .map(|c| {
                let s = self.gamma[c] as f64 / (self.var[c] as f64 + self.eps as f64).sqrt();
                (s, self.beta[c] as f64 - self.mean[c] as f64 * s)
            })
            .collect()
    }
}

/// What follows a batch norm inside a fused [`BnReluPool`]: its activation and pool.
struct After {
    activation: Option<Activation>,
    pool: bool,
}

/// A batch-norm-like layer: a plain [`BatchNorm2d`] (nothing after it) or a fused
/// [`BnReluPool`].
fn as_batch_norm(layer: &dyn Layer) -> Option<(BnStats<'_>, After)> {
    let any = layer.as_any()?;
    if let Some(bn) = any.downcast_ref::<BatchNorm2d>() {
        return Some((
            BnStats {
                gamma: bn.weight().value.as_slice(),
                beta: bn.bias().value.as_slice(),
                mean: bn.running_mean().value.as_slice(),
                var: bn.running_var().value.as_slice(),
                eps: bn.config().eps,
            },
            After {
                activation: None,
                pool: false,
            },
        ));
    }
    let f = any.downcast_ref::<BnReluPool>()?;
    Some((
        BnStats {
            gamma: f.weight().value.as_slice(),
            beta: f.bias().value.as_slice(),
            mean: f.running_mean().value.as_slice(),
            var: f.running_var().value.as_slice(),
            eps: f.config().eps,
        },
        After {
            activation: Some(f.config().activation),
            pool: f.config().pool,
        },
    ))
}

fn as_conv(layer: &dyn Layer) -> Option<&Conv2d> {
    layer.as_any()?.downcast_ref::<Conv2d>()
}

/// Turns layers into nodes of `g`; `convs_folded` counts the batch norms folded away.
pub(crate) struct Walker<'g> {
    pub(crate) g: &'g mut GraphBuilder,
    pub(crate) convs_folded: usize,
    /// The value holding the box-mask head's logits `[N, 1, h, w]`, once the walk has met one.
    pub(crate) mask_logits: Option<String>,
    /// The value holding the typicality score `[N]`, once the walk has met a bank.
    pub(crate) typicality: Option<String>,
}

impl Walker<'_> {
    fn unsupported(path: &str, what: impl std::fmt::Display) -> Error {
        Error::Config(format!(
            "cannot export layer {:?} to ONNX: {what}",
            if path.is_empty() { "<root>" } else { path }
        ))
    }

    /// Emits `layer` (state-dict path `path`) reading value `x`; returns its output value.
    pub(crate) fn layer(&mut self, layer: &dyn Layer, path: &str, x: &str) -> Result<String> {
        match layer.kind() {
            "Sequential" => self.chain(&layer.children(), path, x),
            "Ensemble" => self.ensemble(layer, path, x),
            "ResidualBlock" => self.residual(layer, path, x),
            "InvertedResidual" => self.inverted_residual(layer, path, x),
            "Dropout" => Ok(x.to_string()), // the identity in inference
            "Flatten" => Ok(self.flatten(x, path)),
            "GlobalAvgPool" => {
                let p = self.g.node("GlobalAveragePool", &[x], vec![], path);
                Ok(self.flatten(&p, path))
            }
            "GlobalAvgMaxPool" => {
                // Channels 0..C the maxima, C..2C the means (fastai's AdaptiveConcatPool2d).
                let mx = self
                    .g
                    .node("GlobalMaxPool", &[x], vec![], &format!("{path}.max"));
                let av = self
                    .g
                    .node("GlobalAveragePool", &[x], vec![], &format!("{path}.avg"));
                let cat = self
                    .g
                    .node("Concat", &[&mx, &av], vec![attr_int("axis", 1)], path);
                Ok(self.flatten(&cat, path))
            }
            "Linear" => self.linear(layer, path, x),
            "ReLU" | "ReLU6" => {
                let r = layer
                    .as_any()
                    .and_then(|a| a.downcast_ref::<Relu>())
                    .ok_or_else(|| Self::unsupported(path, "a ReLU that is not a Relu layer"))?;
                Ok(self.activation(x, r.cap(), path))
            }
            "MaxPool2d" => {
                let p = layer
                    .as_any()
                    .and_then(|a| a.downcast_ref::<MaxPool2d>())
                    .ok_or_else(|| Self::unsupported(path, "not a MaxPool2d layer"))?;
                let c = p.config();
                Ok(self.max_pool(x, c.kernel_size, c.stride, c.padding, path))
            }
            "Conv2d" => {
                let conv =
                    as_conv(layer).ok_or_else(|| Self::unsupported(path, "not a Conv2d layer"))?;
                Ok(self.conv(conv, None, path, x))
            }
            "TypicalityBank" => {
                let bank = layer
                    .as_any()
                    .and_then(|a| a.downcast_ref::<crate::typicality::TypicalityBank>())
                    .ok_or_else(|| Self::unsupported(path, "not a TypicalityBank layer"))?;
                self.typicality = Some(self.typicality_score(bank, path, x));
                Ok(x.to_string())
            }
            "MaskHead" => {
                // The identity on the main path; the head's 1x1 convolution is a side output.
                let head = layer
                    .as_any()
                    .and_then(|a| a.downcast_ref::<fracture_layers::MaskHead>())
                    .ok_or_else(|| Self::unsupported(path, "not a MaskHead layer"))?;
                if self.mask_logits.is_some() {
                    return Err(Self::unsupported(path, "a second box-mask head"));
                }
                let conv_path = fracture_layers::join_name(path, "conv");
                self.mask_logits = Some(self.conv(head.conv(), None, &conv_path, x));
                Ok(x.to_string())
            }
            _ => match as_batch_norm(layer) {
                // A batch norm with no convolution before it stays a BatchNormalization node.
                Some((bn, after)) => {
                    let y = self.batch_norm(&bn, path, x);
                    Ok(self.after(&y, &after, path))
                }
                None => Err(Self::unsupported(
                    path,
                    format!("kind {:?} is not known to the exporter", layer.kind()),
                )),
            },
        }
    }

    /// A chain of layers in order; a convolution directly followed by a batch norm (fused or
    /// not) becomes one convolution with the batch norm folded in.
    fn chain(&mut self, children: &[(&str, &dyn Layer)], path: &str, x: &str) -> Result<String> {
        let mut x = x.to_string();
        let mut i = 0;
        while i < children.len() {
            let (name, child) = children[i];
            let child_path = fracture_layers::join_name(path, name);
            let next = children
                .get(i + 1)
                .and_then(|(n, l)| Some((*n, as_batch_norm(*l)?)));
            match (as_conv(child), next) {
                (Some(conv), Some((bn_name, (bn, after)))) => {
                    let bn_path = fracture_layers::join_name(path, bn_name);
                    let y = self.conv(conv, Some(&bn), &child_path, &x);
                    x = self.after(&y, &after, &bn_path);
                    i += 2;
                }
                _ => {
                    x = self.layer(child, &child_path, &x)?;
                    i += 1;
                }
            }
        }
        Ok(x)
    }

    /// The mean of the members' outputs (logits), as [`fracture_layers::Ensemble`]: their sum
    /// times `1 / k`.
    fn ensemble(&mut self, layer: &dyn Layer, path: &str, x: &str) -> Result<String> {
        let members = layer.children();
        if members.is_empty() {
            return Err(Self::unsupported(path, "an ensemble without members"));
        }
        let mut outs = Vec::with_capacity(members.len());
        for (name, m) in &members {
            outs.push(self.layer(*m, &fracture_layers::join_name(path, name), x)?);
        }
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        let sum = self.g.node("Sum", &refs, vec![], &format!("{path}.sum"));
        let w = self.g.constant_f32(
            &format!("{path}.weight"),
            &[],
            &[1.0 / members.len() as f32],
        );
        Ok(self.g.node("Mul", &[&sum, &w], vec![], path))
    }

    /// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, the shortcut the identity or
    /// `downsample.1(downsample.0(x))`.
    fn residual(&mut self, layer: &dyn Layer, path: &str, x: &str) -> Result<String> {
        let block = layer
            .as_any()
            .and_then(|a| a.downcast_ref::<ResidualBlock>())
            .ok_or_else(|| Self::unsupported(path, "not a ResidualBlock layer"))?;
        let kids = block.children();
        let h = self.conv_bn(&kids, "conv1", "bn1", path, x)?;
        let h = self.activation(&h, f32::INFINITY, &format!("{path}.relu1"));
        let main = self.conv_bn(&kids, "conv2", "bn2", path, &h)?;
        let short = if block.has_projection() {
            self.conv_bn(&kids, "downsample.0", "downsample.1", path, x)?
        } else {
            x.to_string()
        };
        let sum = self
            .g
            .node("Add", &[&main, &short], vec![], &format!("{path}.add"));
        Ok(self.activation(&sum, f32::INFINITY, path))
    }

    /// MBConv: `[_expand_conv, _bn0 (+act)]`, `_depthwise_conv, _bn1 (+act)`,
    /// `_project_conv, _bn2`, plus the input when the block has a shortcut (stochastic depth is
    /// a training-only behaviour).
    fn inverted_residual(&mut self, layer: &dyn Layer, path: &str, x: &str) -> Result<String> {
        let block = layer
            .as_any()
            .and_then(|a| a.downcast_ref::<InvertedResidual>())
            .ok_or_else(|| Self::unsupported(path, "not an InvertedResidual layer"))?;
        let kids = block.children();
        let expanded = if kids.iter().any(|(n, _)| *n == "_expand_conv") {
            self.conv_bn(&kids, "_expand_conv", "_bn0", path, x)?
        } else {
            x.to_string()
        };
        let d = self.conv_bn(&kids, "_depthwise_conv", "_bn1", path, &expanded)?;
        let y = self.conv_bn(&kids, "_project_conv", "_bn2", path, &d)?;
        if block.config().has_shortcut() {
            Ok(self.g.node("Add", &[&y, x], vec![], &format!("{path}.add")))
        } else {
            Ok(y)
        }
    }

    /// The named convolution of `kids` with the named batch norm folded in, then whatever the
    /// batch norm layer applies after it (activation, pool).
    fn conv_bn(
        &mut self,
        kids: &[(&str, &dyn Layer)],
        conv_name: &str,
        bn_name: &str,
        path: &str,
        x: &str,
    ) -> Result<String> {
        let find = |name: &str| {
            kids.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, l)| *l)
                .ok_or_else(|| Self::unsupported(path, format!("no child {name:?}")))
        };
        let conv_path = fracture_layers::join_name(path, conv_name);
        let bn_path = fracture_layers::join_name(path, bn_name);
        let conv = as_conv(find(conv_name)?)
            .ok_or_else(|| Self::unsupported(&conv_path, "not a Conv2d layer"))?;
        let (bn, after) = as_batch_norm(find(bn_name)?)
            .ok_or_else(|| Self::unsupported(&bn_path, "not a batch norm"))?;
        let y = self.conv(conv, Some(&bn), &conv_path, x);
        Ok(self.after(&y, &after, &bn_path))
    }

    /// A `Conv` node with the convolution's geometry; `bn`, if given, folded into its weights.
    fn conv(&mut self, conv: &Conv2d, bn: Option<&BnStats>, path: &str, x: &str) -> String {
        let c = conv.config();
        let w = conv.weight();
        let dims = w.torch_shape().to_vec(); // [O, C / groups, KH, KW]
        let o = dims[0];
        let per_out = w.len() / o.max(1);
        let bias = conv.bias().map(|b| b.value.as_slice());
        let (weights, b): (Vec<f32>, Option<Vec<f32>>) = match bn {
            None => (w.value.as_slice().to_vec(), bias.map(<[f32]>::to_vec)),
            Some(bn) => {
                self.convs_folded += 1;
                let ss = bn.scale_shift();
                let weights = w
                    .value
                    .as_slice()
                    .chunks(per_out)
                    .zip(&ss)
                    .flat_map(|(row, &(s, _))| row.iter().map(move |&v| (v as f64 * s) as f32))
                    .collect();
                let b = (0..o)
                    .map(|k| {
                        let b0 = bias.map_or(0.0, |b| b[k] as f64);
                        (b0 * ss[k].0 + ss[k].1) as f32
                    })
                    .collect();
                (weights, Some(b))
            }
        };
        let wn = self
            .g
            .constant_f32(&format!("{path}.weight"), &dims, &weights);
        let mut inputs = vec![x.to_string(), wn];
        if let Some(b) = b {
            inputs.push(self.g.constant_f32(&format!("{path}.bias"), &[o], &b));
        }
        let [ph, pw] = c.padding.map(|p| p as i64);
        let attrs = vec![
            attr_ints("kernel_shape", &c.kernel_size.map(|k| k as i64)),
            attr_ints("strides", &c.stride.map(|s| s as i64)),
            attr_ints("pads", &[ph, pw, ph, pw]),
            attr_ints("dilations", &[1, 1]),
            attr_int("group", c.groups as i64),
        ];
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.g.node("Conv", &refs, attrs, path)
    }

    /// `1 - mean of the k largest cosine similarities` of the features `x` `[N, D]` to the
    /// bank's unit rows, as [`crate::typicality::knn_score`]: the rows are a constant `[D, R]`,
    /// the features are divided by their L2 norm, `MatMul`, `TopK`, `ReduceMean`, `Sub`.
    fn typicality_score(
        &mut self,
        bank: &crate::typicality::TypicalityBank,
        path: &str,
        x: &str,
    ) -> String {
        let cfg = bank.config();
        let (r, d) = (cfg.references, cfg.features);
        let rows = bank.reference();
        let mut transposed = vec![0f32; r * d];
        for i in 0..r {
            for j in 0..d {
                transposed[j * r + i] = rows[i * d + j];
            }
        }
        let bank_t = self
            .g
            .constant_f32(&format!("{path}.reference_t"), &[d, r], &transposed);
        // The per-image features `[N, D]`, as `TypicalityBank::features_of`: the channel means
        // and (population) standard deviations of the map, or the flattened input.
        let features = if cfg.mean_std {
            let mean = self.g.node(
                "ReduceMean",
                &[x],
                vec![attr_ints("axes", &[2, 3]), attr_int("keepdims", 1)],
                &format!("{path}.channel_mean"),
            );
            let centred = self
                .g
                .node("Sub", &[x, &mean], vec![], &format!("{path}.centred"));
            let squared = self.g.node(
                "Mul",
                &[&centred, &centred],
                vec![],
                &format!("{path}.squared"),
            );
            let var = self.g.node(
                "ReduceMean",
                &[&squared],
                vec![attr_ints("axes", &[2, 3]), attr_int("keepdims", 0)],
                &format!("{path}.channel_var"),
            );
            let sd = self
                .g
                .node("Sqrt", &[&var], vec![], &format!("{path}.channel_sd"));
            let mean_flat = self.g.node(
                "Flatten",
                &[&mean],
                vec![attr_int("axis", 1)],
                &format!("{path}.channel_mean_flat"),
            );
            self.g.node(
                "Concat",
                &[&mean_flat, &sd],
                vec![attr_int("axis", 1)],
                &format!("{path}.features"),
            )
        } else {
            self.g.node(
                "Flatten",
                &[x],
                vec![attr_int("axis", 1)],
                &format!("{path}.features"),
            )
        };
        let x = features.as_str();
        let norm = self.g.node(
            "ReduceL2",
            &[x],
            vec![attr_ints("axes", &[1]), attr_int("keepdims", 1)],
            &format!("{path}.norm"),
        );
        let unit = self
            .g
            .node("Div", &[x, &norm], vec![], &format!("{path}.unit"));
        let sims = self.g.node(
            "MatMul",
            &[&unit, &bank_t],
            vec![],
            &format!("{path}.cosine"),
        );
        let k = self
            .g
            .constant_i64(&format!("{path}.k"), &[1], &[cfg.k as i64]);
        let (top, _) = self.g.node2(
            "TopK",
            &[&sims, &k],
            vec![attr_int("axis", 1)],
            &format!("{path}.nearest"),
        );
        let mean = self.g.node(
            "ReduceMean",
            &[&top],
            vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)],
            &format!("{path}.mean"),
        );
        let one = self.g.constant_f32(&format!("{path}.one"), &[], &[1.0]);
        self.g
            .node("Sub", &[&one, &mean], vec![], &format!("{path}.score"))
    }

    /// A `BatchNormalization` node (inference form) for a batch norm with no convolution to
    /// fold into.
    fn batch_norm(&mut self, bn: &BnStats, path: &str, x: &str) -> String {
        let c = bn.gamma.len();
        let s = self
            .g
            .constant_f32(&format!("{path}.weight"), &[c], bn.gamma);
        let b = self.g.constant_f32(&format!("{path}.bias"), &[c], bn.beta);
        let m = self
            .g
            .constant_f32(&format!("{path}.running_mean"), &[c], bn.mean);
        let v = self
            .g
            .constant_f32(&format!("{path}.running_var"), &[c], bn.var);
        self.g.node(
            "BatchNormalization",
            &[x, &s, &b, &m, &v],
            vec![super::graph::attr_float("epsilon", bn.eps)],
            path,
        )
    }

    /// What a fused batch-norm layer does after the normalisation.
    fn after(&mut self, x: &str, after: &After, path: &str) -> String {
        let mut y = x.to_string();
        if let Some(a) = after.activation {
            y = self.activation(&y, a.cap(), &format!("{path}.act"));
        }
        if after.pool {
            y = self.max_pool(&y, [2, 2], [2, 2], [0, 0], &format!("{path}.pool"));
        }
        y
    }

    /// `Relu` for an unbounded ReLU, `Clip(x, 0, cap)` for ReLU6.
    fn activation(&mut self, x: &str, cap: f32, path: &str) -> String {
        if cap.is_finite() {
            let lo = self.g.constant_f32(&format!("{path}.min"), &[], &[0.0]);
            let hi = self.g.constant_f32(&format!("{path}.max"), &[], &[cap]);
            self.g.node("Clip", &[x, &lo, &hi], vec![], path)
        } else {
            self.g.node("Relu", &[x], vec![], path)
        }
    }

    fn max_pool(
        &mut self,
        x: &str,
        k: [usize; 2],
        s: [usize; 2],
        p: [usize; 2],
        path: &str,
    ) -> String {
        let [ph, pw] = p.map(|v| v as i64);
        let attrs = vec![
            attr_ints("kernel_shape", &k.map(|v| v as i64)),
            attr_ints("strides", &s.map(|v| v as i64)),
            attr_ints("pads", &[ph, pw, ph, pw]),
        ];
        self.g.node("MaxPool", &[x], attrs, path)
    }

    fn flatten(&mut self, x: &str, path: &str) -> String {
        self.g.node(
            "Flatten",
            &[x],
            vec![attr_int("axis", 1)],
            &format!("{path}.flat"),
        )
    }

    /// `Gemm(x, W, b, transB = 1)`: `x W^T + b` on `[N, in]`.
    fn linear(&mut self, layer: &dyn Layer, path: &str, x: &str) -> Result<String> {
        let fc = layer
            .as_any()
            .and_then(|a| a.downcast_ref::<Linear>())
            .ok_or_else(|| Self::unsupported(path, "not a Linear layer"))?;
        let flat = self.flatten(x, path);
        let w = fc.weight();
        let dims = w.torch_shape().to_vec(); // [out, in]
        let wn = self
            .g
            .constant_f32(&format!("{path}.weight"), &dims, w.value.as_slice());
        let mut inputs = vec![flat, wn];
        if let Some(b) = fc.bias() {
            inputs.push(self.g.constant_f32(
                &format!("{path}.bias"),
                &[dims[0]],
                b.value.as_slice(),
            ));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self
            .g
            .node("Gemm", &refs, vec![attr_int("transB", 1)], path))
    }
}

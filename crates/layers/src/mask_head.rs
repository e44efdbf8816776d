//! [`MaskHead`]: an auxiliary 1x1 convolution that reads a feature map in the middle of a
//! network and predicts, per cell, the logit of "this cell lies on a finding" (a fracture box),
//! while passing the map on unchanged.
//!
//! PyTorch equivalent: an `nn.Conv2d(C, 1, 1)` fed by a forward hook on the layer before it, as
//! torchvision's segmentation models feed their `aux_classifier`; the main path is the identity.
//!
//! The head is a side output, so the usual `forward` / `backward` contract of [`Layer`] carries
//! only the main path. The side path is driven by its owner (the trainer):
//! 1. `forward` computes the mask logits from the input and keeps them ([`MaskHead::logits`]);
//! 2. the owner computes a loss on them and hands its gradient over with
//!    [`MaskHead::set_logit_grad`];
//! 3. `backward(dy)` returns `dy` plus the side path's input gradient, and accumulates the 1x1
//!    convolution's parameter gradients. Without a pending gradient the side path contributes
//!    nothing (its cache is dropped), so a network holding a `MaskHead` trains as without it.

use fracture_tensor::Tensor4;
use rand_chacha::ChaCha8Rng;

use crate::conv2d::{Conv2d, Conv2dConfig};
use crate::error::{LayersError, Result};
use crate::layer::{Layer, Mode};

/// The initial bias of the mask logit: `ln(0.05 / 0.95)`, so that an untrained head predicts a
/// 5 % prior for every cell (fracture boxes cover a small share of an image) instead of 50 %,
/// which keeps the first steps' loss and gradients small (the focal-loss paper's prior init).
pub const MASK_PRIOR_LOGIT: f32 = -2.944_439;

/// An identity layer with a 1x1 convolution to one channel on the side: see the
/// [module docs](self).
///
/// Its tensors are those of the convolution, under `conv` (`conv.weight` `[1, C, 1, 1]`,
/// `conv.bias` `[1]`).
///
/// ```
/// use fracture_layers::{Layer, MaskHead, Mode};
/// use fracture_tensor::Tensor4;
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let mut head = MaskHead::new(4, &mut rng).unwrap();
/// let x = Tensor4::from_vec([1, 4, 2, 2], (0..16).map(|v| v as f32 / 16.0).collect()).unwrap();
/// let y = head.forward(&x, Mode::Train).unwrap();
/// assert_eq!(y, x); // the main path is the identity
/// assert_eq!(head.logits().unwrap().shape(), [1, 1, 2, 2]);
/// head.set_logit_grad(Tensor4::from_vec([1, 1, 2, 2], vec![1.0; 4]).unwrap()).unwrap();
/// head.zero_grad();
/// let dx = head.backward(&Tensor4::zeros([1, 4, 2, 2])).unwrap();
/// // The side path's input gradient is the 1x1 kernel at every cell.
/// let w = head.param("conv.weight").unwrap().value.as_slice().to_vec();
/// assert_eq!(dx.as_slice()[0], w[0]);
/// assert_eq!(head.param("conv.bias").unwrap().grad.as_slice(), [4.0]);
/// ```
#[derive(Debug)]
pub struct MaskHead {
    conv: Conv2d,
    logits: Option<Tensor4>,
    pending: Option<Tensor4>,
}

impl MaskHead {
    /// A head reading `channels` channels: Kaiming-initialised 1x1 weights, bias
    /// [`MASK_PRIOR_LOGIT`].
    pub fn new(channels: usize, rng: &mut ChaCha8Rng) -> Result<MaskHead> {
        let mut conv = Conv2dConfig::new(channels, 1, 1)
            .with_bias(true)
            .init(rng)?;
        if let Some(b) = conv.bias_mut() {
            b.value.as_slice_mut().fill(MASK_PRIOR_LOGIT);
        }
        Ok(MaskHead {
            conv,
            logits: None,
            pending: None,
        })
    }

    /// Channels of the map it reads.
    pub fn channels(&self) -> usize {
        self.conv.config().in_channels
    }

    /// The 1x1 convolution (what the ONNX export writes).
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    /// The mask logits `[N, 1, H, W]` of the last forward pass, if any.
    pub fn logits(&self) -> Option<&Tensor4> {
        self.logits.as_ref()
    }

    /// Takes the mask logits of the last forward pass out of the layer.
    pub fn take_logits(&mut self) -> Option<Tensor4> {
        self.logits.take()
    }

    /// Hands over `dL/d(logits)` for the next `backward`; it must have the logits' shape.
    pub fn set_logit_grad(&mut self, grad: Tensor4) -> Result<()> {
        let want = self.logits.as_ref().map(|l| l.shape());
        if want != Some(grad.shape()) {
            return Err(LayersError::shape(
                "MaskHead",
                format!("a logit gradient shaped as the last forward's logits {want:?}"),
                &grad.shape(),
            ));
        }
        self.pending = Some(grad);
        Ok(())
    }

    fn side(&mut self, x: &Tensor4, mode: Mode) -> Result<()> {
        if x.shape()[1] != self.channels() {
            return Err(LayersError::shape(
                "MaskHead",
                format!("an input with {} channels", self.channels()),
                &x.shape(),
            ));
        }
        self.pending = None;
        self.logits = Some(self.conv.forward(x, mode)?);
        Ok(())
    }
}

impl Layer for MaskHead {
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn kind(&self) -> &'static str {
        "MaskHead"
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        self.side(x, mode)?;
        Ok(x.clone())
    }

    fn forward_owned(&mut self, x: Tensor4, mode: Mode) -> Result<Tensor4> {
        self.side(&x, mode)?;
        Ok(x)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        match self.pending.take() {
            Some(g) => {
                let dx = self.conv.backward(&g)?;
                if dx.shape() != dy.shape() {
                    return Err(LayersError::shape(
                        "MaskHead",
                        format!("an output gradient of shape {:?}", dx.shape()),
                        &dy.shape(),
                    ));
                }
                let mut out = dx;
                for (o, d) in out.as_slice_mut().iter_mut().zip(dy.as_slice()) {
                    *o += *d;
                }
                Ok(out)
            }
            None => {
                self.conv.clear_cache();
                Ok(dy.clone())
            }
        }
    }

    fn children(&self) -> Vec<(&str, &dyn Layer)> {
        vec![("conv", &self.conv)]
    }

    fn children_mut(&mut self) -> Vec<(&str, &mut dyn Layer)> {
        vec![("conv", &mut self.conv)]
    }

    /// Drops the backward state; the logits of the last pass (a side output, one value per
    /// cell) stay readable until the next forward pass or [`MaskHead::take_logits`].
    fn clear_cache(&mut self) {
        self.pending = None;
        self.conv.clear_cache();
    }
}

/// Binary cross-entropy with logits over mask cells, averaged over the cells of the samples
/// whose `weights` are positive (a sample of weight 0 has no annotation and adds nothing), with
/// positive cells weighted by `pos_weight`.
///
/// PyTorch equivalent: `F.binary_cross_entropy_with_logits(logits, targets, weight=w,
/// pos_weight=pos_weight, reduction="sum") / (number of cells of annotated samples)`.
///
/// `logits` and `targets` are `[N, 1, H, W]` (targets in [0, 1]); returns the loss and
/// `dL/d(logits)`, zero for unannotated samples.
///
/// ```
/// use fracture_layers::mask_bce_with_logits;
/// use fracture_tensor::Tensor4;
/// let logits = Tensor4::from_vec([2, 1, 1, 2], vec![0.0, 0.0, 5.0, -5.0]).unwrap();
/// let targets = [1.0, 0.0, 1.0, 0.0];
/// let (loss, g) = mask_bce_with_logits(&logits, &targets, &[1.0, 0.0], 1.0).unwrap();
/// assert!((loss - std::f32::consts::LN_2).abs() < 1e-6); // only the first sample counts
/// assert_eq!(&g.as_slice()[2..], [0.0, 0.0]);
/// assert!((g.as_slice()[0] + 0.25).abs() < 1e-6); // (sigmoid(0) - 1) / 2 cells
/// ```
pub fn mask_bce_with_logits(
    logits: &Tensor4,
    targets: &[f32],
    weights: &[f32],
    pos_weight: f32,
) -> Result<(f32, Tensor4)> {
    let [n, c, h, w] = logits.shape();
    let cells = c * h * w;
    if targets.len() != logits.len() || weights.len() != n {
        return Err(LayersError::shape(
            "mask BCE",
            format!(
                "{} targets and {} sample weights for the logits",
                targets.len(),
                weights.len()
            ),
            &logits.shape(),
        ));
    }
    let counted: f64 = weights.iter().filter(|&&w| w > 0.0).count() as f64 * cells as f64;
    let mut grad = Tensor4::zeros(logits.shape());
    if counted == 0.0 {
        return Ok((0.0, grad));
    }
    let mut loss = 0f64;
    let scale = 1.0 / counted;
    for (s, &ws) in weights.iter().enumerate() {
        if ws <= 0.0 {
            continue;
        }
        let range = s * cells..(s + 1) * cells;
        let z = &logits.as_slice()[range.clone()];
        let t = &targets[range.clone()];
        let g = &mut grad.as_slice_mut()[range];
        for ((&z, &t), g) in z.iter().zip(t).zip(g.iter_mut()) {
            // log sigmoid(z) = -softplus(-z), log(1 - sigmoid(z)) = -softplus(z).
            let (z64, t64) = (z as f64, t as f64);
            let sp_pos = softplus(z64);
            let sp_neg = softplus(-z64);
            let pw = pos_weight as f64;
            loss += ws as f64 * (pw * t64 * sp_neg + (1.0 - t64) * sp_pos);
            let p = 1.0 / (1.0 + (-z64).exp());
            // d/dz [pw t softplus(-z) + (1 - t) softplus(z)] = -pw t (1 - p) + (1 - t) p.
            *g = (ws as f64 * (-pw * t64 * (1.0 - p) + (1.0 - t64) * p) * scale) as f32;
        }
    }
    Ok(((loss * scale) as f32, grad))
}

fn softplus(x: f64) -> f64 {
    if x > 30.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(shape: [usize; 4], rng: &mut ChaCha8Rng) -> Tensor4 {
        let n = shape.iter().product();
        Tensor4::from_vec(shape, (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()).unwrap()
    }

    /// L = sum(r * y) + mask_bce(logits) for a random r: the finite-difference gradient of the
    /// input and of every parameter matches backward.
    #[test]
    fn finite_differences_match_backward() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut head = MaskHead::new(3, &mut rng).unwrap();
        let x = random([2, 3, 3, 2], &mut rng);
        let r = random([2, 3, 3, 2], &mut rng);
        let targets: Vec<f32> = (0..12)
            .map(|i| if i % 5 == 0 { 1.0 } else { 0.0 })
            .collect();
        let weights = [1.0, 0.5];
        let loss = |head: &mut MaskHead, x: &Tensor4| -> f64 {
            let y = head.forward(x, Mode::Eval).unwrap();
            let main: f64 = y
                .as_slice()
                .iter()
                .zip(r.as_slice())
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum();
            let (l, _) =
                mask_bce_with_logits(head.logits().unwrap(), &targets, &weights, 3.0).unwrap();
            main + l as f64
        };
        head.forward(&x, Mode::Train).unwrap();
        let (_, g) = mask_bce_with_logits(head.logits().unwrap(), &targets, &weights, 3.0).unwrap();
        head.set_logit_grad(g).unwrap();
        head.zero_grad();
        let dx = head.backward(&r).unwrap();
        let eps = 1e-2f32;
        for i in 0..x.len() {
            let mut xp = x.clone();
            xp.as_slice_mut()[i] += eps;
            let mut xm = x.clone();
            xm.as_slice_mut()[i] -= eps;
            let fd = (loss(&mut head, &xp) - loss(&mut head, &xm)) / (2.0 * eps as f64);
            let got = dx.as_slice()[i] as f64;
            assert!((fd - got).abs() < 2e-3, "dx[{i}]: fd {fd} vs {got}");
        }
        for name in ["conv.weight", "conv.bias"] {
            let analytic = head.param(name).unwrap().grad.as_slice().to_vec();
            for (k, &a) in analytic.iter().enumerate() {
                let orig = head.param(name).unwrap().value.as_slice()[k];
                head.param_mut(name).unwrap().value.as_slice_mut()[k] = orig + eps;
                let lp = loss(&mut head, &x);
                head.param_mut(name).unwrap().value.as_slice_mut()[k] = orig - eps;
                let lm = loss(&mut head, &x);
                head.param_mut(name).unwrap().value.as_slice_mut()[k] = orig;
                let fd = (lp - lm) / (2.0 * eps as f64);
                assert!((fd - a as f64).abs() < 2e-3, "{name}[{k}]: fd {fd} vs {a}");
            }
        }
    }

    #[test]
    fn without_a_pending_gradient_backward_is_the_identity() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut head = MaskHead::new(2, &mut rng).unwrap();
        let x = random([1, 2, 2, 2], &mut rng);
        head.forward(&x, Mode::Train).unwrap();
        head.zero_grad();
        let dy = random([1, 2, 2, 2], &mut rng);
        assert_eq!(head.backward(&dy).unwrap(), dy);
        assert!(head
            .param("conv.weight")
            .unwrap()
            .grad
            .as_slice()
            .iter()
            .all(|&g| g == 0.0));
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut head = MaskHead::new(2, &mut rng).unwrap();
        assert!(head
            .forward(&Tensor4::zeros([1, 3, 2, 2]), Mode::Train)
            .is_err());
        head.forward(&Tensor4::zeros([1, 2, 2, 2]), Mode::Train)
            .unwrap();
        assert!(head.set_logit_grad(Tensor4::zeros([1, 1, 3, 2])).is_err());
        let logits = Tensor4::zeros([1, 1, 2, 2]);
        assert!(mask_bce_with_logits(&logits, &[0.0; 3], &[1.0], 1.0).is_err());
    }

    /// The loss against PyTorch's formula written out (pos_weight on the positive term), on
    /// values where the naive form is exact enough.
    #[test]
    fn loss_matches_the_naive_formula() {
        let z = [0.3f32, -1.2, 2.0, 0.0];
        let t = [1.0f32, 0.0, 0.0, 1.0];
        let logits = Tensor4::from_vec([1, 1, 2, 2], z.to_vec()).unwrap();
        let (loss, _) = mask_bce_with_logits(&logits, &t, &[2.0], 4.0).unwrap();
        let naive: f64 = z
            .iter()
            .zip(&t)
            .map(|(&z, &t)| {
                let p = 1.0 / (1.0 + (-(z as f64)).exp());
                -(4.0 * t as f64 * p.ln() + (1.0 - t as f64) * (1.0 - p).ln())
            })
            .sum::<f64>()
            * 2.0
            / 4.0;
        assert!((loss as f64 - naive).abs() < 1e-6, "{loss} vs {naive}");
    }
}

//! Softmax cross-entropy on logits, and softmax for inference.
//!
//! With log-probabilities `l_ik = log_softmax(z_i)_k`, class weights `w` (all 1 by default),
//! label smoothing `e` and `K` classes, PyTorch's `F.cross_entropy(z, t, weight=w,
//! label_smoothing=e)` with mean reduction is
//!
//! `L = sum_i [ (1 - e) w_{t_i} (-l_{i t_i}) + (e / K) sum_k w_k (-l_ik) ] / sum_i w_{t_i}`
//!
//! and its gradient is `dL/dz_ik = (p_ik * sum_j q_ij - q_ik) / sum_i w_{t_i}` with
//! `q_ik = (1 - e) w_k [k = t_i] + (e / K) w_k` and `p = softmax(z)`. Everything is computed in
//! f64 with the log-sum-exp shift, so logits of +-1e4 are fine.

use fracture_tensor::Tensor4;

use crate::error::{LayersError, Result};

fn check_logits(logits: &Tensor4) -> Result<(usize, usize)> {
    let [n, k, h, w] = logits.shape();
    if h != 1 || w != 1 || n == 0 || k == 0 {
        return Err(LayersError::shape(
            "cross-entropy",
            "logits [N>0, K>0, 1, 1]",
            &logits.shape(),
        ));
    }
    if let Some(i) = logits.as_slice().iter().position(|v| !v.is_finite()) {
        return Err(LayersError::Loss(format!(
            "logit {} of sample {} is {} (not finite)",
            i % k,
            i / k,
            logits.as_slice()[i]
        )));
    }
    Ok((n, k))
}

/// Log-softmax of one row in f64 (log-sum-exp shifted by the row maximum).
fn log_softmax_row(z: &[f32], out: &mut [f64]) {
    let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = z.iter().map(|&v| (v as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    for (o, &v) in out.iter_mut().zip(z) {
        *o = v as f64 - lse;
    }
}

/// Softmax over the classes of logits `[N, K, 1, 1]` -> probabilities `[N, K, 1, 1]`.
///
/// ```
/// use fracture_tensor::Tensor4;
/// let p = fracture_layers::softmax(&Tensor4::from_vec([1, 2, 1, 1], vec![1e4, -1e4]).unwrap()).unwrap();
/// assert_eq!(p.as_slice(), &[1.0, 0.0]);
/// ```
pub fn softmax(logits: &Tensor4) -> Result<Tensor4> {
    let mut out = log_softmax(logits)?;
    for v in out.as_slice_mut() {
        *v = v.exp();
    }
    Ok(out)
}

/// Log-softmax over the classes of logits `[N, K, 1, 1]`, computed in f64.
///
/// ```
/// use fracture_tensor::Tensor4;
/// let l = fracture_layers::log_softmax(&Tensor4::from_vec([1, 2, 1, 1], vec![0.0, 0.0]).unwrap()).unwrap();
/// assert!((l.as_slice()[0] + std::f32::consts::LN_2).abs() < 1e-7);
/// ```
pub fn log_softmax(logits: &Tensor4) -> Result<Tensor4> {
    let (_, k) = check_logits(logits)?;
    let mut out = Tensor4::zeros(logits.shape());
    let mut row = vec![0.0f64; k];
    for (z, o) in logits
        .as_slice()
        .chunks_exact(k)
        .zip(out.as_slice_mut().chunks_exact_mut(k))
    {
        log_softmax_row(z, &mut row);
        for (a, b) in o.iter_mut().zip(&row) {
            *a = *b as f32;
        }
    }
    Ok(out)
}

/// Mean softmax cross-entropy with optional class weights and label smoothing.
///
/// PyTorch equivalent: `nn.CrossEntropyLoss(weight=class_weights,
/// label_smoothing=label_smoothing)` (mean reduction; weighted mean when weights are given).
/// Logits are `[N, K, 1, 1]`, targets `N` class indices in `0..K`.
///
/// ```
/// use fracture_layers::CrossEntropyLoss;
/// use fracture_tensor::Tensor4;
/// let logits = Tensor4::from_vec([2, 2, 1, 1], vec![0.0, 0.0, 1e4, -1e4]).unwrap();
/// let (loss, d) = CrossEntropyLoss::new().forward_backward(&logits, &[1, 0]).unwrap();
/// assert!((loss - std::f32::consts::LN_2 / 2.0).abs() < 1e-6);
/// assert_eq!(d.as_slice(), &[0.25, -0.25, 0.0, 0.0]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CrossEntropyLoss {
    /// One non-negative weight per class (`None`: all 1).
    pub class_weights: Option<Vec<f32>>,
    /// Label smoothing `e` in `[0, 1]` (default 0).
    pub label_smoothing: f32,
}

impl CrossEntropyLoss {
    /// Unweighted, unsmoothed loss.
    pub fn new() -> Self {
        CrossEntropyLoss::default()
    }

    /// Same loss with these class weights.
    pub fn with_class_weights(mut self, w: Vec<f32>) -> Self {
        self.class_weights = Some(w);
        self
    }

    /// Same loss with label smoothing `e`.
    pub fn with_label_smoothing(mut self, e: f32) -> Self {
        self.label_smoothing = e;
        self
    }

    fn check(&self, n: usize, k: usize, targets: &[usize]) -> Result<Vec<f64>> {
        if targets.len() != n {
            return Err(LayersError::Loss(format!(
                "{} targets for a batch of {n} logits",
                targets.len()
            )));
        }
        if let Some((i, &t)) = targets.iter().enumerate().find(|(_, &t)| t >= k) {
            return Err(LayersError::Loss(format!(
                "target {t} of sample {i} is out of range for {k} classes"
            )));
        }
        let e = self.label_smoothing;
        if !(0.0..=1.0).contains(&e) {
            return Err(LayersError::Loss(format!(
                "label_smoothing must be in [0, 1], got {e}"
            )));
        }
        let w = match &self.class_weights {
            None => vec![1.0; k],
            Some(w) => {
                if w.len() != k {
                    return Err(LayersError::Loss(format!(
                        "{} class weights for {k} classes",
                        w.len()
                    )));
                }
                if let Some(v) = w.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                    return Err(LayersError::Loss(format!(
                        "class weights must be finite and non-negative, got {v}"
                    )));
                }
                w.iter().map(|&v| v as f64).collect()
            }
        };
        Ok(w)
    }

    /// The loss and its gradient with respect to the logits (same shape as `logits`).
    ///
    /// Errors on logits not `[N>0, K>0, 1, 1]` or not finite, a target count other than `N`, a
    /// target `>= K`, a wrong number of (or negative) class weights, a smoothing outside
    /// `[0, 1]`, or targets whose weights sum to zero.
    pub fn forward_backward(&self, logits: &Tensor4, targets: &[usize]) -> Result<(f32, Tensor4)> {
        let (n, k) = check_logits(logits)?;
        let w = self.check(n, k, targets)?;
        let e = self.label_smoothing as f64;
        let norm: f64 = targets.iter().map(|&t| w[t]).sum();
        if norm <= 0.0 {
            return Err(LayersError::Loss(
                "the class weights of the targets sum to zero".to_string(),
            ));
        }
        let mut loss = 0.0f64;
        let mut grad = Tensor4::zeros(logits.shape());
        let mut l = vec![0.0f64; k];
        let mut q = vec![0.0f64; k];
        let rows = logits
            .as_slice()
            .chunks_exact(k)
            .zip(grad.as_slice_mut().chunks_exact_mut(k));
        for ((z, g), &t) in rows.zip(targets) {
            log_softmax_row(z, &mut l);
            for (j, qj) in q.iter_mut().enumerate() {
                *qj = e / k as f64 * w[j];
            }
            q[t] += (1.0 - e) * w[t];
            let q_sum: f64 = q.iter().sum();
            for j in 0..k {
                loss -= q[j] * l[j];
                g[j] = ((l[j].exp() * q_sum - q[j]) / norm) as f32;
            }
        }
        Ok(((loss / norm) as f32, grad))
    }

    /// The loss alone.
    pub fn forward(&self, logits: &Tensor4, targets: &[usize]) -> Result<f32> {
        self.forward_backward(logits, targets).map(|(l, _)| l)
    }
}

//! Global max and average pooling side by side ("concat pooling"): each channel plane becomes
//! its maximum and its mean.
//!
//! A fracture is a small detail of a large radiograph. After global *average* pooling, a strong
//! response of the last feature map in one cell out of 64 is diluted by the other 63; the
//! *maximum* keeps it. Concatenating both lets the classifier use either.

use fracture_tensor::Tensor4;
use rayon::prelude::*;

use crate::error::{LayersError, Result};
use crate::layer::{Layer, Mode, Param};

/// `[N, C, H, W] -> [N, 2C, 1, 1]`: channels `0..C` hold each plane's maximum, `C..2C` its mean.
///
/// PyTorch equivalent: fastai's `AdaptiveConcatPool2d(1)`, i.e.
/// `torch.cat([nn.AdaptiveMaxPool2d(1)(x), nn.AdaptiveAvgPool2d(1)(x)], dim=1)`. No parameters.
/// The gradient of a maximum goes to the first position holding it (row-major order), as in
/// PyTorch; a NaN counts as the maximum.
///
/// ```
/// use fracture_layers::{GlobalAvgMaxPool, Layer, Mode};
/// use fracture_tensor::Tensor4;
/// let mut pool = GlobalAvgMaxPool::new();
/// let x = Tensor4::from_vec([1, 1, 2, 2], vec![1.0, 2.0, 3.0, 6.0])?;
/// let y = pool.forward(&x, Mode::Train)?;
/// assert_eq!((y.shape(), y.as_slice()), ([1, 2, 1, 1], &[6.0, 3.0][..]));
/// let dx = pool.backward(&Tensor4::from_vec([1, 2, 1, 1], vec![1.0, 4.0])?)?;
/// assert_eq!(dx.as_slice(), &[1.0, 1.0, 1.0, 2.0]);
/// # Ok::<(), fracture_layers::LayersError>(())
/// ```
#[derive(Debug, Default)]
pub struct GlobalAvgMaxPool {
    /// Input shape and the flat index (within its plane) of each plane's maximum.
    cache: Option<([usize; 4], Vec<u32>)>,
}

impl GlobalAvgMaxPool {
    /// A concat pooling layer.
    pub fn new() -> Self {
        GlobalAvgMaxPool::default()
    }
}

/// Index of the first maximum of a plane (a NaN wins at once) and the plane's mean.
fn plane_max_mean(plane: &[f32]) -> (u32, f32, f32) {
    let (mut arg, mut best) = (0usize, plane[0]);
    let mut sum = 0.0f64;
    for (i, &v) in plane.iter().enumerate() {
        if v.is_nan() {
            return (i as u32, v, f32::NAN);
        }
        if v > best {
            best = v;
            arg = i;
        }
        sum += v as f64;
    }
    (arg as u32, best, (sum / plane.len() as f64) as f32)
}

impl Layer for GlobalAvgMaxPool {
    fn kind(&self) -> &'static str {
        "GlobalAvgMaxPool"
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        let [n, c, h, w] = x.shape();
        if h == 0 || w == 0 || h * w > u32::MAX as usize {
            return Err(LayersError::shape(
                "GlobalAvgMaxPool",
                "input with 0 < H * W < 2^32",
                &x.shape(),
            ));
        }
        let hw = h * w;
        let planes: Vec<(u32, f32, f32)> =
            x.as_slice().par_chunks(hw).map(plane_max_mean).collect();
        let mut y = vec![0.0f32; n * 2 * c];
        for (p, &(_, max, mean)) in planes.iter().enumerate() {
            let (i, ch) = (p / c, p % c);
            y[i * 2 * c + ch] = max;
            y[i * 2 * c + c + ch] = mean;
        }
        self.cache = if mode.caches() {
            Some((x.shape(), planes.iter().map(|p| p.0).collect()))
        } else {
            None
        };
        Ok(Tensor4::from_vec([n, 2 * c, 1, 1], y)?)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        let (shape, argmax) = self.cache.take().ok_or(LayersError::NoForwardCache {
            layer: "GlobalAvgMaxPool",
        })?;
        let [n, c, h, w] = shape;
        if dy.shape() != [n, 2 * c, 1, 1] {
            return Err(LayersError::shape(
                "GlobalAvgMaxPool backward",
                format!("dy of shape [{n}, {}, 1, 1]", 2 * c),
                &dy.shape(),
            ));
        }
        let hw = h * w;
        let g = dy.as_slice();
        let mut dx = Tensor4::for_overwrite(shape);
        dx.as_slice_mut()
            .par_chunks_mut(hw)
            .enumerate()
            .for_each(|(p, plane)| {
                let (i, ch) = (p / c, p % c);
                let avg = g[i * 2 * c + c + ch] / hw as f32;
                plane.fill(avg);
                plane[argmax[p] as usize] += g[i * 2 * c + ch];
            });
        Ok(dx)
    }

    fn visit_params<'a>(&'a mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &'a mut Param)) {}

    fn visit_params_ref<'a>(&'a self, _prefix: &str, _f: &mut dyn FnMut(&str, &'a Param)) {}

    fn clear_cache(&mut self) {
        self.cache = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_pick_the_first_maximum_and_nan_wins() {
        assert_eq!(plane_max_mean(&[1.0, 5.0, 5.0, 2.0]).0, 1);
        let (i, m, mean) = plane_max_mean(&[1.0, f32::NAN, 9.0]);
        assert_eq!(i, 1);
        assert!(m.is_nan() && mean.is_nan());
    }

    #[test]
    fn errors_name_the_layer() {
        let mut p = GlobalAvgMaxPool::new();
        assert!(p
            .backward(&Tensor4::zeros([1, 2, 1, 1]))
            .unwrap_err()
            .to_string()
            .contains("GlobalAvgMaxPool"));
        let x = Tensor4::zeros([2, 3, 2, 2]);
        p.forward(&x, Mode::Train).unwrap();
        let err = p.backward(&Tensor4::zeros([2, 3, 1, 1])).unwrap_err();
        assert!(err.to_string().contains("GlobalAvgMaxPool"), "{err}");
        // Eval mode keeps nothing for backward.
        p.forward(&x, Mode::Eval).unwrap();
        assert!(p.backward(&Tensor4::zeros([2, 6, 1, 1])).is_err());
    }
}

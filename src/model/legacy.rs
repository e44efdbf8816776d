//! Reading model descriptions as files store them: the typed form (`arch` tagged by
//! `family`), and the flat form of files written before it (`block`, `widths`,
//! `blocks_per_stage`, `stem_pool`, `drop_path` beside the shared fields), which becomes the
//! typed form through [`Architecture::uniform`] and builds the very same network.

use serde::Deserialize;

use super::{Architecture, BlockKind, Head, ModelConfig};

/// A model description as read from a file, in either form.
#[derive(Deserialize)]
pub(super) struct StoredModelConfig {
    image_size: usize,
    in_channels: usize,
    num_classes: usize,
    dropout: f32,
    #[serde(default)]
    head: Head,
    #[serde(default = "one")]
    members: usize,
    /// The typed form.
    #[serde(default)]
    arch: Option<Architecture>,
    /// The flat form: the family...
    #[serde(default)]
    block: Option<BlockKind>,
    /// ... and the parameters every family shared (files before `stem_pool` and `drop_path`
    /// existed read them as off).
    #[serde(default)]
    widths: Option<Vec<usize>>,
    #[serde(default)]
    blocks_per_stage: Option<usize>,
    #[serde(default)]
    stem_pool: Option<bool>,
    #[serde(default)]
    drop_path: Option<f32>,
    /// The box-mask head (absent: none).
    #[serde(default)]
    mask_head: bool,
    /// The typicality bank (absent: none).
    #[serde(default)]
    typicality: Option<crate::typicality::TypicalityConfig>,
}

fn one() -> usize {
    1
}

impl TryFrom<StoredModelConfig> for ModelConfig {
    type Error = String;

    fn try_from(s: StoredModelConfig) -> Result<Self, String> {
        let flat = s.block.is_some()
            || s.widths.is_some()
            || s.blocks_per_stage.is_some()
            || s.stem_pool.is_some()
            || s.drop_path.is_some();
        let arch = match (s.arch, s.block) {
            (Some(_), _) if flat => {
                return Err(
                    "the model description has both `arch` and the fields of the \
                            older flat form (`block`, `widths`, ...); keep one"
                        .into(),
                )
            }
            (Some(arch), _) => arch,
            (None, Some(kind)) => {
                let widths = match (kind, s.widths) {
                    (_, Some(w)) => w,
                    // Lite0's flat form held its fixed stem and head widths, unused.
                    (BlockKind::EfficientNetLite(_), None) => Vec::new(),
                    (_, None) => return Err("the flat model description lacks `widths`".into()),
                };
                Architecture::uniform(
                    kind,
                    &widths,
                    s.blocks_per_stage.unwrap_or(1),
                    s.stem_pool.unwrap_or(false),
                    s.drop_path.unwrap_or(0.0),
                )
                .map_err(|e| e.to_string())?
            }
            (None, None) => {
                return Err("the model description lacks `arch` (the architecture)".into())
            }
        };
        Ok(ModelConfig {
            image_size: s.image_size,
            in_channels: s.in_channels,
            num_classes: s.num_classes,
            arch,
            head: s.head,
            dropout: s.dropout,
            members: s.members,
            mask_head: s.mask_head,
            typicality: s.typicality,
        })
    }
}

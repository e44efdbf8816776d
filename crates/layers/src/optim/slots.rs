//! The per-parameter state of an optimizer as named slots: one conversion to and from the plain
//! [`OptimizerState`] that checkpoints save, shared by [`Sgd`](super::Sgd) and
//! [`AdamW`](super::AdamW), with the kind check, slot size checks and unknown-slot errors in one
//! place.

use std::collections::BTreeMap;

use crate::error::{LayersError, Result};

use super::{OptimizerState, ParamState};

/// One parameter's state inside an optimizer, saved as named buffers of the parameter's size.
pub(super) trait SlotState: Sized {
    /// The optimizer's name in error messages (`"SGD"`).
    const NAME: &'static str;
    /// [`OptimizerState::kind`] of the optimizer (`"sgd"`).
    const KIND: &'static str;

    /// Updates applied to the parameter.
    fn step(&self) -> u64;

    /// The parameter's PyTorch shape.
    fn shape(&self) -> &[usize];

    /// The buffers to save, by slot name.
    fn slots(&self) -> Vec<(&'static str, &[f32])>;

    /// Rebuilds the state from a saved step count, shape and slots.
    fn read(step: u64, shape: Vec<usize>, slots: &mut SlotReader) -> Result<Self>;
}

/// The saved slots of one parameter, handed out by name with their sizes checked.
pub(super) struct SlotReader {
    kind: &'static str,
    param: String,
    len: usize,
    slots: BTreeMap<String, Vec<f32>>,
}

impl SlotReader {
    /// Slot `name` if saved, erroring on a wrong size.
    pub(super) fn optional(&mut self, name: &str) -> Result<Option<Vec<f32>>> {
        match self.slots.remove(name) {
            None => Ok(None),
            Some(v) if v.len() == self.len => Ok(Some(v)),
            Some(v) => Err(LayersError::Param {
                name: self.param.clone(),
                reason: format!(
                    "optimizer slot {name} has {} values, expected {}",
                    v.len(),
                    self.len
                ),
            }),
        }
    }

    /// Slot `name`, erroring if it is missing or has a wrong size.
    pub(super) fn required(&mut self, name: &str) -> Result<Vec<f32>> {
        self.optional(name)?.ok_or_else(|| LayersError::Param {
            name: self.param.clone(),
            reason: format!("{} state lacks slot {name}", self.kind),
        })
    }

    /// Errors if a saved slot was not taken (a slot this optimizer does not know).
    fn finish(self) -> Result<()> {
        match self.slots.keys().next() {
            None => Ok(()),
            Some(k) => Err(LayersError::Param {
                name: self.param,
                reason: format!("unknown {} state slot {k:?}", self.kind),
            }),
        }
    }
}

/// The plain form of an optimizer's per-parameter `state`, with its hyper-parameters as JSON.
pub(super) fn export<T: SlotState>(
    config_json: String,
    state: &BTreeMap<String, T>,
) -> OptimizerState {
    let params = state
        .iter()
        .map(|(name, s)| {
            let slots = s
                .slots()
                .into_iter()
                .map(|(slot, v)| (slot.to_string(), v.to_vec()))
                .collect();
            let ps = ParamState {
                step: s.step(),
                shape: s.shape().to_vec(),
                slots,
            };
            (name.clone(), ps)
        })
        .collect();
    OptimizerState {
        kind: T::KIND.to_string(),
        config_json,
        params,
    }
}

/// The per-parameter state saved in `state`, checked: the optimizer kind, every slot's size,
/// no missing required slot and no unknown slot.
pub(super) fn import<T: SlotState>(state: OptimizerState) -> Result<BTreeMap<String, T>> {
    if state.kind != T::KIND {
        return Err(LayersError::config(
            T::NAME,
            format!("cannot load the state of a {:?} optimizer", state.kind),
        ));
    }
    let mut out = BTreeMap::new();
    for (name, ps) in state.params {
        let mut reader = SlotReader {
            kind: T::NAME,
            param: name.clone(),
            len: ps.shape.iter().product(),
            slots: ps.slots,
        };
        let s = T::read(ps.step, ps.shape, &mut reader)?;
        reader.finish()?;
        out.insert(name, s);
    }
    Ok(out)
}

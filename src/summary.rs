//! A layer table of a network, as `torchinfo.summary` or Keras `model.summary()` print it:
//! every layer's state-dict path, kind, output shape for one input, and parameter count.

use fracture_layers::{Layer, Mode, Sequential};
use fracture_tensor::Tensor4;

use crate::error::Result;

/// One row of a [`summary`].
///
/// ```
/// let row = fracture_nn::summary::SummaryRow { path: "fc".into(), kind: "Linear", depth: 0, output: [1, 2, 1, 1], params: 6 };
/// assert_eq!(row.params, 6);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SummaryRow {
    /// State-dict path of the layer (`_blocks.3`).
    pub path: String,
    /// [`Layer::kind`].
    pub kind: &'static str,
    /// Nesting depth (0 for the network's own children).
    pub depth: usize,
    /// Output shape `[N, C, H, W]` for the input given to [`summary`].
    pub output: [usize; 4],
    /// Trainable scalars of the layer, its sub-layers included.
    pub params: usize,
}

/// Runs `x` through `net` in [`Mode::Eval`] layer by layer and lists every layer down to
/// `max_depth` levels of nested [`Sequential`]s (deeper composites are one row each).
///
/// ```
/// use fracture_nn::{summary::summary, ModelConfig};
/// use fracture_nn::tensor::Tensor4;
/// let mut net = ModelConfig::lite0(64).build(0)?;
/// let rows = summary(&mut net, &Tensor4::zeros([1, 1, 64, 64]), 1)?;
/// assert_eq!(rows[0].path, "_conv_stem");
/// assert_eq!(rows[0].output, [1, 32, 32, 32]);
/// let last = rows.last().unwrap();
/// assert_eq!((last.path.as_str(), last.output), ("_fc", [1, 2, 1, 1]));
/// assert!(rows.iter().any(|r| r.path == "_blocks.15" && r.output == [1, 320, 2, 2]));
/// # Ok::<(), fracture_nn::Error>(())
/// ```
pub fn summary(net: &mut Sequential, x: &Tensor4, max_depth: usize) -> Result<Vec<SummaryRow>> {
    let mut rows = Vec::new();
    walk(net, "", x, 0, max_depth, &mut rows)?;
    net.clear_cache();
    Ok(rows)
}

fn walk(
    seq: &mut Sequential,
    prefix: &str,
    x: &Tensor4,
    depth: usize,
    max_depth: usize,
    rows: &mut Vec<SummaryRow>,
) -> Result<Tensor4> {
    let mut h = x.clone();
    for (name, layer) in seq.layers_mut() {
        let path = fracture_layers::join_name(prefix, name);
        let params = layer.num_params();
        let kind = layer.kind();
        if depth < max_depth {
            // Only a Sequential's children form a chain that can run one by one.
            if let Some(inner) = layer.as_sequential_mut() {
                h = walk(inner, &path, &h, depth + 1, max_depth, rows)?;
                continue;
            }
        }
        h = layer.forward(&h, Mode::Eval)?;
        rows.push(SummaryRow {
            path,
            kind,
            depth,
            output: h.shape(),
            params,
        });
    }
    Ok(h)
}

/// The table as text: one line per row, names indented by depth, and a total.
///
/// ```
/// use fracture_nn::{summary::{format_summary, summary}, ModelConfig};
/// use fracture_nn::tensor::Tensor4;
/// let mut net = ModelConfig::phantom(32).build(0)?;
/// let text = format_summary(&summary(&mut net, &Tensor4::zeros([1, 1, 32, 32]), 2)?);
/// assert!(text.contains("blocks.0.0") && text.contains("Conv2d") && text.contains("[1, 16, 32, 32]"));
/// # Ok::<(), fracture_nn::Error>(())
/// ```
pub fn format_summary(rows: &[SummaryRow]) -> String {
    let width = rows
        .iter()
        .map(|r| r.path.len() + 2 * r.depth)
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<width$}  {:<44}  {:<18}  {:>10}\n",
        "layer", "kind", "output", "params"
    );
    for r in rows {
        let name = format!("{}{}", "  ".repeat(r.depth), r.path);
        out.push_str(&format!(
            "{name:<width$}  {:<44}  {:<18}  {:>10}\n",
            r.kind,
            format!("{:?}", r.output),
            r.params
        ));
    }
    let total: usize = rows.iter().map(|r| r.params).sum();
    out.push_str(&format!(
        "{:<width$}  {:<44}  {:<18}  {:>10}\n",
        "total", "", "", total
    ));
    out
}

//! Training curves and ROC curves written as PNG images.
//!
//! Plots are drawn with `plotters`' bitmap backend and encoded by the `image` crate, with no
//! font features: nothing here needs a system font or a C library, so a fresh machine builds
//! it. The price is that the pictures carry no text; their layout is fixed and documented here
//! and in `docs/`:
//!
//! - [`plot_training_curves`]: left panel, training loss (blue) and validation loss (orange)
//!   per epoch, y from 0 to the largest loss; right panel, validation ROC-AUC (green) per
//!   epoch, y from 0.5 (grey line, chance) to 1.0. Light grey grid lines every 0.1 of each axis.
//! - [`plot_roc_curve`]: false positive rate on x, sensitivity on y, both 0..1; the curve in
//!   blue, the diagonal (chance) in grey, and the chosen operating point as a red dot.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};

/// One epoch's figures, as plotted by [`plot_training_curves`].
///
/// ```
/// use fracture_nn::curves::EpochPoint;
/// let p = EpochPoint { epoch: 1, train_loss: 0.69, val_loss: 0.70, val_auc: 0.5 };
/// assert_eq!(p.epoch, 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochPoint {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Mean validation loss.
    pub val_loss: f64,
    /// Validation ROC-AUC.
    pub val_auc: f64,
}

const W: u32 = 960;
const H: u32 = 420;
const GRID: RGBColor = RGBColor(225, 225, 225);
const ORANGE: RGBColor = RGBColor(230, 120, 20);
const GREEN_: RGBColor = RGBColor(20, 150, 60);

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Plot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Horizontal grid lines every `step` from `lo` to `hi`, drawn as series (no text needed).
fn grid<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    x: (f64, f64),
    y: (f64, f64),
    step: f64,
) -> std::result::Result<(), String> {
    let mut v = y.0;
    while v <= y.1 + 1e-9 {
        chart
            .draw_series(LineSeries::new([(x.0, v), (x.1, v)], GRID.stroke_width(1)))
            .map_err(|e| e.to_string())?;
        v += step;
    }
    Ok(())
}

fn save_rgb(path: &Path, buf: &[u8], w: u32, h: u32) -> Result<()> {
    let tmp = path.with_extension("png.tmp");
    image::save_buffer_with_format(
        &tmp,
        buf,
        w,
        h,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| plot_err(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Writes `curves.png`: losses (left) and validation ROC-AUC (right) per epoch.
///
/// An empty history draws empty axes. The file is written atomically.
///
/// ```
/// use fracture_nn::curves::{plot_training_curves, EpochPoint};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("curves.png");
/// let h = [EpochPoint { epoch: 1, train_loss: 0.7, val_loss: 0.6, val_auc: 0.8 },
///          EpochPoint { epoch: 2, train_loss: 0.4, val_loss: 0.5, val_auc: 0.9 }];
/// plot_training_curves(&path, &h)?;
/// assert!(path.exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn plot_training_curves(path: &Path, history: &[EpochPoint]) -> Result<()> {
    let mut buf = vec![0u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let (left, right) = root.split_horizontally(W / 2);
        let n = history.len().max(2) as f64;
        let xr = (1.0, n);
        let max_loss = history
            .iter()
            .flat_map(|p| [p.train_loss, p.val_loss])
            .filter(|v| v.is_finite())
            .fold(0.1f64, f64::max)
            * 1.05;
        let mut c = ChartBuilder::on(&left)
            .margin(24)
            .build_cartesian_2d(xr.0..xr.1, 0.0..max_loss)
            .map_err(|e| plot_err(path, e))?;
        grid(&mut c, xr, (0.0, max_loss), max_loss / 10.0).map_err(|e| plot_err(path, e))?;
        c.configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .draw()
            .map_err(|e| plot_err(path, e))?;
        let pts = |f: fn(&EpochPoint) -> f64| {
            history
                .iter()
                .filter(move |p| f(p).is_finite())
                .map(move |p| (p.epoch as f64, f(p)))
                .collect::<Vec<_>>()
        };
        c.draw_series(LineSeries::new(pts(|p| p.train_loss), BLUE.stroke_width(3)))
            .map_err(|e| plot_err(path, e))?;
        c.draw_series(LineSeries::new(pts(|p| p.val_loss), ORANGE.stroke_width(3)))
            .map_err(|e| plot_err(path, e))?;

        let mut c = ChartBuilder::on(&right)
            .margin(24)
            .build_cartesian_2d(xr.0..xr.1, 0.5..1.0)
            .map_err(|e| plot_err(path, e))?;
        grid(&mut c, xr, (0.5, 1.0), 0.05).map_err(|e| plot_err(path, e))?;
        c.configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .draw()
            .map_err(|e| plot_err(path, e))?;
        c.draw_series(LineSeries::new(
            pts(|p| p.val_auc.clamp(0.5, 1.0)),
            GREEN_.stroke_width(3),
        ))
        .map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    save_rgb(path, &buf, W, H)
}

/// Writes a ROC curve (`fpr`, `tpr` from [`fracture_metrics::roc_curve`]) with the operating
/// point `(1 - specificity, sensitivity)` marked in red, to a square PNG.
///
/// ```
/// use fracture_nn::curves::plot_roc_curve;
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("roc.png");
/// plot_roc_curve(&path, &[0.0, 0.0, 0.5, 1.0], &[0.0, 0.5, 1.0, 1.0], Some((0.5, 1.0)))?;
/// assert!(path.exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn plot_roc_curve(
    path: &Path,
    fpr: &[f64],
    tpr: &[f64],
    point: Option<(f64, f64)>,
) -> Result<()> {
    const S: u32 = 480;
    let mut buf = vec![0u8; (S * S * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (S, S)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let mut c = ChartBuilder::on(&root)
            .margin(24)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(|e| plot_err(path, e))?;
        grid(&mut c, (0.0, 1.0), (0.0, 1.0), 0.1).map_err(|e| plot_err(path, e))?;
        c.configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .draw()
            .map_err(|e| plot_err(path, e))?;
        c.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            RGBColor(150, 150, 150).stroke_width(1),
        ))
        .map_err(|e| plot_err(path, e))?;
        c.draw_series(LineSeries::new(
            fpr.iter().zip(tpr).map(|(&x, &y)| (x, y)),
            BLUE.stroke_width(3),
        ))
        .map_err(|e| plot_err(path, e))?;
        if let Some((x, y)) = point {
            c.draw_series(std::iter::once(Circle::new((x, y), 6, RED.filled())))
                .map_err(|e| plot_err(path, e))?;
        }
        root.present().map_err(|e| plot_err(path, e))?;
    }
    save_rgb(path, &buf, S, S)
}

//! Training curves and ROC curves written as PNG images.
//!
//! Plots are drawn with `plotters`' bitmap backend and encoded by the `image` crate. Text
//! (titles, axis labels, tick numbers, legends) is set in DejaVu Sans, embedded in the binary
//! and rasterised in pure Rust ([`crate::fonts`]): nothing here needs a system font or a C
//! library, so a fresh machine builds and draws them.
//!
//! - [`plot_training_curves`]: left panel, training loss (blue) and validation loss (orange)
//!   per epoch, y from 0 to the largest loss; right panel, validation ROC-AUC (green) per
//!   epoch, y from 0.5 (chance) to 1.0. Each panel has a title, labelled axes and a legend.
//! - [`plot_roc_curve`]: false positive rate on x, sensitivity on y, both 0..1; the curve in
//!   blue with its area in the legend, the diagonal (chance) in grey, and the chosen operating
//!   point as a red dot with its sensitivity and specificity in the legend.

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

const W: u32 = 1100;
const H: u32 = 480;
const ORANGE: RGBColor = RGBColor(230, 120, 20);
const GREEN_: RGBColor = RGBColor(20, 150, 60);
const GREY: RGBColor = RGBColor(150, 150, 150);

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Plot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from((crate::fonts::FAMILY, size).into_font())
}

/// Tick label of an epoch axis: whole numbers only (plotters may place ticks in between).
fn epoch_tick(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-6 {
        format!("{:.0}", x)
    } else {
        String::new()
    }
}

/// A legend entry's sample: a short line in the series' style.
fn legend_line(colour: RGBColor, width: u32) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(width))
}

/// Area under a ROC curve by the trapezoidal rule (points in curve order).
fn trapezoid_auc(fpr: &[f64], tpr: &[f64]) -> f64 {
    fpr.windows(2)
        .zip(tpr.windows(2))
        .map(|(x, y)| (x[1] - x[0]) * (y[1] + y[0]) / 2.0)
        .sum()
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
    crate::fonts::register();
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
        let x_ticks = (n as usize).min(11);
        let pts = |f: fn(&EpochPoint) -> f64| {
            history
                .iter()
                .filter(move |p| f(p).is_finite())
                .map(move |p| (p.epoch as f64, f(p)))
                .collect::<Vec<_>>()
        };

        let mut c = ChartBuilder::on(&left)
            .margin(16)
            .caption("Loss per epoch", font(22.0))
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(xr.0..xr.1, 0.0..max_loss)
            .map_err(|e| plot_err(path, e))?;
        c.configure_mesh()
            .x_labels(x_ticks)
            .y_labels(8)
            .x_label_formatter(&epoch_tick)
            .y_label_formatter(&|v| format!("{v:.2}"))
            .x_desc("epoch")
            .y_desc("cross-entropy loss")
            .label_style(font(15.0))
            .axis_desc_style(font(16.0))
            .light_line_style(RGBColor(240, 240, 240))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        c.draw_series(LineSeries::new(pts(|p| p.train_loss), BLUE.stroke_width(3)))
            .map_err(|e| plot_err(path, e))?
            .label("training loss")
            .legend(legend_line(BLUE, 3));
        c.draw_series(LineSeries::new(pts(|p| p.val_loss), ORANGE.stroke_width(3)))
            .map_err(|e| plot_err(path, e))?
            .label("validation loss")
            .legend(legend_line(ORANGE, 3));
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(GREY)
            .label_font(font(15.0))
            .draw()
            .map_err(|e| plot_err(path, e))?;

        let mut c = ChartBuilder::on(&right)
            .margin(16)
            .caption("Validation ROC-AUC per epoch", font(22.0))
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(xr.0..xr.1, 0.5..1.0)
            .map_err(|e| plot_err(path, e))?;
        c.configure_mesh()
            .x_labels(x_ticks)
            .y_labels(6)
            .x_label_formatter(&epoch_tick)
            .y_label_formatter(&|v| format!("{v:.2}"))
            .x_desc("epoch")
            .y_desc("ROC-AUC (0.5 = chance)")
            .label_style(font(15.0))
            .axis_desc_style(font(16.0))
            .light_line_style(RGBColor(240, 240, 240))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        c.draw_series(LineSeries::new(
            pts(|p| p.val_auc.clamp(0.5, 1.0)),
            GREEN_.stroke_width(3),
        ))
        .map_err(|e| plot_err(path, e))?
        .label("validation ROC-AUC")
        .legend(legend_line(GREEN_, 3));
        c.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(GREY)
            .label_font(font(15.0))
            .draw()
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
    crate::fonts::register();
    const S: u32 = 600;
    let mut buf = vec![0u8; (S * S * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (S, S)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let mut c = ChartBuilder::on(&root)
            .margin(18)
            .caption("ROC curve", font(22.0))
            .x_label_area_size(48)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(|e| plot_err(path, e))?;
        c.configure_mesh()
            .x_labels(11)
            .y_labels(11)
            .x_label_formatter(&|v| format!("{v:.1}"))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .x_desc("false positive rate (1 - specificity)")
            .y_desc("sensitivity (true positive rate)")
            .label_style(font(15.0))
            .axis_desc_style(font(16.0))
            .light_line_style(RGBColor(240, 240, 240))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        c.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            GREY.stroke_width(1),
        ))
        .map_err(|e| plot_err(path, e))?
        .label("chance")
        .legend(legend_line(GREY, 1));
        let auc = trapezoid_auc(fpr, tpr);
        c.draw_series(LineSeries::new(
            fpr.iter().zip(tpr).map(|(&x, &y)| (x, y)),
            BLUE.stroke_width(3),
        ))
        .map_err(|e| plot_err(path, e))?
        .label(format!("model (AUC {auc:.3})"))
        .legend(legend_line(BLUE, 3));
        if let Some((x, y)) = point {
            c.draw_series(std::iter::once(Circle::new((x, y), 6, RED.filled())))
                .map_err(|e| plot_err(path, e))?
                .label(format!(
                    "operating point (sensitivity {y:.2}, specificity {:.2})",
                    1.0 - x
                ))
                .legend(|(x, y)| Circle::new((x + 12, y), 6, RED.filled()));
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(GREY)
            .label_font(font(15.0))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    save_rgb(path, &buf, S, S)
}

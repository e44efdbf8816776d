//! The page of a local validation (`report/index.html`): one self-contained HTML file, its
//! three plots (ROC with both operating points, reliability diagram, histogram of P per
//! class) embedded as PNG data URLs, so it can be mailed or archived as it is.

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::validation::{LocalValidation, PointFigures};

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Config(format!("cannot draw the validation plot: {e}"))
}

fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from((crate::fonts::FAMILY, size).into_font())
}

const GREY: RGBColor = RGBColor(150, 150, 150);

const W: u32 = 520;
const H: u32 = 440;

/// A drawing of `W x H` as PNG bytes.
fn png(
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
) -> Result<Vec<u8>> {
    crate::fonts::register();
    let mut buf = vec![0u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(root.clone())?;
        root.present().map_err(plot_err)?;
    }
    let img = image::RgbImage::from_raw(W, H, buf).ok_or_else(|| plot_err("buffer size"))?;
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(plot_err)?;
    Ok(out)
}

fn roc_png(v: &LocalValidation) -> Result<Vec<u8>> {
    png(|root| {
        let mut c = ChartBuilder::on(&root)
            .margin(14)
            .caption(format!("ROC (AUC {:.3})", v.auc), font(18.0))
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(plot_err)?;
        c.configure_mesh()
            .x_desc("1 - specificity")
            .y_desc("sensitivity")
            .label_style(font(13.0))
            .axis_desc_style(font(14.0))
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(plot_err)?;
        c.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            GREY.stroke_width(1),
        ))
        .map_err(plot_err)?;
        c.draw_series(LineSeries::new(
            v.roc.iter().map(|p| (p[0], p[1])),
            BLUE.stroke_width(3),
        ))
        .map_err(plot_err)?
        .label("this data")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE.stroke_width(3)));
        for (f, colour, name) in [
            (&v.at_model_threshold, RED, "model's threshold"),
            (
                &v.at_local_threshold,
                RGBColor(0, 140, 60),
                "local threshold",
            ),
        ] {
            let (x, y) = (1.0 - f.specificity, f.sensitivity);
            c.draw_series(std::iter::once(Circle::new((x, y), 6, colour.filled())))
                .map_err(plot_err)?
                .label(format!("{name} {:.3}", f.threshold))
                .legend(move |(x, y)| Circle::new((x + 9, y), 6, colour.filled()));
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(GREY)
            .label_font(font(13.0))
            .draw()
            .map_err(plot_err)
    })
}

fn calibration_png(v: &LocalValidation) -> Result<Vec<u8>> {
    png(|root| {
        let mut c = ChartBuilder::on(&root)
            .margin(14)
            .caption(
                format!("Reliability (ECE {:.3})", v.expected_calibration_error),
                font(18.0),
            )
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(plot_err)?;
        c.configure_mesh()
            .x_desc("mean predicted P(fractured)")
            .y_desc("observed share fractured")
            .label_style(font(13.0))
            .axis_desc_style(font(14.0))
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(plot_err)?;
        c.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            GREY.stroke_width(1),
        ))
        .map_err(plot_err)?;
        let pts: Vec<(f64, f64, usize)> = v
            .calibration
            .iter()
            .filter_map(|b| Some((b.mean_predicted?, b.observed?, b.n)))
            .collect();
        c.draw_series(LineSeries::new(
            pts.iter().map(|p| (p.0, p.1)),
            BLUE.stroke_width(2),
        ))
        .map_err(plot_err)?;
        c.draw_series(pts.iter().map(|p| {
            let r = (3.0 + (p.2 as f64).sqrt()).min(12.0) as i32;
            Circle::new((p.0, p.1), r, BLUE.mix(0.6).filled())
        }))
        .map_err(plot_err)?;
        Ok(())
    })
}

fn histogram_png(v: &LocalValidation) -> Result<Vec<u8>> {
    const BINS: usize = 20;
    let mut counts = [[0usize; BINS]; 2];
    for &(p, y) in &v.scores {
        let b = ((p.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1);
        counts[y as usize][b] += 1;
    }
    // Shares within each class, so a rare class is as visible as a common one.
    let totals = [v.negatives.max(1), v.positives.max(1)];
    let top = (0..2)
        .flat_map(|c| counts[c].iter().map(move |&k| k as f64 / totals[c] as f64))
        .fold(0.05f64, f64::max);
    png(|root| {
        let mut c = ChartBuilder::on(&root)
            .margin(14)
            .caption("P(fractured) by true class", font(18.0))
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..1.0, 0.0..top * 1.1)
            .map_err(plot_err)?;
        c.configure_mesh()
            .x_desc("P(fractured)")
            .y_desc("share of the class")
            .label_style(font(13.0))
            .axis_desc_style(font(14.0))
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(plot_err)?;
        for (class, colour, name) in [(0usize, BLUE, "intact"), (1, RED, "fractured")] {
            let w = 1.0 / BINS as f64;
            c.draw_series((0..BINS).map(|b| {
                let h = counts[class][b] as f64 / totals[class] as f64;
                let x0 = b as f64 * w;
                Rectangle::new([(x0, 0.0), (x0 + w, h)], colour.mix(0.35).filled())
            }))
            .map_err(plot_err)?
            .label(format!(
                "{name} (n = {})",
                if class == 1 { v.positives } else { v.negatives }
            ))
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.mix(0.35).filled())
            });
        }
        for (f, colour) in [
            (&v.at_model_threshold, RED),
            (&v.at_local_threshold, RGBColor(0, 140, 60)),
        ] {
            if f.threshold.is_finite() {
                c.draw_series(LineSeries::new(
                    [(f.threshold, 0.0), (f.threshold, top * 1.1)],
                    colour.stroke_width(2),
                ))
                .map_err(plot_err)?;
            }
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperMiddle)
            .background_style(WHITE.mix(0.9))
            .border_style(GREY)
            .label_font(font(13.0))
            .draw()
            .map_err(plot_err)
    })
}

/// Standard base64 with padding (RFC 4648).
///
/// ```
/// assert_eq!(fracture_nn::validation_report::base64(b"fra"), "ZnJh");
/// assert_eq!(fracture_nn::validation_report::base64(b"fr"), "ZnI=");
/// ```
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(T[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn pct(v: f64) -> String {
    format!("{:.1} %", 100.0 * v)
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), pct)
}

fn point_row(name: &str, f: &PointFigures) -> String {
    format!(
        "<tr><th>{name}</th><td>{}</td><td>{} ({}-{})</td><td>{} ({}-{})</td><td>{}</td><td>{}</td><td>{} / {} / {} / {}</td></tr>",
        if f.threshold.is_finite() { format!("{:.4}", f.threshold) } else { "none (nothing flagged)".into() },
        pct(f.sensitivity),
        pct(f.sensitivity_ci[0]),
        pct(f.sensitivity_ci[1]),
        pct(f.specificity),
        pct(f.specificity_ci[0]),
        pct(f.specificity_ci[1]),
        opt(f.ppv),
        opt(f.npv),
        f.tp,
        f.fp,
        f.tn,
        f.fn_
    )
}

/// What the page says about the model and the data, besides the figures.
#[derive(Clone, Debug, Default)]
pub struct ReportContext {
    /// The model file as given.
    pub model: String,
    /// One line describing the model.
    pub model_description: String,
    /// The data folder and split, with its fingerprint.
    pub data: String,
    /// When the report was made (RFC 3339 or similar).
    pub date: String,
}

/// The whole page.
pub fn render_html(v: &LocalValidation, ctx: &ReportContext) -> Result<String> {
    let img = |bytes: Vec<u8>, alt: &str| {
        format!(
            "<figure><img alt=\"{alt}\" src=\"data:image/png;base64,{}\"></figure>",
            base64(&bytes)
        )
    };
    let plots = [
        img(
            roc_png(v)?,
            "ROC curve with the model's and the local operating point",
        ),
        img(calibration_png(v)?, "reliability diagram"),
        img(
            histogram_png(v)?,
            "histogram of P(fractured) per true class",
        ),
    ]
    .concat();
    let typical = match v.typical_share {
        Some(s) => format!(
            "<p><strong>{}</strong> of these images are typical of the radiographs the model learned from (its typicality check); the others get a warning with their answer.</p>",
            pct(s)
        ),
        None => "<p>This model file has no typicality reference: it cannot say which images are unlike its training data.</p>".into(),
    };
    let subgroups = match &v.subgroups {
        Some((by, rows)) => {
            let mut t = format!(
                "<h2>By {}</h2><table><tr><th>{}</th><th>n</th><th>fractured</th><th>ROC-AUC (95 % CI)</th><th>sensitivity</th><th>specificity</th></tr>",
                esc(by),
                esc(by)
            );
            for r in rows {
                t += &format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&r.value),
                    r.n,
                    r.positives,
                    match (r.auc, r.auc_ci) {
                        (Some(a), Some(c)) => format!("{a:.3} ({:.3}-{:.3})", c[0], c[1]),
                        (Some(a), None) => format!("{a:.3}"),
                        _ => "- (one class only)".into(),
                    },
                    opt(r.sensitivity),
                    opt(r.specificity)
                );
            }
            t + "</table><p class=\"note\">Sensitivity and specificity at the model's threshold.</p>"
        }
        None => String::new(),
    };
    Ok(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Local validation: {model}</title>
<style>
body {{ font-family: "DejaVu Sans", system-ui, sans-serif; margin: 1.5rem auto; max-width: 1100px; color: #1d1d1d; padding: 0 1rem; }}
table {{ border-collapse: collapse; margin: 0.6rem 0; }} th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 0.5rem; }} figure {{ margin: 0; }} img {{ max-width: 100%; }}
.notice {{ background: #fff3cd; border: 1px solid #c9a227; padding: 0.5rem 0.8rem; }} .note {{ color: #555; font-size: 0.9rem; }}
</style></head><body>
<h1>Local validation</h1>
<p class="notice"><strong>Research software, not a medical device.</strong> These figures describe this model on this sample; they are no evidence of safety or benefit in clinical care.</p>
<table>
<tr><th>model</th><td>{model}<br><span class="note">{desc}</span></td></tr>
<tr><th>data</th><td>{data}</td></tr>
<tr><th>images</th><td>{n}: {pos} fractured, {neg} intact</td></tr>
<tr><th>ROC-AUC</th><td><strong>{auc:.3}</strong> (bootstrap 95 % CI {lo:.3}-{hi:.3}, {res} resamples)</td></tr>
<tr><th>date</th><td>{date}</td></tr>
</table>
<h2>Operating points</h2>
<table><tr><th></th><th>threshold</th><th>sensitivity (95 % CI)</th><th>specificity (95 % CI)</th><th>PPV</th><th>NPV</th><th>TP / FP / TN / FN</th></tr>
{model_row}
{local_row}
</table>
<p class="note">The local threshold is the highest one whose sensitivity on this data reaches {target}; <code>fracture validate --write-model</code> stores it in a copy of the model. Chosen and measured on the same images, its sensitivity here is optimistic: check it on other local images before use.</p>
{typical}
<h2>Plots</h2><div class="plots">{plots}</div>
{subgroups}
</body></html>
"#,
        model = esc(&ctx.model),
        desc = esc(&ctx.model_description),
        data = esc(&ctx.data),
        n = v.n,
        pos = v.positives,
        neg = v.negatives,
        auc = v.auc,
        lo = v.auc_ci[0],
        hi = v.auc_ci[1],
        res = v.resamples,
        date = esc(&ctx.date),
        model_row = point_row("model's threshold", &v.at_model_threshold),
        local_row = point_row(
            &format!(
                "local threshold (target sensitivity {})",
                pct(v.target_sensitivity)
            ),
            &v.at_local_threshold
        ),
        target = pct(v.target_sensitivity),
    ))
}

//! Heatmap overlays as PNG: a hand-written turbo-like colour map, alpha blending over the
//! grayscale radiograph, and the picture `fracture predict --heatmap` writes.
//!
//! The picture ([`render_overlay`]) has the radiograph as the network saw it (after resizing) on
//! the left and the same radiograph with the heatmap blended in on the right, the peak marked by
//! a white cross; under both, when a probability is given, a bar filled to `P(fractured)` (in the
//! colour map's colour for that value) with a white tick at the operating threshold, and under
//! the bar a [`CAPTION_HEIGHT`] px line of text, e.g. `P(fractured) = 0.8000 ≥ threshold
//! 0.5000`, in the embedded font ([`crate::fonts`]). Images
//! smaller than [`OverlayConfig::min_side`] are enlarged by an integer factor (nearest
//! neighbour), so that a 64 px phantom stays legible.
//!
//! ```
//! use fracture_nn::gradcam::{CamMap, Heatmap, Score};
//! use fracture_nn::overlay::{render_overlay, OverlayConfig, Probability};
//! let cam = CamMap { height: 2, width: 2, values: vec![0.0, 1.0, 0.0, 0.0], weights: vec![1.0], logits: vec![1.0, 0.0], class: 0, score: Score::LogOdds };
//! let heat = Heatmap::from_cam(cam, 16, 16)?;
//! let gray = vec![128u8; 16 * 16];
//! let img = render_overlay(&gray, &heat, Some(Probability { p: 0.8, threshold: 0.5 }), &OverlayConfig::default())?;
//! // 16 px enlarged 16x to 256 px per panel, a 4 px gap, a 12 px bar under a 4 px gap, the caption.
//! assert_eq!(img.dimensions(), (2 * 256 + 4, 256 + 4 + 12 + 24));
//! # Ok::<(), fracture_nn::Error>(())
//! ```

use std::path::Path;

use image::{Rgb, RgbImage};
use plotters::prelude::*;

use crate::error::{io_err, Error, Result};
use crate::gradcam::Heatmap;

/// Anchor colours of the turbo-like ramp, evenly spaced on `[0, 1]` (dark blue, blue, cyan,
/// green, yellow, orange, dark red).
const RAMP: [[f32; 3]; 9] = [
    [35.0, 23.0, 90.0],
    [50.0, 90.0, 210.0],
    [40.0, 160.0, 250.0],
    [25.0, 215.0, 200.0],
    [80.0, 245.0, 120.0],
    [180.0, 245.0, 50.0],
    [250.0, 200.0, 40.0],
    [240.0, 110.0, 20.0],
    [165.0, 20.0, 5.0],
];

/// The colour of `v` in `[0, 1]` (clamped; NaN counts as 0) on a turbo-like ramp from dark blue
/// (cold) through cyan, green and yellow to dark red (hot), linear between nine anchors.
///
/// ```
/// use fracture_nn::overlay::colormap;
/// assert_eq!(colormap(0.0), [35, 23, 90]);
/// assert_eq!(colormap(1.0), [165, 20, 5]);
/// assert_eq!(colormap(2.0), colormap(1.0));
/// ```
pub fn colormap(v: f32) -> [u8; 3] {
    let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
    let t = v * (RAMP.len() - 1) as f32;
    let i = (t.floor() as usize).min(RAMP.len() - 2);
    let f = t - i as f32;
    let (a, b) = (RAMP[i], RAMP[i + 1]);
    [0, 1, 2].map(|c| (a[c] + (b[c] - a[c]) * f).round() as u8)
}

/// Height in pixels of the line of text under the probability bar.
pub const CAPTION_HEIGHT: usize = 24;

/// How an overlay looks.
///
/// ```
/// let cfg = fracture_nn::overlay::OverlayConfig::default();
/// assert_eq!((cfg.alpha, cfg.min_side), (0.45, 256));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OverlayConfig {
    /// Opacity of the colour map over the radiograph, in `[0, 1]` (default 0.45).
    pub alpha: f32,
    /// Images smaller than this (pixels per side) are enlarged by an integer factor to reach it
    /// (default 256).
    pub min_side: usize,
    /// Mark the heatmap's peak with a white cross (default `true`).
    pub mark_peak: bool,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            alpha: 0.45,
            min_side: 256,
            mark_peak: true,
        }
    }
}

/// A probability to draw under the overlay, with the threshold it is judged against.
///
/// ```
/// let p = fracture_nn::overlay::Probability { p: 0.9, threshold: 0.4 };
/// assert!(p.p >= p.threshold);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Probability {
    /// P(fractured), in `[0, 1]`.
    pub p: f64,
    /// The operating threshold, in `[0, 1]`.
    pub threshold: f64,
}

/// Blends `heat` over the 8-bit grayscale `gray` (same size as the heatmap, row-major):
/// `out = (1 - alpha) * gray + alpha * colormap(heat)`, at the heatmap's resolution.
///
/// ```
/// use fracture_nn::gradcam::{CamMap, Heatmap, Score};
/// let cam = CamMap { height: 1, width: 1, values: vec![1.0], weights: vec![1.0], logits: vec![0.0, 0.0], class: 0, score: Score::LogOdds };
/// let heat = Heatmap::from_cam(cam, 2, 2)?;
/// let img = fracture_nn::overlay::blend(&[0, 0, 0, 0], &heat, 1.0)?;
/// assert_eq!(img.get_pixel(1, 1).0, fracture_nn::overlay::colormap(1.0));
/// # Ok::<(), fracture_nn::Error>(())
/// ```
pub fn blend(gray: &[u8], heat: &Heatmap, alpha: f32) -> Result<RgbImage> {
    check(gray, heat, alpha)?;
    let mut img = RgbImage::new(heat.width as u32, heat.height as u32);
    for (i, px) in img.pixels_mut().enumerate() {
        let g = gray[i] as f32;
        let c = colormap(heat.values[i]);
        *px = Rgb(c.map(|c| ((1.0 - alpha) * g + alpha * c as f32).round() as u8));
    }
    Ok(img)
}

fn check(gray: &[u8], heat: &Heatmap, alpha: f32) -> Result<()> {
    if gray.len() != heat.width * heat.height {
        return Err(Error::Config(format!(
            "overlay: the image has {} pixels but the heatmap is {}x{}",
            gray.len(),
            heat.width,
            heat.height
        )));
    }
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::Config(format!(
            "overlay: alpha must be in [0, 1], got {alpha}"
        )));
    }
    Ok(())
}

/// The full overlay picture (see the [module docs](self)): radiograph | blended heatmap, and a
/// probability bar when `probability` is given.
pub fn render_overlay(
    gray: &[u8],
    heat: &Heatmap,
    probability: Option<Probability>,
    config: &OverlayConfig,
) -> Result<RgbImage> {
    check(gray, heat, config.alpha)?;
    if let Some(p) = probability {
        if !(0.0..=1.0).contains(&p.p) || !(0.0..=1.0).contains(&p.threshold) {
            return Err(Error::Config(format!(
                "overlay: probability {} and threshold {} must be in [0, 1]",
                p.p, p.threshold
            )));
        }
    }
    let (w, h) = (heat.width, heat.height);
    let scale = config.min_side.div_ceil(w.max(h)).max(1);
    let (pw, ph) = (w * scale, h * scale);
    let gap = 4;
    let bar_h = (ph / 20).max(6);
    let total_w = 2 * pw + gap;
    let total_h = ph + probability.map_or(0, |_| gap + bar_h + CAPTION_HEIGHT);
    let mut img = RgbImage::from_pixel(total_w as u32, total_h as u32, Rgb([20, 20, 20]));
    let blended = blend(gray, heat, config.alpha)?;
    for y in 0..ph {
        for x in 0..pw {
            let (sx, sy) = (x / scale, y / scale);
            let g = gray[sy * w + sx];
            img.put_pixel(x as u32, y as u32, Rgb([g, g, g]));
            let b = *blended.get_pixel(sx as u32, sy as u32);
            img.put_pixel((pw + gap + x) as u32, y as u32, b);
        }
    }
    if config.mark_peak {
        if let Some([px, py]) = heat.peak {
            let cx = (pw + gap + px * scale + scale / 2) as i64;
            let cy = (py * scale + scale / 2) as i64;
            let inner = (scale as i64 * 3 / 2).max(2);
            let outer = inner + (scale as i64 * 3).max(4);
            let white = Rgb([255, 255, 255]);
            let x_range = (pw + gap) as i64..total_w as i64;
            for d in inner..=outer {
                for (x, y) in [(cx - d, cy), (cx + d, cy), (cx, cy - d), (cx, cy + d)] {
                    if x_range.contains(&x) && (0..ph as i64).contains(&y) {
                        img.put_pixel(x as u32, y as u32, white);
                    }
                }
            }
        }
    }
    if let Some(p) = probability {
        let y0 = ph + gap;
        let fill = (p.p * total_w as f64).round() as usize;
        let colour = Rgb(colormap(p.p as f32));
        let tick = ((p.threshold * total_w as f64).round() as usize).min(total_w - 1);
        for y in y0..y0 + bar_h {
            for x in 0..total_w {
                let c = if x.abs_diff(tick) <= 1 {
                    Rgb([255, 255, 255])
                } else if x < fill {
                    colour
                } else {
                    Rgb([60, 60, 60])
                };
                img.put_pixel(x as u32, y as u32, c);
            }
        }
        let relation = if p.p >= p.threshold { '≥' } else { '<' };
        let text = format!(
            "P(fractured) = {:.4} {relation} threshold {:.4}",
            p.p, p.threshold
        );
        caption(&mut img, y0 + bar_h, &text)?;
    }
    Ok(img)
}

/// Writes `text` in white on the caption strip that starts at row `y`.
fn caption(img: &mut RgbImage, y: usize, text: &str) -> Result<()> {
    crate::fonts::register();
    let (w, h) = img.dimensions();
    let raw: &mut [u8] = img;
    let root = BitMapBackend::with_buffer(raw, (w, h)).into_drawing_area();
    let style = TextStyle::from((crate::fonts::FAMILY, 16.0).into_font()).color(&WHITE);
    let err = |e: &dyn std::fmt::Display| Error::Config(format!("overlay caption: {e}"));
    root.draw_text(text, &style, (6, y as i32 + 4))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// Renders the overlay (see [`render_overlay`]) and writes it as PNG to `path`, creating the
/// parent folder if needed.
///
/// ```
/// use fracture_nn::gradcam::{CamMap, Heatmap, Score};
/// use fracture_nn::overlay::{save_overlay, OverlayConfig};
/// let cam = CamMap { height: 1, width: 1, values: vec![1.0], weights: vec![1.0], logits: vec![0.0, 0.0], class: 0, score: Score::LogOdds };
/// let heat = Heatmap::from_cam(cam, 8, 8)?;
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("out/x.png");
/// save_overlay(&path, &[100; 64], &heat, None, &OverlayConfig::default())?;
/// assert_eq!(image::open(&path)?.width(), 2 * 256 + 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn save_overlay(
    path: &Path,
    gray: &[u8],
    heat: &Heatmap,
    probability: Option<Probability>,
    config: &OverlayConfig,
) -> Result<()> {
    let img = render_overlay(gray, heat, probability, config)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::Plot {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

//! Does the heatmap point at the fracture? Figures for images with annotated finding boxes
//! (`fracture eval --boxes CSV`): the share of images whose heatmap peak lies within a
//! tolerance of a box, the share of the heatmap's mass inside the boxes, and beside both the
//! baseline of a model that always points at the image centre (and spreads its mass evenly).

use fracture_data::PixelBox;
use serde::Serialize;

use crate::gradcam::Heatmap;

/// Distance from point `p` to the box `b` (0 inside), in the box's pixels.
///
/// ```
/// use fracture_nn::localisation::distance_to_box;
/// assert_eq!(distance_to_box([5.0, 5.0], &[0.0, 0.0, 10.0, 10.0]), 0.0);
/// assert_eq!(distance_to_box([13.0, 14.0], &[0.0, 0.0, 10.0, 10.0]), 5.0);
/// ```
pub fn distance_to_box(p: [f32; 2], b: &PixelBox) -> f32 {
    let dx = (b[0] - p[0]).max(0.0).max(p[0] - b[2]);
    let dy = (b[1] - p[1]).max(0.0).max(p[1] - b[3]);
    dx.hypot(dy)
}

/// Localisation figures over the annotated positive images.
///
/// ```
/// use fracture_nn::gradcam::{CamMap, Heatmap, Score};
/// use fracture_nn::localisation::LocalisationReport;
/// let cam = CamMap { height: 2, width: 2, values: vec![0.0, 0.0, 0.0, 1.0], weights: vec![], logits: vec![0.0, 0.0], class: 0, score: Score::LogOdds };
/// let heat = Heatmap::from_cam(cam, 8, 8)?;
/// // The box covers the bottom-right quarter, where the map is hot.
/// let r = LocalisationReport::new(&[(&heat, &[[4.0, 4.0, 8.0, 8.0]][..])], 8, 0.07);
/// assert_eq!((r.n, r.peak_near_box), (1, 1.0));
/// assert!(r.mass_in_boxes > 0.5 && r.centre_mass_in_boxes == 0.25);
/// assert_eq!(r.centre_near_box, 1.0); // the centre (4, 4) touches the box's corner
/// # Ok::<(), fracture_nn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LocalisationReport {
    /// Images with at least one box.
    pub n: usize,
    /// The tolerance in input pixels (`tolerance_fraction` of the input side).
    pub tolerance_px: f32,
    /// Share of images whose heatmap peak lies within the tolerance of a box.
    pub peak_near_box: f64,
    /// Mean share of the heatmap's mass inside the boxes.
    pub mass_in_boxes: f64,
    /// Share of images whose centre lies within the tolerance of a box (the baseline).
    pub centre_near_box: f64,
    /// Mean share of the image inside the boxes (the mass of an even map: the baseline).
    pub centre_mass_in_boxes: f64,
}

impl LocalisationReport {
    /// The figures of `items` (each image's heatmap at the model's `size` px input and its
    /// boxes in those pixels; images without a box are left out), with a tolerance of
    /// `tolerance_fraction` of the side.
    pub fn new(items: &[(&Heatmap, &[PixelBox])], size: usize, tolerance_fraction: f32) -> Self {
        let tol = tolerance_fraction * size as f32;
        let centre = [size as f32 / 2.0, size as f32 / 2.0];
        let (mut n, mut peak, mut mass, mut cpeak, mut cmass) =
            (0usize, 0usize, 0f64, 0usize, 0f64);
        for (heat, boxes) in items {
            if boxes.is_empty() {
                continue;
            }
            n += 1;
            let near = |p: [f32; 2]| boxes.iter().any(|b| distance_to_box(p, b) <= tol);
            if heat.peak_point().is_some_and(near) {
                peak += 1;
            }
            if near(centre) {
                cpeak += 1;
            }
            let (mut inside, mut total, mut area) = (0f64, 0f64, 0usize);
            for y in 0..heat.height {
                for x in 0..heat.width {
                    let v = heat.values[y * heat.width + x] as f64;
                    let p = [x as f32 + 0.5, y as f32 + 0.5];
                    let hit = boxes.iter().any(|b| distance_to_box(p, b) == 0.0);
                    total += v;
                    if hit {
                        inside += v;
                        area += 1;
                    }
                }
            }
            if total > 0.0 {
                mass += inside / total;
            }
            cmass += area as f64 / (heat.width * heat.height).max(1) as f64;
        }
        let share = |k: f64| if n == 0 { 0.0 } else { k / n as f64 };
        LocalisationReport {
            n,
            tolerance_px: tol,
            peak_near_box: share(peak as f64),
            mass_in_boxes: share(mass),
            centre_near_box: share(cpeak as f64),
            centre_mass_in_boxes: share(cmass),
        }
    }
}

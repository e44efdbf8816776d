//! Finding boxes (where the fracture is) per image, read from a CSV keyed by image path, and
//! the box-mask targets a model's mask head is trained against.
//!
//! The CSV has a header with at least the columns `path` (the image's path relative to the
//! dataset root, `/`-separated, e.g. `train/fractured/IMG0000019.png`) and `boxes`: the boxes
//! as normalised `cx cy w h` (fractions of the image's own width and height, YOLO style),
//! several separated by `;`, empty for an image without a finding. This is the form of
//! FracAtlas's `annotations.csv`.
//!
//! The boxes are mapped into the model's letterboxed input (see
//! [`crate::ResizeMode::Letterbox`]) with the image's own width and height, read from its
//! header. The loader then maps each mask cell's centre back through the sample's augmentation
//! ([`crate::Warp`]), so the target moves with the flips, rotations and crops.

use std::collections::HashMap;
use std::path::Path;

use crate::augment::Warp;
use crate::csv_table::{relative_key, CsvTable};
use crate::error::{DataError, Result};
use crate::folder::DatasetSplit;
use crate::resize::ResizeMode;

/// A box in input pixels of the model's square input: `[x0, y0, x1, y1]`, continuous
/// coordinates (pixel `i` spans `[i, i + 1]`).
pub type PixelBox = [f32; 4];

/// The boxes of a CSV, by relative image path.
///
/// ```
/// use fracture_data::BoxAnnotations;
/// let csv = "path,label,boxes\ntrain/fractured/a.png,fractured,0.5 0.5 0.2 0.1;0.1 0.1 0.1 0.1\ntrain/not_fractured/b.png,not_fractured,\n";
/// let ann = BoxAnnotations::parse(csv, "annotations.csv".as_ref()).unwrap();
/// assert_eq!(ann.len(), 2);
/// assert_eq!(ann.get("train/fractured/a.png").unwrap().len(), 2);
/// assert!(ann.get("train/not_fractured/b.png").unwrap().is_empty());
/// assert!(ann.get("val/x.png").is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BoxAnnotations {
    /// Normalised `[cx, cy, w, h]` boxes per relative path.
    by_path: HashMap<String, Vec<[f32; 4]>>,
}

impl BoxAnnotations {
    /// Reads a CSV file (see the [module docs](self)).
    pub fn load(path: &Path) -> Result<BoxAnnotations> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        BoxAnnotations::parse(&text, path)
    }

    /// Parses CSV text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<BoxAnnotations> {
        let table = CsvTable::parse(text, origin)?;
        let (pc, bc) = (table.column("path")?, table.column("boxes")?);
        let mut by_path = HashMap::new();
        for row in 0..table.rows().len() {
            let bad = |msg: String| {
                DataError::Config(format!("{}, row {}: {msg}", origin.display(), row + 1))
            };
            let path = table.field(row, pc);
            if path.is_empty() {
                return Err(bad("no path".into()));
            }
            let boxes =
                parse_boxes(table.field(row, bc)).map_err(|m| bad(format!("{path}: {m}")))?;
            by_path.insert(path.replace('\\', "/"), boxes);
        }
        Ok(BoxAnnotations { by_path })
    }

    /// Number of images listed.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// `true` if no image is listed.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// The normalised boxes of the image at `relative` path, if it is listed.
    pub fn get(&self, relative: &str) -> Option<&[[f32; 4]]> {
        self.by_path.get(relative).map(|v| v.as_slice())
    }

    /// The boxes of every image of `split` (loaded from the folder `root`), in the model's
    /// letterboxed input pixels: `None` for an image that is not listed, that is listed in the
    /// `positive` class without a box (its finding is somewhere unknown), or whose size cannot
    /// be read from its header; `Some(empty)` for a listed image of another class.
    /// `mode` is how the images were resized to the square input.
    pub fn for_split(
        &self,
        split: &DatasetSplit,
        root: &Path,
        positive: usize,
        mode: ResizeMode,
    ) -> Vec<Option<Vec<PixelBox>>> {
        let size = split.image_size();
        split
            .paths()
            .iter()
            .zip(split.labels())
            .map(|(path, &label)| {
                let key = relative_key(path, root)?;
                let boxes = self.get(&key)?;
                if boxes.is_empty() {
                    return (label != positive).then(Vec::new);
                }
                let (w, h) = image::image_dimensions(path).ok()?;
                Some(
                    boxes
                        .iter()
                        .map(|b| match mode {
                            ResizeMode::Letterbox => letterbox_box(b, w as usize, h as usize, size),
                            ResizeMode::Stretch => {
                                let (s, [cx, cy, bw, bh]) = (size as f32, *b);
                                [
                                    (cx - bw / 2.0) * s,
                                    (cy - bh / 2.0) * s,
                                    (cx + bw / 2.0) * s,
                                    (cy + bh / 2.0) * s,
                                ]
                            }
                        })
                        .collect(),
                )
            })
            .collect()
    }
}

/// A normalised `[cx, cy, w, h]` box of a `w x h` image, in the pixels of its letterbox into a
/// `size` square (as [`crate::resize_square`] places it: longest side scaled to `size`,
/// centred).
///
/// ```
/// use fracture_data::boxes::letterbox_box;
/// // A 200 x 100 image into 100 px: scaled by 1/2 to 100 x 50, placed 25 px down.
/// let b = letterbox_box(&[0.5, 0.5, 0.2, 0.2], 200, 100, 100);
/// let want = [40.0, 45.0, 60.0, 55.0];
/// assert!(b.iter().zip(want).all(|(a, w)| (a - w).abs() < 1e-4), "{b:?}");
/// ```
pub fn letterbox_box(b: &[f32; 4], w: usize, h: usize, size: usize) -> PixelBox {
    let scale = size as f64 / w.max(h).max(1) as f64;
    let nw = ((w as f64 * scale).round() as usize).clamp(1, size);
    let nh = ((h as f64 * scale).round() as usize).clamp(1, size);
    let (x0, y0) = (((size - nw) / 2) as f32, ((size - nh) / 2) as f32);
    let [cx, cy, bw, bh] = *b;
    let (nw, nh) = (nw as f32, nh as f32);
    [
        x0 + (cx - bw / 2.0) * nw,
        y0 + (cy - bh / 2.0) * nh,
        x0 + (cx + bw / 2.0) * nw,
        y0 + (cy + bh / 2.0) * nh,
    ]
}

/// The box-mask target of one sample on a `side x side` grid over its `size` px input, after
/// the augmentation `warp` (`None`: none): a cell is 1 when its centre falls inside a box, and
/// so is the cell that holds a box's centre (so a box smaller than a cell is never lost);
/// the rest are 0.
///
/// ```
/// use fracture_data::boxes::mask_target;
/// let mut out = [0.0; 16];
/// mask_target(&[[0.0, 0.0, 8.0, 8.0]], None, 16, 4, &mut out);
/// assert_eq!(&out[..4], [1.0, 1.0, 0.0, 0.0]);
/// assert_eq!(out.iter().sum::<f32>(), 4.0);
/// // A box smaller than a cell still marks the cell holding its centre.
/// mask_target(&[[13.0, 13.0, 14.0, 14.0]], None, 16, 4, &mut out);
/// assert_eq!((out[15], out.iter().sum::<f32>()), (1.0, 1.0));
/// ```
pub fn mask_target(
    boxes: &[PixelBox],
    warp: Option<&Warp>,
    size: usize,
    side: usize,
    out: &mut [f32],
) {
    out.fill(0.0);
    if side == 0 || boxes.is_empty() {
        return;
    }
    let cell = size as f32 / side as f32;
    for gy in 0..side {
        for gx in 0..side {
            let p = [(gx as f32 + 0.5) * cell, (gy as f32 + 0.5) * cell];
            let [sx, sy] = warp.map_or(p, |w| w.to_source(p));
            if boxes
                .iter()
                .any(|b| sx >= b[0] && sx <= b[2] && sy >= b[1] && sy <= b[3])
            {
                out[gy * side + gx] = 1.0;
            }
        }
    }
    for b in boxes {
        let c = [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0];
        let [ox, oy] = warp.map_or(c, |w| w.to_output(c));
        if ox >= 0.0 && oy >= 0.0 && ox < size as f32 && oy < size as f32 {
            let (gx, gy) = ((ox / cell) as usize, (oy / cell) as usize);
            out[gy.min(side - 1) * side + gx.min(side - 1)] = 1.0;
        }
    }
}

fn parse_boxes(field: &str) -> std::result::Result<Vec<[f32; 4]>, String> {
    let field = field.trim();
    if field.is_empty() {
        return Ok(Vec::new());
    }
    field
        .split(';')
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            let v: Vec<f32> = b
                .split_whitespace()
                .map(|x| {
                    x.parse::<f32>()
                        .map_err(|_| format!("box {b:?}: {x:?} is not a number"))
                })
                .collect::<std::result::Result<_, _>>()?;
            match v.as_slice() {
                &[cx, cy, w, h] if v.iter().all(|x| x.is_finite()) && w > 0.0 && h > 0.0 => {
                    Ok([cx, cy, w, h])
                }
                _ => Err(format!(
                    "box {b:?}: expected four numbers `cx cy w h` with a positive width and height"
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_csvs_are_errors_naming_the_file_and_row() {
        let o = Path::new("a.csv");
        let e = BoxAnnotations::parse("path,label\nx.png,1\n", o).unwrap_err();
        assert!(
            e.to_string().contains("a.csv") && e.to_string().contains("boxes"),
            "{e}"
        );
        let e = BoxAnnotations::parse("path,boxes\nx.png,0.5 0.5 zero 0.1\n", o).unwrap_err();
        assert!(
            e.to_string().contains("row 1") && e.to_string().contains("zero"),
            "{e}"
        );
        let e = BoxAnnotations::parse("path,boxes\nx.png,0.5 0.5 0.1\n", o).unwrap_err();
        assert!(e.to_string().contains("four numbers"), "{e}");
        assert!(BoxAnnotations::parse("", o).is_err());
    }

    #[test]
    fn quoted_fields_are_read() {
        let ann = BoxAnnotations::parse(
            "\"path\",boxes\n\"a,b.png\",\"0.5 0.5 0.1 0.1\"\n",
            Path::new("q"),
        )
        .unwrap();
        assert_eq!(ann.get("a,b.png").unwrap(), [[0.5, 0.5, 0.1, 0.1]]);
    }

    #[test]
    fn the_target_follows_a_horizontal_flip() {
        use crate::augment::Augment;
        use rand::SeedableRng;
        let aug = Augment {
            hflip: 1.0,
            ..Augment::none()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let src = vec![0u8; 16 * 16];
        let mut px = vec![0f32; 16 * 16];
        let warp = aug
            .apply_traced(&src, 16, &mut rng, &mut px)
            .unwrap()
            .unwrap();
        let mut out = [0.0; 16];
        // A box over the left column of cells lands on the right column.
        mask_target(&[[0.0, 0.0, 4.0, 16.0]], Some(&warp), 16, 4, &mut out);
        let right: Vec<f32> = (0..4).map(|r| out[r * 4 + 3]).collect();
        assert_eq!(right, [1.0; 4]);
        assert_eq!(out.iter().sum::<f32>(), 4.0);
    }
}

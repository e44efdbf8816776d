//! Finding the images `predict` was pointed at: files as named, folders searched recursively.
//!
//! The walk visits each real folder once and yields each real file once: symbolic links to
//! files are followed, a link back to a folder already being walked (`ln -s . d/self`, or
//! two branches pointing at each other) is skipped, and two names for one file give one
//! result. Anything that is not a regular file or a folder (FIFO, socket, device) is skipped
//! with a warning instead of being opened, which could block forever. A folder to leave out
//! (the `--heatmap` output) is not searched.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// File extensions searched for inside folders (decoding itself is by content).
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp", "dcm",
];

/// A file to classify, or the reason a named path cannot be.
pub type Found = (PathBuf, Option<String>);

/// The images under `paths` in sorted order, each real file once; `exclude` (a folder) is not
/// searched. Warnings about skipped entries go to stderr.
///
/// ```text
/// collect_images(&["scans".into()], Some(Path::new("scans/heat")))
/// ```
pub fn collect_images(paths: &[PathBuf], exclude: Option<&Path>) -> Vec<Found> {
    let mut walk = Walk {
        out: Vec::new(),
        seen_files: HashSet::new(),
        seen_dirs: HashSet::new(),
        exclude: exclude.and_then(|e| std::fs::canonicalize(e).ok()),
    };
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => walk.dir(p),
            // Named files are taken as they are: decoding says what is wrong with them.
            _ => walk.file(p),
        }
    }
    walk.out
}

struct Walk {
    out: Vec<Found>,
    seen_files: HashSet<PathBuf>,
    seen_dirs: HashSet<PathBuf>,
    exclude: Option<PathBuf>,
}

impl Walk {
    fn file(&mut self, p: &Path) {
        let key = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        if self.seen_files.insert(key) {
            self.out.push((p.to_path_buf(), None));
        }
    }

    fn dir(&mut self, dir: &Path) {
        let Ok(real) = std::fs::canonicalize(dir) else {
            self.out
                .push((dir.to_path_buf(), Some("cannot resolve folder".into())));
            return;
        };
        if self.exclude.as_ref() == Some(&real) {
            return;
        }
        if !self.seen_dirs.insert(real) {
            eprintln!(
                "warning: skipping {}: a folder already searched (symbolic link loop or second link)",
                crate::escape_path(dir)
            );
            return;
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                self.out
                    .push((dir.to_path_buf(), Some(format!("cannot read folder: {e}"))));
                return;
            }
        };
        let mut items: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        items.sort();
        for p in items {
            // Follows symbolic links; a dangling link falls through to the extension check.
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => self.dir(&p),
                Ok(m) if !m.is_file() => {
                    if has_image_extension(&p) {
                        eprintln!(
                            "warning: skipping {}: not a regular file (FIFO, socket or device)",
                            crate::escape_path(&p)
                        );
                    }
                }
                _ => {
                    if has_image_extension(&p) {
                        self.file(&p);
                    }
                }
            }
        }
    }
}

/// An image by its extension, or an extension-less DICOM file (as archives export them).
fn has_image_extension(p: &Path) -> bool {
    if p.extension().is_none() {
        return fracture_nn::data::dicom::is_dicom_file(p);
    }
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

//! Finding the images `predict` was pointed at: files as named, folders searched recursively,
//! streamed one file at a time.
//!
//! The walk visits each real folder once and yields each real file once: symbolic links to
//! files are followed, a link back to a folder already being walked (`ln -s . d/self`, or
//! two branches pointing at each other) is skipped, and two names for one file (a symbolic or
//! hard link) give one result. Anything that is not a regular file or a folder (FIFO, socket,
//! device) is skipped with a warning instead of being opened, which could block forever. A
//! folder to leave out (the `--heatmap` output) is not searched.
//!
//! [`Walk`] is an iterator: it holds the sorted entries of the folders on the current path
//! only (so memory follows the largest folder, not the whole tree), the real paths of the
//! folders seen, and 16 bytes (device and inode) per file yielded, to recognise a second name.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// File extensions searched for inside folders (decoding itself is by content).
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp", "dcm",
];

/// A file to classify, or the reason a named path cannot be.
pub type Found = (PathBuf, Option<String>);

/// The images under some paths, in sorted order (depth first), each real file once.
///
/// ```text
/// for (path, error) in Walk::new(vec!["scans".into()], Some(Path::new("scans/heat")), true) { ... }
/// ```
pub struct Walk {
    roots: std::vec::IntoIter<PathBuf>,
    /// The unvisited sorted entries of each folder on the current path, innermost last.
    stack: Vec<std::vec::IntoIter<PathBuf>>,
    seen_files: HashSet<FileKey>,
    seen_dirs: HashSet<PathBuf>,
    exclude: Option<PathBuf>,
    warn: bool,
}

/// One file, whatever its name: device and inode where the platform has them.
#[derive(Hash, PartialEq, Eq)]
enum FileKey {
    #[cfg(unix)]
    Inode(u64, u64),
    Path(PathBuf),
}

impl Walk {
    /// A walk over `paths` (files as named, folders recursively); `exclude` (a folder) is not
    /// searched. With `warn`, skipped entries are named on stderr.
    pub fn new(paths: Vec<PathBuf>, exclude: Option<&Path>, warn: bool) -> Walk {
        Walk {
            roots: paths.into_iter(),
            stack: Vec::new(),
            seen_files: HashSet::new(),
            seen_dirs: HashSet::new(),
            exclude: exclude.and_then(|e| std::fs::canonicalize(e).ok()),
            warn,
        }
    }

    fn warn(&self, p: &Path, why: &str) {
        if self.warn {
            eprintln!("warning: skipping {}: {why}", crate::escape_path(p));
        }
    }

    /// `p` if it is a file not yielded before under another name.
    fn file(&mut self, p: PathBuf, meta: Option<&std::fs::Metadata>) -> Option<Found> {
        self.seen_files
            .insert(file_key(&p, meta))
            .then_some((p, None))
    }

    /// Pushes the sorted entries of `dir`, or returns why it cannot be read.
    fn enter(&mut self, dir: PathBuf) -> Option<Found> {
        let Ok(real) = std::fs::canonicalize(&dir) else {
            return Some((dir, Some("cannot resolve folder".into())));
        };
        if self.exclude.as_ref() == Some(&real) {
            return None;
        }
        if !self.seen_dirs.insert(real) {
            self.warn(
                &dir,
                "a folder already searched (symbolic link loop or second link)",
            );
            return None;
        }
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                let mut items: Vec<PathBuf> =
                    entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                items.sort();
                self.stack.push(items.into_iter());
                None
            }
            Err(e) => Some((dir, Some(format!("cannot read folder: {e}")))),
        }
    }

    /// An entry found inside a folder.
    fn entry(&mut self, p: PathBuf) -> Option<Found> {
        // Follows symbolic links; a dangling link falls through to the extension check.
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => self.enter(p),
            Ok(m) if !m.is_file() => {
                // Named by extension only: sniffing an extension-less FIFO would block.
                if listed_extension(&p) {
                    self.warn(&p, "not a regular file (FIFO, socket or device)");
                }
                None
            }
            meta => {
                if has_image_extension(&p) {
                    self.file(p, meta.as_ref().ok())
                } else {
                    None
                }
            }
        }
    }
}

impl Iterator for Walk {
    type Item = Found;

    fn next(&mut self) -> Option<Found> {
        loop {
            if let Some(entries) = self.stack.last_mut() {
                match entries.next() {
                    Some(p) => {
                        if let Some(found) = self.entry(p) {
                            return Some(found);
                        }
                    }
                    None => {
                        self.stack.pop();
                    }
                }
                continue;
            }
            let p = self.roots.next()?;
            let found = match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => self.enter(p),
                // Named files are taken as they are: decoding says what is wrong with them.
                meta => self.file(p, meta.as_ref().ok()),
            };
            if found.is_some() {
                return found;
            }
        }
    }
}

fn file_key(p: &Path, meta: Option<&std::fs::Metadata>) -> FileKey {
    #[cfg(unix)]
    if let Some(m) = meta {
        use std::os::unix::fs::MetadataExt;
        return FileKey::Inode(m.dev(), m.ino());
    }
    #[cfg(not(unix))]
    let _ = meta;
    FileKey::Path(std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
}

/// An image by its extension, or an extension-less DICOM file (as archives export them).
fn has_image_extension(p: &Path) -> bool {
    if p.extension().is_none() {
        return fracture_nn::data::dicom::is_dicom_file(p);
    }
    listed_extension(p)
}

/// One of [`IMAGE_EXTENSIONS`], in any case.
fn listed_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

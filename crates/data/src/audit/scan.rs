//! Listing the files to audit and decoding each once into its signature.
//!
//! Files are listed with the loader's own folder scan (sorted, hidden files ignored, the same
//! structural errors), decoded by content in parallel (rayon), and reduced to a pixel hash and
//! a [`NearSignature`] (about 1 KB) as soon as they are decoded: memory holds a few images
//! at a time (one per thread), never the dataset. A file that cannot be decoded is listed in
//! [`Scan::unreadable`] with its reason and left out of the comparison.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::matching::{find_pairs, CopyPair, Signature};
use super::perceptual::NearSignature;
use super::pixel_hash::pixel_hash;
use super::AuditConfig;
use crate::decode::decode_luma8;
use crate::error::{DataError, Result};
use crate::folder::{scan_split, BadFileKind, SkippedFile, Split};

/// One file to audit: where it is and which split and class folder it sits in.
///
/// ```
/// use fracture_data::audit::AuditFile;
/// let f = AuditFile { path: "d/test/fractured/a.png".into(), split: "test".into(), class: "fractured".into() };
/// assert_eq!(f.split, "test");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFile {
    /// The file.
    pub path: PathBuf,
    /// Its split folder's name (`train`, `val`, `test`, or the name given to a single folder).
    pub split: String,
    /// Its class folder's name (the label).
    pub class: String,
}

/// A decoded file: its listing, its pixel hash and its size.
///
/// ```
/// use fracture_data::audit::{AuditFile, ScannedFile};
/// let f = ScannedFile {
///     file: AuditFile { path: "a.png".into(), split: "train".into(), class: "x".into() },
///     pixel_hash: 7, width: 3, height: 2,
/// };
/// assert_eq!(f.hash_hex(), "0000000000000007");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannedFile {
    /// Where it is and its split and class.
    pub file: AuditFile,
    /// [`super::pixel_hash`] of the decoded pixels.
    pub pixel_hash: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl ScannedFile {
    /// The pixel hash as 16 hexadecimal digits.
    pub fn hash_hex(&self) -> String {
        format!("{:016x}", self.pixel_hash)
    }
}

/// The files under `root/{train,val,test}/<class>/`, split by split, each sorted. Any class
/// folder names are accepted, and the splits need not share them. At least one split must be
/// present.
///
/// ```
/// use fracture_data::audit::list_dataset;
/// let root = tempfile::tempdir().unwrap();
/// for split in ["train", "test"] {
///     let dir = root.path().join(split).join("cats");
///     std::fs::create_dir_all(&dir).unwrap();
///     std::fs::write(dir.join("a.png"), b"not decoded yet").unwrap();
/// }
/// let files = list_dataset(root.path()).unwrap();
/// assert_eq!(files.iter().map(|f| f.split.as_str()).collect::<Vec<_>>(), ["train", "test"]);
/// assert!(list_dataset(&root.path().join("train")).is_err()); // a folder of classes, not splits
/// ```
pub fn list_dataset(root: &Path) -> Result<Vec<AuditFile>> {
    let mut out = Vec::new();
    let mut found = false;
    for split in Split::ALL {
        let dir = root.join(split.dir_name());
        if dir.is_dir() {
            found = true;
            out.extend(list_class_folder(&dir, split.dir_name())?);
        }
    }
    if !found {
        if !root.is_dir() {
            return Err(DataError::Io {
                path: root.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
            });
        }
        return Err(DataError::WrongLayout {
            path: root.to_path_buf(),
            reason: "no train, val or test folder (for one folder of class folders, use \
                     `fracture split --from`)"
                .into(),
        });
    }
    Ok(out)
}

/// The files under `dir/<class>/`, sorted, all given the split name `split`.
///
/// ```
/// use fracture_data::audit::list_class_folder;
/// let dir = tempfile::tempdir().unwrap();
/// for class in ["b", "a"] {
///     std::fs::create_dir(dir.path().join(class)).unwrap();
///     std::fs::write(dir.path().join(class).join("1.png"), b"x").unwrap();
/// }
/// let files = list_class_folder(dir.path(), "all").unwrap();
/// assert_eq!(files.iter().map(|f| f.class.as_str()).collect::<Vec<_>>(), ["a", "b"]);
/// ```
pub fn list_class_folder(dir: &Path, split: &str) -> Result<Vec<AuditFile>> {
    let scan = scan_split(dir)?;
    let mut out = Vec::new();
    for (class, (_, files)) in scan.classes.iter().zip(scan.files) {
        out.extend(files.into_iter().map(|path| AuditFile {
            path,
            split: split.to_string(),
            class: class.clone(),
        }));
    }
    Ok(out)
}

/// The result of decoding and comparing a list of files: what was decoded, what could not
/// be, and every copy pair.
///
/// ```
/// use fracture_data::audit::{AuditConfig, AuditFile, Scan};
/// let dir = tempfile::tempdir().unwrap();
/// let img = image::GrayImage::from_fn(20, 20, |x, y| image::Luma([(x * y) as u8]));
/// let (a, b) = (dir.path().join("a.png"), dir.path().join("b.bmp"));
/// img.save(&a).unwrap();
/// img.save(&b).unwrap(); // the same pixels in another format
/// std::fs::write(dir.path().join("c.png"), b"broken").unwrap();
/// let files = ["a.png", "b.bmp", "c.png"].map(|n| AuditFile {
///     path: dir.path().join(n), split: "train".into(), class: "x".into() });
/// let scan = Scan::run(dir.path(), files.to_vec(), &AuditConfig::default(), &|| {}).unwrap();
/// assert_eq!((scan.files.len(), scan.unreadable.len()), (2, 1));
/// assert!(scan.pairs[0].exact);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scan {
    /// The folder the files were found in (paths in reports are shown relative to it).
    pub root: PathBuf,
    /// The thresholds used.
    pub config: AuditConfig,
    /// Decoded files, in listing order.
    pub files: Vec<ScannedFile>,
    /// Files that could not be decoded, with the reason.
    pub unreadable: Vec<SkippedFile>,
    /// Copy pairs (indices into `files`), sorted.
    pub pairs: Vec<CopyPair>,
}

impl Scan {
    /// Lists `root` as a dataset ([`list_dataset`]) and scans it. `progress` is called once
    /// per file decoded (from several threads).
    pub fn dataset(
        root: &Path,
        config: &AuditConfig,
        progress: &(dyn Fn() + Sync),
    ) -> Result<Scan> {
        let files = list_dataset(root)?;
        Scan::run(root, files, config, progress)
    }

    /// Decodes `files` in parallel and finds every copy pair among them.
    pub fn run(
        root: &Path,
        files: Vec<AuditFile>,
        config: &AuditConfig,
        progress: &(dyn Fn() + Sync),
    ) -> Result<Scan> {
        config.validate()?;
        let decoded: Vec<Result<Signature>> = files
            .par_iter()
            .map(|f| {
                let sig = decode_luma8(&f.path, &config.limits).map(|gray| Signature {
                    pixel_hash: pixel_hash(&gray),
                    dims: gray.dimensions(),
                    near: NearSignature::of(&gray),
                });
                progress();
                sig
            })
            .collect();
        let mut kept = Vec::new();
        let mut sigs = Vec::new();
        let mut unreadable = Vec::new();
        for (file, sig) in files.into_iter().zip(decoded) {
            match sig {
                Ok(sig) => {
                    kept.push(ScannedFile {
                        file,
                        pixel_hash: sig.pixel_hash,
                        width: sig.dims.0,
                        height: sig.dims.1,
                    });
                    sigs.push(sig);
                }
                Err(err) => unreadable.push(SkippedFile {
                    path: file.path,
                    kind: BadFileKind::of(&err).unwrap_or(BadFileKind::Unreadable),
                    reason: err.to_string(),
                }),
            }
        }
        let pairs = find_pairs(&sigs, config);
        Ok(Scan {
            root: root.to_path_buf(),
            config: *config,
            files: kept,
            unreadable,
            pairs,
        })
    }

    /// A file's path relative to the root, as text.
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }
}

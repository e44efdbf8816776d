//! Image folders on disk: `<root>/{train,val,test}/<class>/<files>`.
//!
//! Classes are the class sub-folder names, sorted (so `fractured` = 0, `not_fractured` = 1);
//! every split present must have the same class set. A split may be absent: asking for it gives
//! [`DataError::MissingSplit`]. Each file is decoded once, by content, in parallel (rayon) but in
//! a deterministic order (sorted paths), resized to the input size and kept in memory as 8-bit
//! pixels.
//!
//! Bad files (unreadable, not an image, corrupt or truncated, too large) are handled by a
//! [`BadFilePolicy`]: fail on the first one (in sorted order), or skip them and list each in the
//! [`LoadSummary`] with its reason. Structural problems (wrong layout, empty class folder, a
//! folder with no usable image, class sets that differ between splits) are always errors.

use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::normalize::Normalization;
use crate::preprocess::{load_resized, PreprocessConfig};

/// Label of the `fractured` class (the positive class for metrics).
pub const FRACTURED: usize = 0;
/// Label of the `not_fractured` class.
pub const NOT_FRACTURED: usize = 1;
/// The class folder names of the fracture task, in label order.
pub const CLASS_NAMES: [&str; 2] = ["fractured", "not_fractured"];

/// One of the three dataset splits.
///
/// ```
/// use fracture_data::Split;
/// assert_eq!(Split::Val.dir_name(), "val");
/// assert_eq!(Split::ALL.len(), 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Split {
    /// Used to fit the model and to compute normalisation statistics.
    Train,
    /// Used to choose epochs, thresholds and hyper-parameters.
    Val,
    /// Used only for the final figures.
    Test,
}

impl Split {
    /// All splits, in the order `train`, `val`, `test`.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The folder name of the split (`train`, `val` or `test`).
    pub fn dir_name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir_name())
    }
}

/// What to do with a file that cannot be used as an image.
///
/// ```
/// use fracture_data::BadFilePolicy;
/// assert_eq!(BadFilePolicy::default(), BadFilePolicy::Fail);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BadFilePolicy {
    /// Stop with the error of the first bad file (in sorted path order).
    #[default]
    Fail,
    /// Skip bad files and list them, with their reasons, in the [`LoadSummary`].
    Skip,
}

/// Options for loading image folders.
///
/// ```
/// use fracture_data::{BadFilePolicy, LoadOptions};
/// let opts = LoadOptions::new(64).with_policy(BadFilePolicy::Skip);
/// assert_eq!(opts.preprocess.image_size, 64);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadOptions {
    /// Decoding and resizing (the same config is used by prediction).
    pub preprocess: PreprocessConfig,
    /// Fail on or skip bad files.
    pub policy: BadFilePolicy,
}

impl LoadOptions {
    /// Default options with the given input size.
    pub fn new(image_size: usize) -> LoadOptions {
        LoadOptions {
            preprocess: PreprocessConfig {
                image_size,
                ..PreprocessConfig::default()
            },
            policy: BadFilePolicy::default(),
        }
    }

    /// The same options with another bad-file policy.
    pub fn with_policy(mut self, policy: BadFilePolicy) -> LoadOptions {
        self.policy = policy;
        self
    }
}

/// Why a file was skipped.
///
/// ```
/// use fracture_data::{BadFileKind, DataError};
/// assert_eq!(BadFileKind::Corrupt.to_string(), "corrupt");
/// let e = DataError::UnknownFormat { path: "a.txt".into() };
/// assert_eq!(BadFileKind::of(&e), Some(BadFileKind::UnknownFormat));
/// assert_eq!(BadFileKind::of(&DataError::Config("x".into())), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BadFileKind {
    /// The file could not be read.
    Unreadable,
    /// The content is not a recognised image format.
    UnknownFormat,
    /// Corrupt or truncated image data.
    Corrupt,
    /// Larger than the decode limits.
    TooLarge,
    /// An image in an encoding this build cannot decode (e.g. a DICOM transfer syntax without
    /// a built-in codec).
    Unsupported,
}

impl fmt::Display for BadFileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadFileKind::Unreadable => "unreadable",
            BadFileKind::UnknownFormat => "not an image",
            BadFileKind::Corrupt => "corrupt",
            BadFileKind::TooLarge => "too large",
            BadFileKind::Unsupported => "unsupported encoding",
        })
    }
}

impl BadFileKind {
    /// The kind of a per-file error, or `None` for errors that are not about one file's content.
    pub fn of(error: &DataError) -> Option<BadFileKind> {
        match error {
            DataError::Io { .. } => Some(BadFileKind::Unreadable),
            DataError::UnknownFormat { .. } | DataError::NotAnImage { .. } => {
                Some(BadFileKind::UnknownFormat)
            }
            DataError::Unsupported { .. } => Some(BadFileKind::Unsupported),
            DataError::Corrupt { .. } => Some(BadFileKind::Corrupt),
            DataError::TooLarge { .. } | DataError::FileTooLarge { .. } => {
                Some(BadFileKind::TooLarge)
            }
            _ => None,
        }
    }
}

/// A file left out under [`BadFilePolicy::Skip`].
///
/// ```
/// use fracture_data::{BadFileKind, SkippedFile};
/// let s = SkippedFile { path: "a.jpg".into(), kind: BadFileKind::Corrupt, reason: "truncated".into() };
/// assert_eq!(s.to_string(), "a.jpg (corrupt): truncated");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// The category of the problem.
    pub kind: BadFileKind,
    /// The full error message.
    pub reason: String,
}

impl fmt::Display for SkippedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.path.display(),
            self.kind,
            self.reason
        )
    }
}

/// What a load did: how many images were loaded, which files were skipped and why, and which
/// stray files (loose files beside class folders) were ignored.
///
/// ```
/// use fracture_data::LoadSummary;
/// let s = LoadSummary { loaded: 3, ..Default::default() };
/// assert_eq!(s.to_string(), "loaded 3 images, skipped 0 files");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadSummary {
    /// Images decoded and kept.
    pub loaded: usize,
    /// Files skipped under [`BadFilePolicy::Skip`], in sorted path order.
    pub skipped: Vec<SkippedFile>,
    /// Loose files found in a split folder beside its class folders (not loaded).
    pub ignored: Vec<PathBuf>,
}

impl LoadSummary {
    /// Appends another summary's counts and lists.
    pub fn merge(&mut self, other: LoadSummary) {
        self.loaded += other.loaded;
        self.skipped.extend(other.skipped);
        self.ignored.extend(other.ignored);
    }
}

impl fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loaded {} images, skipped {} files",
            self.loaded,
            self.skipped.len()
        )?;
        for s in &self.skipped {
            write!(f, "\n  skipped {s}")?;
        }
        for p in &self.ignored {
            write!(f, "\n  ignored stray file {}", p.display())?;
        }
        Ok(())
    }
}

/// One split in memory: square 8-bit images with their labels and source paths.
///
/// Both loaded folders and synthetic phantoms ([`crate::phantom`]) produce this struct.
///
/// ```
/// use fracture_data::{DatasetSplit, Split};
/// let split = DatasetSplit::new(
///     Split::Train, vec!["fractured".into(), "not_fractured".into()], 2,
///     vec![0, 0, 0, 0, 255, 255, 255, 255], vec![0, 1], vec!["a.png".into(), "b.png".into()],
/// ).unwrap();
/// assert_eq!(split.len(), 2);
/// assert_eq!(split.image(1), &[255, 255, 255, 255]);
/// assert_eq!(split.class_counts(), vec![1, 1]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetSplit {
    split: Split,
    classes: Vec<String>,
    image_size: usize,
    images: Vec<u8>,
    labels: Vec<usize>,
    paths: Vec<PathBuf>,
}

impl DatasetSplit {
    /// Builds a split from parts; `images` holds `labels.len()` images of
    /// `image_size * image_size` bytes each, back to back.
    pub fn new(
        split: Split,
        classes: Vec<String>,
        image_size: usize,
        images: Vec<u8>,
        labels: Vec<usize>,
        paths: Vec<PathBuf>,
    ) -> Result<DatasetSplit> {
        let n = labels.len();
        if image_size == 0 {
            return Err(DataError::Config("image_size must be at least 1".into()));
        }
        if images.len() != n * image_size * image_size {
            return Err(DataError::Config(format!(
                "split `{split}`: {} pixel bytes for {n} images of {image_size}x{image_size} \
                 (expected {})",
                images.len(),
                n * image_size * image_size
            )));
        }
        if paths.len() != n {
            return Err(DataError::Config(format!(
                "split `{split}`: {} paths for {n} labels",
                paths.len()
            )));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l >= classes.len()) {
            return Err(DataError::Config(format!(
                "split `{split}`: label {bad} out of range for {} classes",
                classes.len()
            )));
        }
        Ok(DatasetSplit {
            split,
            classes,
            image_size,
            images,
            labels,
            paths,
        })
    }

    /// Loads one split folder laid out as `<dir>/<class>/<files>`.
    ///
    /// ```
    /// use fracture_data::{BadFilePolicy, DatasetSplit, LoadOptions, Split};
    /// let dir = tempfile::tempdir().unwrap();
    /// for class in ["fractured", "not_fractured"] {
    ///     std::fs::create_dir(dir.path().join(class)).unwrap();
    ///     image::GrayImage::new(20, 10).save(dir.path().join(class).join("1.png")).unwrap();
    /// }
    /// std::fs::write(dir.path().join("fractured/notes.txt"), "hello").unwrap();
    /// let opts = LoadOptions::new(8).with_policy(BadFilePolicy::Skip);
    /// let (split, summary) = DatasetSplit::load(dir.path(), Split::Train, &opts).unwrap();
    /// assert_eq!((split.len(), summary.skipped.len()), (2, 1));
    /// assert!(DatasetSplit::load(dir.path(), Split::Train, &LoadOptions::new(8)).is_err());
    /// ```
    pub fn load(
        dir: &Path,
        split: Split,
        options: &LoadOptions,
    ) -> Result<(DatasetSplit, LoadSummary)> {
        let scan = scan_split(dir)?;
        load_scanned(scan, split, options)
    }

    /// Which split this is.
    pub fn split(&self) -> Split {
        self.split
    }

    /// Class names in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Side of the square images in pixels.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True if the split holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The `i`-th image, `image_size * image_size` bytes, row-major. Panics if `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.image_size * self.image_size;
        &self.images[i * s..(i + 1) * s]
    }

    /// All images back to back.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// Labels (indices into [`DatasetSplit::classes`]).
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Source path of each image (for phantoms: the path the folder writer would use).
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Number of images per class, in label order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }
}

/// A dataset root with up to three splits sharing one class list.
///
/// ```
/// use fracture_data::{ImageFolder, LoadOptions, Split};
/// let root = tempfile::tempdir().unwrap();
/// for split in ["train", "val"] {
///     for (class, v) in [("fractured", 40u8), ("not_fractured", 200)] {
///         let dir = root.path().join(split).join(class);
///         std::fs::create_dir_all(&dir).unwrap();
///         image::GrayImage::from_pixel(12, 12, image::Luma([v])).save(dir.join("a.png")).unwrap();
///     }
/// }
/// let data = ImageFolder::load(root.path(), &LoadOptions::new(8)).unwrap();
/// assert_eq!(data.classes(), ["fractured", "not_fractured"]);
/// assert_eq!(data.train().unwrap().labels(), &[0, 1]);
/// assert!(data.test().is_err()); // absent split
///
/// // In-memory splits assemble into a folder too (this is what phantoms do).
/// let train = data.train().unwrap().clone();
/// let mem = ImageFolder::from_splits("mem".into(), vec![train], Default::default()).unwrap();
/// assert!(mem.has_split(Split::Train) && !mem.has_split(Split::Val));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    splits: [Option<DatasetSplit>; 3],
    summary: LoadSummary,
}

impl ImageFolder {
    /// Loads every split present under `root` (`train`, `val`, `test`; other entries of the
    /// root are ignored). Fails if none is present, if their class sets differ, or on a
    /// structural problem; bad files follow `options.policy`.
    pub fn load(root: &Path, options: &LoadOptions) -> Result<ImageFolder> {
        options.preprocess.validate()?;
        let meta = std::fs::metadata(root).map_err(|source| DataError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(DataError::WrongLayout {
                path: root.to_path_buf(),
                reason: "the dataset root is a file, not a folder".into(),
            });
        }
        let mut scans = Vec::new();
        for split in Split::ALL {
            let dir = root.join(split.dir_name());
            if dir.is_dir() {
                scans.push((split, scan_split(&dir)?));
            }
        }
        if scans.is_empty() {
            let found: Vec<String> = visible_entries(root)?
                .into_iter()
                .filter(|p| p.is_dir())
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            let reason = if found.is_empty() {
                "no train, val or test folder".to_string()
            } else {
                format!(
                    "no train, val or test folder (found folders {found:?}; a single folder of \
                     class folders loads with DatasetSplit::load)"
                )
            };
            return Err(DataError::WrongLayout {
                path: root.to_path_buf(),
                reason,
            });
        }
        let (reference, ref_scan) = (&scans[0].0, &scans[0].1);
        for (_, scan) in &scans[1..] {
            if scan.classes != ref_scan.classes {
                return Err(DataError::ClassMismatch {
                    path: scan.dir.clone(),
                    expected: ref_scan.classes.clone(),
                    found: scan.classes.clone(),
                    reference: reference.dir_name().to_string(),
                });
            }
        }
        let classes = ref_scan.classes.clone();
        let mut splits: [Option<DatasetSplit>; 3] = [None, None, None];
        let mut summary = LoadSummary::default();
        for (split, scan) in scans {
            let (data, s) = load_scanned(scan, split, options)?;
            summary.merge(s);
            splits[split as usize] = Some(data);
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            classes,
            splits,
            summary,
        })
    }

    /// Assembles a folder from in-memory splits (at most one per [`Split`]), checking that they
    /// share classes and image size. `root` only names the dataset in errors.
    pub fn from_splits(
        root: PathBuf,
        splits: Vec<DatasetSplit>,
        summary: LoadSummary,
    ) -> Result<ImageFolder> {
        let Some(first) = splits.first() else {
            return Err(DataError::WrongLayout {
                path: root,
                reason: "no split given".into(),
            });
        };
        let classes = first.classes.clone();
        let size = first.image_size;
        let reference = first.split.dir_name().to_string();
        let mut slots: [Option<DatasetSplit>; 3] = [None, None, None];
        for s in splits {
            if s.classes != classes {
                return Err(DataError::ClassMismatch {
                    path: root.join(s.split.dir_name()),
                    expected: classes,
                    found: s.classes.clone(),
                    reference,
                });
            }
            if s.image_size != size {
                return Err(DataError::Config(format!(
                    "split `{}` has image size {} but `{reference}` has {size}",
                    s.split, s.image_size
                )));
            }
            let slot = s.split as usize;
            if slots[slot].is_some() {
                return Err(DataError::Config(format!(
                    "split `{}` given twice",
                    s.split
                )));
            }
            slots[slot] = Some(s);
        }
        Ok(ImageFolder {
            root,
            classes,
            splits: slots,
            summary,
        })
    }

    /// What a model file records about its data, without an absolute path of this machine:
    /// the root's folder name and a fingerprint (64-bit FNV-1a, hex) of every loaded file's
    /// path relative to the root, split and label, in load order, e.g.
    /// `fracatlas (3918 files, list fnv1a 0x…)`. The same folder anywhere gives the same text.
    ///
    /// ```
    /// use fracture_data::phantom::PhantomConfig;
    /// let a = PhantomConfig { size: 16, train: 4, val: 2, test: 2, ..Default::default() }.folder().unwrap();
    /// let d = a.describe();
    /// assert!(d.contains("8 files") && d.contains("fnv1a"), "{d}");
    /// assert_eq!(d, a.clone().describe());
    /// ```
    pub fn describe(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                hash ^= b as u64;
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        let mut files = 0;
        for split in self.splits.iter().flatten() {
            for (path, label) in split.paths().iter().zip(split.labels()) {
                let rel = path.strip_prefix(&self.root).unwrap_or(path);
                eat(rel.to_string_lossy().as_bytes());
                eat(&[0, *label as u8, 0]);
                files += 1;
            }
        }
        let name = self
            .root
            .file_name()
            .map_or_else(|| self.root.to_string_lossy(), |n| n.to_string_lossy());
        format!("{name} ({files} files, list fnv1a {hash:#018x})")
    }

    /// The dataset root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Class names in label order (sorted folder names).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// What the load did (loaded count, skipped files with reasons, ignored stray files).
    pub fn summary(&self) -> &LoadSummary {
        &self.summary
    }

    /// True if the split is present.
    pub fn has_split(&self, split: Split) -> bool {
        self.splits[split as usize].is_some()
    }

    /// A split, or [`DataError::MissingSplit`] if it is absent.
    pub fn split(&self, split: Split) -> Result<&DatasetSplit> {
        self.splits[split as usize]
            .as_ref()
            .ok_or_else(|| DataError::MissingSplit {
                path: self.root.clone(),
                split: split.dir_name().to_string(),
            })
    }

    /// The training split.
    pub fn train(&self) -> Result<&DatasetSplit> {
        self.split(Split::Train)
    }

    /// The validation split.
    pub fn val(&self) -> Result<&DatasetSplit> {
        self.split(Split::Val)
    }

    /// The test split.
    pub fn test(&self) -> Result<&DatasetSplit> {
        self.split(Split::Test)
    }

    /// Takes a split out of the folder (for example to wrap it in an `Arc` for a loader).
    pub fn take_split(&mut self, split: Split) -> Result<DatasetSplit> {
        self.split(split)?;
        Ok(self.splits[split as usize].take().expect("checked above"))
    }

    /// Normalisation statistics of the training split (never of val or test).
    pub fn normalization(&self) -> Result<Normalization> {
        Normalization::from_train(self.train()?)
    }
}

/// The listing of one split folder before decoding.
pub(crate) struct SplitScan {
    pub(crate) dir: PathBuf,
    pub(crate) classes: Vec<String>,
    /// Per class: its folder and its files, sorted.
    pub(crate) files: Vec<(PathBuf, Vec<PathBuf>)>,
    pub(crate) ignored: Vec<PathBuf>,
}

/// Sorted non-hidden entries of a folder.
fn visible_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

pub(crate) fn scan_split(dir: &Path) -> Result<SplitScan> {
    let meta = std::fs::metadata(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(DataError::WrongLayout {
            path: dir.to_path_buf(),
            reason: "expected a folder of class folders, found a file".into(),
        });
    }
    let mut classes = Vec::new();
    let mut files = Vec::new();
    let mut ignored = Vec::new();
    for entry in visible_entries(dir)? {
        if entry.is_dir() {
            let name = entry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let class_files = scan_class(&entry)?;
            classes.push(name);
            files.push((entry, class_files));
        } else {
            ignored.push(entry);
        }
    }
    if classes.is_empty() {
        if ignored.is_empty() {
            return Err(DataError::NoImages {
                path: dir.to_path_buf(),
                skipped: 0,
            });
        }
        return Err(DataError::WrongLayout {
            path: dir.to_path_buf(),
            reason: format!(
                "{} file(s) but no class folders: images must sit in one sub-folder per class",
                ignored.len()
            ),
        });
    }
    Ok(SplitScan {
        dir: dir.to_path_buf(),
        classes,
        files,
        ignored,
    })
}

fn scan_class(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = visible_entries(dir)?;
    if entries.is_empty() {
        return Err(DataError::EmptyClassFolder {
            path: dir.to_path_buf(),
        });
    }
    if let Some(sub) = entries.iter().find(|p| p.is_dir()) {
        return Err(DataError::WrongLayout {
            path: sub.clone(),
            reason: "unexpected folder inside a class folder (class folders hold image files only)"
                .into(),
        });
    }
    Ok(entries)
}

fn load_scanned(
    scan: SplitScan,
    split: Split,
    options: &LoadOptions,
) -> Result<(DatasetSplit, LoadSummary)> {
    let cfg = options.preprocess;
    cfg.validate()?;
    let per_image = cfg.image_size * cfg.image_size;
    let mut summary = LoadSummary {
        ignored: scan.ignored,
        ..LoadSummary::default()
    };
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let mut paths = Vec::new();
    // Decode in chunks so that `Fail` stops soon after the first bad file, while the reported
    // error is always the first one in sorted order, whatever the thread count.
    let chunk = 8 * rayon::current_num_threads().max(1);
    for (label, (class_dir, files)) in scan.files.into_iter().enumerate() {
        let mut kept = 0usize;
        let mut skipped = 0usize;
        for part in files.chunks(chunk) {
            let decoded: Vec<Result<Vec<u8>>> =
                part.par_iter().map(|p| load_resized(p, &cfg)).collect();
            for (path, result) in part.iter().zip(decoded) {
                match result {
                    Ok(px) => {
                        debug_assert_eq!(px.len(), per_image);
                        images.extend_from_slice(&px);
                        labels.push(label);
                        paths.push(path.clone());
                        kept += 1;
                    }
                    Err(err) => match (options.policy, BadFileKind::of(&err)) {
                        (BadFilePolicy::Skip, Some(kind)) => {
                            skipped += 1;
                            summary.skipped.push(SkippedFile {
                                path: path.clone(),
                                kind,
                                reason: err.to_string(),
                            });
                        }
                        _ => return Err(err),
                    },
                }
            }
        }
        if kept == 0 {
            return Err(DataError::NoImages {
                path: class_dir,
                skipped,
            });
        }
    }
    summary.loaded = labels.len();
    let data = DatasetSplit::new(split, scan.classes, cfg.image_size, images, labels, paths)?;
    Ok((data, summary))
}

//! The crate's one error type, [`DataError`], and its [`Result`] alias.
//!
//! Every variant names the file or folder at fault and says what was expected, so a message
//! printed by the CLI is enough to find and fix the input.

use std::path::PathBuf;

/// Crate-wide result type.
pub type Result<T> = std::result::Result<T, DataError>;

/// Everything that can go wrong between files on disk and NCHW batches.
///
/// ```
/// use fracture_data::{decode_luma8_from_memory, DataError, DecodeLimits};
///
/// let err = decode_luma8_from_memory(b"not an image", "notes.txt".as_ref(), &DecodeLimits::default())
///     .unwrap_err();
/// assert!(matches!(err, DataError::UnknownFormat { .. }));
/// assert!(err.to_string().contains("notes.txt"));
/// assert_eq!(err.path().unwrap().to_str(), Some("notes.txt"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read (missing, permission denied, broken link, ...).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path that could not be read.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The file's content is not a recognised image format (PNG, JPEG, GIF, BMP, TIFF, WebP,
    /// DICOM).
    #[error(
        "{path}: not a recognised image (expected PNG, JPEG, GIF, BMP, TIFF, WebP or DICOM data; \
         the content is checked, not the extension)"
    )]
    UnknownFormat {
        /// The file whose content was not recognised.
        path: PathBuf,
    },

    /// A file of a recognised format that holds no image: a DICOM object without pixel data
    /// (RT plan, structured report, waveform, DICOMDIR, ...).
    #[error("{path}: not an image: {reason}")]
    NotAnImage {
        /// The file at fault.
        path: PathBuf,
        /// What the file holds instead.
        reason: String,
    },

    /// An image in an encoding this build cannot decode (for DICOM: a transfer syntax without
    /// a built-in pure-Rust codec, such as JPEG-LS; or a photometric interpretation that is not
    /// monochrome, RGB or YBR).
    #[error("{path}: unsupported image encoding: {reason}")]
    Unsupported {
        /// The file at fault.
        path: PathBuf,
        /// What is not supported (for DICOM, naming the transfer syntax).
        reason: String,
    },

    /// The image data is corrupt or truncated, or the decoder rejected it.
    #[error("{path}: corrupt or truncated {format} data: {reason}")]
    Corrupt {
        /// The file at fault.
        path: PathBuf,
        /// The format detected from the content.
        format: String,
        /// What the decoder (or the end-of-image check) reported.
        reason: String,
    },

    /// The image is larger than the configured limits (protection against decompression bombs).
    #[error(
        "{path}: image of {width}x{height} px exceeds the limit of {max_width}x{max_height} px \
         / {max_alloc} bytes of decoder memory"
    )]
    TooLarge {
        /// The file at fault.
        path: PathBuf,
        /// Width announced by the file header (0 if unknown).
        width: u32,
        /// Height announced by the file header (0 if unknown).
        height: u32,
        /// The configured maximum width.
        max_width: u32,
        /// The configured maximum height.
        max_height: u32,
        /// The configured maximum decoder allocation in bytes.
        max_alloc: u64,
    },

    /// The file is larger than the decoder may allocate ([`crate::DecodeLimits::max_alloc`]);
    /// it is not read past that size.
    #[error("{path}: file of {size} bytes or more exceeds the limit of {max} bytes for one image")]
    FileTooLarge {
        /// The file at fault.
        path: PathBuf,
        /// Its size (at least).
        size: u64,
        /// The limit in bytes.
        max: u64,
    },

    /// The dataset root does not follow `<root>/{train,val,test}/<class>/<files>`.
    #[error("{path}: wrong dataset layout: {reason} (expected <root>/{{train,val,test}}/<class>/<image files>)")]
    WrongLayout {
        /// The folder at fault.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },

    /// A split (`train`, `val` or `test`) was asked for but is not present under the root.
    #[error("{path}: split `{split}` is missing (expected a folder {path}/{split}/<class>/...)")]
    MissingSplit {
        /// The dataset root.
        path: PathBuf,
        /// The split's folder name.
        split: String,
    },

    /// A class folder holds no files at all.
    #[error("{path}: empty class folder (expected at least one image file)")]
    EmptyClassFolder {
        /// The empty class folder.
        path: PathBuf,
    },

    /// A folder holds files, but none of them could be used as an image.
    #[error("{path}: no usable images ({skipped} file(s) skipped as unreadable or not images)")]
    NoImages {
        /// The folder without usable images.
        path: PathBuf,
        /// How many files were present but skipped.
        skipped: usize,
    },

    /// Two splits do not have the same set of class folders.
    #[error("{path}: class folders {found:?} differ from {expected:?} found in `{reference}`")]
    ClassMismatch {
        /// The split folder whose classes differ.
        path: PathBuf,
        /// The classes of the reference split.
        expected: Vec<String>,
        /// The classes found in this split.
        found: Vec<String>,
        /// The split that set the reference class list.
        reference: String,
    },

    /// The training split does not hold exactly two class folders.
    #[error("{path} has {} class folder(s) {found:?}; a fracture classifier needs exactly two, fractured/ and not_fractured/ (or two others with a named positive class)", found.len())]
    ClassCount {
        /// The training split's folder.
        path: PathBuf,
        /// The class folders found, sorted.
        found: Vec<String>,
    },

    /// The positive class named is not one of the class folders.
    #[error("{positive:?} is not one of the class folders {found:?} in {path}")]
    UnknownPositiveClass {
        /// The training split's folder.
        path: PathBuf,
        /// The class named as positive.
        positive: String,
        /// The class folders found, sorted.
        found: Vec<String>,
    },

    /// Two class folders not named fractured and not_fractured, and no positive class named.
    #[error("{path}: class folders {found:?} are not fractured/ and not_fractured/; name the positive one")]
    PositiveClassUnnamed {
        /// The dataset root.
        path: PathBuf,
        /// The class folders found, sorted.
        found: Vec<String>,
    },

    /// A folder to evaluate whose classes are not the model's.
    #[error("{path}: class folders {found:?} are not the model's classes {expected:?}; evaluate on data laid out like the training data")]
    NotModelClasses {
        /// The split folder.
        path: PathBuf,
        /// Its class folders.
        found: Vec<String>,
        /// The model's classes.
        expected: Vec<String>,
    },

    /// A configuration value is out of its valid range.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Writing an image or a file failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The path that could not be written.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl DataError {
    /// The path this error is about, if it is about one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            DataError::Io { path, .. }
            | DataError::UnknownFormat { path }
            | DataError::NotAnImage { path, .. }
            | DataError::Unsupported { path, .. }
            | DataError::Corrupt { path, .. }
            | DataError::TooLarge { path, .. }
            | DataError::FileTooLarge { path, .. }
            | DataError::WrongLayout { path, .. }
            | DataError::MissingSplit { path, .. }
            | DataError::EmptyClassFolder { path }
            | DataError::NoImages { path, .. }
            | DataError::ClassMismatch { path, .. }
            | DataError::ClassCount { path, .. }
            | DataError::UnknownPositiveClass { path, .. }
            | DataError::PositiveClassUnnamed { path, .. }
            | DataError::NotModelClasses { path, .. }
            | DataError::Write { path, .. } => Some(path),
            DataError::Config(_) => None,
        }
    }
}

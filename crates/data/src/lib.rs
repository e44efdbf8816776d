//! # fracture-data
//!
//! Everything between files on disk and NCHW batches for fracture-nn:
//!
//! - [`decode`]: decoding by content (PNG, JPEG, GIF, BMP, TIFF, WebP, DICOM) into 8-bit
//!   luminance, with limits against decompression bombs;
//! - [`dicom`]: DICOM's display pipeline (modality LUT, VOI window, MONOCHROME1) and the SOP
//!   Instance UID that matches a result back to the archive;
//! - [`resize`] and [`preprocess`]: square resize (letterbox or stretch) and the one
//!   preprocessing path shared by training and prediction ([`preprocess_file`]);
//! - [`folder`]: `<root>/{train,val,test}/<class>/<files>` loaded once into memory, with a
//!   bad-file policy and a load summary;
//! - [`normalize`]: mean/std from the training split only, serialisable for checkpoints;
//! - [`augment`]: seeded flips, rotation, crop, translation, brightness/contrast, noise, gamma,
//!   blur and down-and-up-scaling;
//! - [`classes`]: which class folder is positive, and labels in a model's class order;
//! - [`boxes`]: finding boxes per image from a CSV, and the box-mask targets of a mask head;
//! - [`csv_table`]: the per-image CSV tables (boxes, metadata) keyed by relative path;
//! - [`loader`]: shuffled or balanced, prefetching batch loader;
//! - [`phantom`]: synthetic X-ray phantoms, the built-in default dataset;
//! - [`audit`]: exact and near copies within and across splits, and a split by copy group.
//!
//! ```
//! use fracture_data::{phantom::PhantomConfig, BatchLoader, LoaderConfig, Split};
//!
//! // A small synthetic dataset, used exactly like a folder loaded from disk.
//! let mut data = PhantomConfig { size: 32, train: 16, val: 8, test: 0, ..Default::default() }
//!     .folder()?;
//! let norm = data.normalization()?; // from the train split only
//! let train = BatchLoader::new(data.take_split(Split::Train)?, norm,
//!     LoaderConfig { batch_size: 8, seed: 42, ..Default::default() })?;
//! for batch in train.epoch(0) {
//!     assert_eq!(batch.shape(), [8, 1, 32, 32]);
//! }
//! # Ok::<(), fracture_data::DataError>(())
//! ```

#![forbid(unsafe_code)]

pub mod audit;
pub mod augment;
pub mod boxes;
pub mod classes;
pub mod csv_table;
pub mod decode;
pub mod dicom;
pub mod error;
pub mod folder;
pub mod loader;
pub mod normalize;
pub mod phantom;
pub mod preprocess;
pub mod resize;
mod rng;

pub use augment::{Augment, Warp};
pub use boxes::{BoxAnnotations, PixelBox};
pub use csv_table::CsvTable;
pub use decode::{decode_luma8, decode_luma8_from_memory, DecodeLimits, GrayImage};
pub use error::{DataError, Result};
pub use folder::{
    BadFileKind, BadFilePolicy, DatasetSplit, ImageFolder, LoadOptions, LoadSummary, SkippedFile,
    Split, CLASS_NAMES, FRACTURED, NOT_FRACTURED,
};
pub use loader::{Batch, BatchLoader, EpochBatches, LoaderConfig};
pub use normalize::Normalization;
pub use preprocess::{
    load_resized, load_resized_from_memory, preprocess_file, standardise, PreprocessConfig,
    DEFAULT_IMAGE_SIZE,
};
pub use resize::{resize_square, ResizeMode};
pub use rng::sample_rng;

//! Streaming, batched prediction over any number of image files with bounded memory.
//!
//! [`predict_stream`] takes the files as an iterator (a directory walk, a list read line by
//! line, ...) and yields their results one batch at a time, in input order:
//!
//! ```text
//! inputs --(decode thread: take batch_size, decode in parallel with rayon)--> bounded channel
//!        --(caller's thread: stack the batch, Classifier::predict_batch)--> Vec<Scored>
//! ```
//!
//! At most `batches_ahead` decoded batches wait in the channel, one more is being decoded and
//! one is being classified, so memory is bounded by the batch size and the decode limits, not by
//! the number of files; the iterator is pulled only as fast as batches are consumed. Each file is
//! read once and preprocessed exactly as [`Classifier::predict_file`] does (decode by content,
//! square resize, standardise), with the model's test-time augmentation, so a file's probability
//! does not depend on which batch it lands in (up to float rounding of the batched kernels).
//! A file that cannot be read or decoded gets an error result and the others go on.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use rayon::prelude::*;

use crate::classifier::Classifier;
use crate::error::{Error, Result};

/// Batching and read-ahead of [`predict_stream`].
///
/// ```
/// let cfg = fracture_nn::batch_predict::StreamConfig::default();
/// assert_eq!((cfg.batch_size, cfg.batches_ahead, cfg.keep_pixels), (8, 2, false));
/// assert_eq!(cfg.threshold, None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamConfig {
    /// Images per forward pass (default 8; memory grows with it).
    pub batch_size: usize,
    /// Decoded batches that may wait for the network (default 2).
    pub batches_ahead: usize,
    /// Keep each image's resized 8-bit pixels in its result, e.g. to draw an overlay
    /// (default false).
    pub keep_pixels: bool,
    /// Threshold on P(fractured) for the label (default: the model's operating threshold).
    pub threshold: Option<f64>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            batch_size: 8,
            batches_ahead: 2,
            keep_pixels: false,
            threshold: None,
        }
    }
}

/// One file to classify, or a file the caller already knows cannot be (a folder that could not
/// be read, say): its `error` is passed through as the result.
///
/// ```
/// use fracture_nn::batch_predict::Input;
/// let input = Input::from(std::path::PathBuf::from("scan.png"));
/// assert!(input.error.is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// The file.
    pub path: PathBuf,
    /// Why it cannot be classified, if known before reading it.
    pub error: Option<String>,
}

impl From<PathBuf> for Input {
    fn from(path: PathBuf) -> Self {
        Input { path, error: None }
    }
}

/// The answer for one classified image.
///
/// ```
/// use fracture_nn::batch_predict::Scoring;
/// let s = Scoring { p_fractured: 0.9, label: "fractured".into(), positive: true,
///                   warning: None, sop_instance_uid: None, pixels: None, typicality: None };
/// assert!(s.positive);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Scoring {
    /// P(positive class), under the model's test-time augmentation.
    pub p_fractured: f64,
    /// The class name at the threshold.
    pub label: String,
    /// True if the label is the positive (fractured) class.
    pub positive: bool,
    /// A warning about the input (every pixel the same, so the label means nothing).
    pub warning: Option<String>,
    /// The SOP Instance UID of a DICOM file (only the UID; `None` for other formats).
    pub sop_instance_uid: Option<String>,
    /// The resized 8-bit image the network saw, with [`StreamConfig::keep_pixels`].
    pub pixels: Option<Vec<u8>>,
    /// How typical the image is of the training radiographs (`None`: the model cannot judge).
    pub typicality: Option<crate::typicality::Typicality>,
}

/// One file's result: its [`Scoring`], or why it could not be classified (the message names
/// the file and what is wrong).
///
/// ```
/// use fracture_nn::batch_predict::Scored;
/// let s = Scored { path: "a.png".into(), outcome: Err("a.png: not a recognised image".into()) };
/// assert!(s.outcome.is_err());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// The file, as the input named it.
    pub path: PathBuf,
    /// Its scoring or the error.
    pub outcome: std::result::Result<Scoring, String>,
}

/// A file after the decode stage.
struct Decoded {
    path: PathBuf,
    outcome: std::result::Result<(Vec<u8>, Option<String>), String>,
}

/// The results of `inputs`, batch by batch, in input order (see the module docs). The decode
/// thread starts at once; dropping the stream stops it.
///
/// ```
/// use fracture_nn::batch_predict::{predict_stream, StreamConfig};
/// use fracture_nn::{Classifier, ClassifierMeta, ModelConfig};
/// let dir = tempfile::tempdir()?;
/// let mut files = Vec::new();
/// for i in 0..5u8 {
///     let path = dir.path().join(format!("{i}.png"));
///     image::GrayImage::from_fn(40, 30, |x, y| image::Luma([(x * y) as u8 ^ i])).save(&path)?;
///     files.push(path);
/// }
/// files.push(dir.path().join("missing.png"));
/// let meta = ClassifierMeta::new(ModelConfig::phantom(32), fracture_nn::data::Normalization { mean: 0.5, std: 0.25 });
/// let mut clf = Classifier::new(meta, 7)?;
/// let cfg = StreamConfig { batch_size: 4, ..StreamConfig::default() };
/// let batches: Vec<_> = predict_stream(&mut clf, files.clone(), &cfg)?.collect::<Result<_, _>>()?;
/// assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [4, 2]);
/// let all: Vec<_> = batches.into_iter().flatten().collect();
/// // In input order, the same probability as one file at a time, and the missing file named.
/// for (s, f) in all.iter().zip(&files).take(5) {
///     assert_eq!(&s.path, f);
///     let alone = clf.predict_file(f)?;
///     assert!((s.outcome.as_ref().unwrap().p_fractured - alone).abs() < 1e-5);
/// }
/// assert!(all[5].outcome.as_ref().unwrap_err().contains("missing.png"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn predict_stream<'a, I>(
    clf: &'a mut Classifier,
    inputs: I,
    config: &StreamConfig,
) -> Result<PredictStream<'a>>
where
    I: IntoIterator,
    I::Item: Into<Input>,
    I::IntoIter: Send + 'static,
{
    if config.batch_size == 0 {
        return Err(Error::Config("batch_size must be at least 1".into()));
    }
    let threshold = config.threshold.unwrap_or(clf.meta.threshold);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(Error::Config(format!(
            "threshold {threshold} must be a probability in [0, 1]"
        )));
    }
    let (tx, rx) = sync_channel::<Vec<Decoded>>(config.batches_ahead);
    let preprocess = clf.meta.preprocess;
    let batch_size = config.batch_size;
    let mut inputs = inputs.into_iter();
    let worker = std::thread::Builder::new()
        .name("fracture-decode-ahead".into())
        .spawn(move || loop {
            let chunk: Vec<Input> = inputs.by_ref().take(batch_size).map(Into::into).collect();
            if chunk.is_empty() {
                return;
            }
            let decoded: Vec<Decoded> = chunk
                .into_par_iter()
                .map(|input| decode(input, &preprocess))
                .collect();
            if tx.send(decoded).is_err() {
                return; // the consumer went away
            }
        })
        .map_err(|e| Error::Config(format!("cannot start the decode thread: {e}")))?;
    Ok(PredictStream {
        clf,
        rx: Some(rx),
        worker: Some(worker),
        threshold,
        keep_pixels: config.keep_pixels,
    })
}

/// Reads, decodes and resizes one file (once), noting a DICOM file's SOP Instance UID.
fn decode(input: Input, preprocess: &fracture_data::PreprocessConfig) -> Decoded {
    let Input { path, error } = input;
    if let Some(e) = error {
        return Decoded {
            path,
            outcome: Err(e),
        };
    }
    let outcome = read_resized(&path, preprocess).map_err(|e| chain(&e));
    Decoded { path, outcome }
}

fn read_resized(
    path: &Path,
    preprocess: &fracture_data::PreprocessConfig,
) -> std::result::Result<(Vec<u8>, Option<String>), fracture_data::DataError> {
    preprocess.validate()?;
    let bytes = fracture_data::decode::read_image_bytes(path, &preprocess.limits)?;
    let gray = fracture_data::decode_luma8_from_memory(&bytes, path, &preprocess.limits)?;
    let pixels = fracture_data::resize_square(&gray, preprocess.image_size, preprocess.resize_mode);
    // Only the UID, and only for DICOM; a header it cannot read is no reason to drop the answer.
    let uid = fracture_data::dicom::sop_instance_uid_from_memory(&bytes, path)
        .ok()
        .flatten();
    Ok((pixels, uid))
}

/// The error and its sources joined by ": " (as `anyhow`'s `{:#}` prints them).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// A warning for an input that gives the network nothing to look at: every pixel the same
/// (an empty, all-black or all-white image, or a 1x1 one stretched to the input size).
///
/// ```
/// use fracture_nn::batch_predict::degenerate_input;
/// assert!(degenerate_input(&[7, 7, 7]).unwrap().contains("every pixel is 7"));
/// assert_eq!(degenerate_input(&[7, 8]), None);
/// ```
pub fn degenerate_input(gray: &[u8]) -> Option<String> {
    let first = *gray.first()?;
    gray.iter()
        .all(|&v| v == first)
        .then(|| format!("degenerate input: every pixel is {first}, so the label means nothing"))
}

/// The batches of [`predict_stream`]; each item is one batch's results in input order, or an
/// error of the network itself (a file's own problems are in its [`Scored::outcome`]).
pub struct PredictStream<'a> {
    clf: &'a mut Classifier,
    rx: Option<Receiver<Vec<Decoded>>>,
    worker: Option<JoinHandle<()>>,
    threshold: f64,
    keep_pixels: bool,
}

impl std::fmt::Debug for PredictStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PredictStream")
            .field("threshold", &self.threshold)
            .field("keep_pixels", &self.keep_pixels)
            .finish_non_exhaustive()
    }
}

impl PredictStream<'_> {
    /// The classifier the stream runs (e.g. for its class names).
    pub fn classifier(&self) -> &Classifier {
        self.clf
    }

    fn classify(&mut self, batch: Vec<Decoded>) -> Result<Vec<Scored>> {
        let per = self.clf.image_size() * self.clf.image_size();
        let good: Vec<&[u8]> = batch
            .iter()
            .filter_map(|d| d.outcome.as_ref().ok().map(|(px, _)| px.as_slice()))
            .collect();
        let mut x = vec![0f32; good.len() * per];
        let norm = self.clf.meta.normalization;
        x.par_chunks_mut(per)
            .zip(good.par_iter())
            .for_each(|(out, px)| norm.apply_u8(px, out));
        let probs = if good.is_empty() {
            Vec::new()
        } else {
            self.clf.predict_batch(&x, good.len())?
        };
        drop(x);
        let mut typical = self
            .clf
            .last_typicality()
            .filter(|t| t.len() == probs.len())
            .map(|t| t.into_iter());
        let mut probs = probs.into_iter();
        let positive_name = self.clf.meta.class_names[self.clf.meta.positive_class].clone();
        Ok(batch
            .into_iter()
            .map(|d| {
                let outcome = d.outcome.map(|(pixels, uid)| {
                    let p = probs.next().expect("one probability per decoded image");
                    let label = self.clf.label(p, Some(self.threshold)).to_string();
                    Scoring {
                        p_fractured: p,
                        positive: label == positive_name,
                        label,
                        warning: degenerate_input(&pixels),
                        sop_instance_uid: uid,
                        pixels: self.keep_pixels.then_some(pixels),
                        typicality: typical.as_mut().and_then(|t| t.next()),
                    }
                });
                Scored {
                    path: d.path,
                    outcome,
                }
            })
            .collect())
    }
}

impl Iterator for PredictStream<'_> {
    type Item = Result<Vec<Scored>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.rx.as_ref()?.recv() {
            Ok(batch) => Some(self.classify(batch)),
            Err(_) => {
                // The decode thread is done (or panicked: pass its panic on).
                self.rx = None;
                if let Some(Err(payload)) = self.worker.take().map(JoinHandle::join) {
                    std::panic::resume_unwind(payload);
                }
                None
            }
        }
    }
}

impl Drop for PredictStream<'_> {
    fn drop(&mut self) {
        // Dropping the receiver makes the decode thread's next send fail, so it stops.
        drop(self.rx.take());
        if let Some(handle) = self.worker.take() {
            let _ = handle.join();
        }
    }
}

//! The batch loader: seeded per-epoch order, optional class balancing, parallel assembly of
//! NCHW `f32` batches, and prefetching of the next batch on a background thread.
//!
//! Training mode shuffles every epoch (seeded by `(seed, epoch)`), optionally samples classes
//! equally (with replacement), and augments each sample with its own generator
//! [`crate::sample_rng`]`(seed, epoch, position in the epoch)`. Evaluation mode
//! ([`LoaderConfig::eval`]) keeps the dataset order and applies no augmentation, so its batches
//! are exactly what [`crate::preprocess_file`] gives for the same images. The same seed gives the
//! same batches whatever the number of rayon threads.
//!
//! The prefetch thread assembles batches on rayon's global pool (size it with
//! `rayon::ThreadPoolBuilder::build_global` to limit the threads), sharing it with the training
//! step that runs at the same time.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::augment::Augment;
use crate::boxes::{mask_target, PixelBox};
use crate::error::{DataError, Result};
use crate::folder::DatasetSplit;
use crate::normalize::Normalization;
use crate::rng::{derive_rng, sample_rng, DOMAIN_ORDER};

/// How batches are drawn from a split.
///
/// ```
/// use fracture_data::LoaderConfig;
/// let train = LoaderConfig { batch_size: 16, seed: 7, ..Default::default() };
/// assert!(train.shuffle && train.augment.is_some());
/// let eval = LoaderConfig::eval(64);
/// assert!(!eval.shuffle && eval.augment.is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Images per batch (default 32).
    pub batch_size: usize,
    /// Shuffle each epoch (default true).
    pub shuffle: bool,
    /// Draw classes with equal probability, with replacement (default false). The epoch keeps
    /// the split's length.
    pub balanced: bool,
    /// Augmentation, or `None` (default: `Some(Augment::default())`).
    pub augment: Option<Augment>,
    /// Seed of shuffling, sampling and augmentation (default 0).
    pub seed: u64,
    /// Drop the last incomplete batch (default false).
    pub drop_last: bool,
    /// Prepare the next batch on a background thread (default true).
    pub prefetch: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 32,
            shuffle: true,
            balanced: false,
            augment: Some(Augment::default()),
            seed: 0,
            drop_last: false,
            prefetch: true,
        }
    }
}

impl LoaderConfig {
    /// Evaluation: fixed dataset order, no balancing, no augmentation, every image once.
    pub fn eval(batch_size: usize) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            shuffle: false,
            balanced: false,
            augment: None,
            seed: 0,
            drop_last: false,
            prefetch: true,
        }
    }
}

/// One NCHW batch (C = 1) with its labels and the dataset indices of its images.
///
/// ```
/// use fracture_data::Batch;
/// let b = Batch { images: vec![0.0; 2 * 9], labels: vec![0, 1], indices: vec![4, 2], n: 2, size: 3,
///     masks: Vec::new(), mask_weights: Vec::new(), mask_side: 0 };
/// assert_eq!(b.shape(), [2, 1, 3, 3]);
/// assert_eq!(b.image(1).len(), 9);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `n * 1 * size * size` standardised pixels, NCHW.
    pub images: Vec<f32>,
    /// Label of each image.
    pub labels: Vec<usize>,
    /// Index of each image in the dataset split.
    pub indices: Vec<usize>,
    /// Number of images.
    pub n: usize,
    /// Side of each image in pixels.
    pub size: usize,
    /// Box-mask targets, `n * mask_side * mask_side` values in {0, 1} (empty when the loader
    /// has no boxes: [`BatchLoader::with_boxes`]); they follow each image's augmentation.
    pub masks: Vec<f32>,
    /// Per image, 1 if its target is known (annotated), 0 if not (empty without boxes).
    pub mask_weights: Vec<f32>,
    /// Side of the mask grid (0 without boxes).
    pub mask_side: usize,
}

impl Batch {
    /// `[n, 1, size, size]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.n, 1, self.size, self.size]
    }

    /// The pixels of the `i`-th image. Panics if `i >= n`.
    pub fn image(&self, i: usize) -> &[f32] {
        let s = self.size * self.size;
        &self.images[i * s..(i + 1) * s]
    }
}

/// Everything a batch needs, shared with the prefetch thread.
struct Shared {
    data: Arc<DatasetSplit>,
    normalization: Normalization,
    config: LoaderConfig,
    boxes: Option<BoxTargets>,
}

/// Finding boxes of every image of the split and the mask grid they are drawn on.
struct BoxTargets {
    boxes: Vec<Option<Vec<PixelBox>>>,
    side: usize,
}

/// Draws batches from a split in memory.
///
/// ```
/// use fracture_data::{phantom::PhantomConfig, BatchLoader, LoaderConfig, Split};
/// let mut data = PhantomConfig { size: 32, train: 10, val: 6, test: 0, ..Default::default() }.folder().unwrap();
/// let norm = data.normalization().unwrap();
/// let train = data.take_split(Split::Train).unwrap();
/// let loader = BatchLoader::new(train, norm, LoaderConfig { batch_size: 4, ..Default::default() }).unwrap();
/// let batches: Vec<_> = loader.epoch(0).collect();
/// assert_eq!(batches.len(), 3); // 4 + 4 + 2
/// assert_eq!(batches[0].shape(), [4, 1, 32, 32]);
/// assert_eq!(loader.epoch(0).next().unwrap(), batches[0]); // seeded: the same again
///
/// // Each epoch visits a new permutation.
/// let (a, mut b) = (loader.epoch_order(0), loader.epoch_order(1));
/// assert_ne!(a, b);
/// b.sort();
/// assert_eq!(b, (0..10).collect::<Vec<_>>());
///
/// // Evaluation: fixed order, no augmentation.
/// let val = BatchLoader::eval(data.take_split(Split::Val).unwrap(), norm, 4).unwrap();
/// let seen: Vec<usize> = val.epoch(0).flat_map(|b| b.indices).collect();
/// assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
/// ```
#[derive(Clone)]
pub struct BatchLoader {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BatchLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchLoader")
            .field("split", &self.shared.data.split())
            .field("len", &self.shared.data.len())
            .field("normalization", &self.shared.normalization)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl BatchLoader {
    /// A loader over `data` (owned or already in an `Arc`), standardising with `normalization`.
    ///
    /// Fails on an empty split, a zero batch size, invalid augmentation or a non-positive std.
    pub fn new(
        data: impl Into<Arc<DatasetSplit>>,
        normalization: Normalization,
        config: LoaderConfig,
    ) -> Result<BatchLoader> {
        let data = data.into();
        if data.is_empty() {
            return Err(DataError::Config(format!(
                "cannot load batches from the empty `{}` split",
                data.split()
            )));
        }
        if config.batch_size == 0 {
            return Err(DataError::Config("batch_size must be at least 1".into()));
        }
        let finite = normalization.std.is_finite() && normalization.mean.is_finite();
        if !(finite && normalization.std > 0.0) {
            return Err(DataError::Config(format!(
                "normalisation needs a finite mean and a positive std, got {normalization:?}"
            )));
        }
        if let Some(aug) = &config.augment {
            aug.validate()?;
        }
        Ok(BatchLoader {
            shared: Arc::new(Shared {
                data,
                normalization,
                config,
                boxes: None,
            }),
        })
    }

    /// This loader with finding boxes (one entry per image of the split, in input pixels, as
    /// [`crate::BoxAnnotations::for_split`] gives them; `None` = not annotated): every batch
    /// then carries [`Batch::masks`] on a `side x side` grid.
    ///
    /// ```
    /// use fracture_data::{phantom::PhantomConfig, BatchLoader, LoaderConfig, Split};
    /// let mut data = PhantomConfig { size: 32, train: 4, val: 2, test: 0, ..Default::default() }.folder()?;
    /// let norm = data.normalization()?;
    /// let split = data.take_split(Split::Train)?;
    /// let boxes = vec![Some(vec![[0.0, 0.0, 32.0, 32.0]]), Some(vec![]), None, None];
    /// let loader = BatchLoader::new(split, norm, LoaderConfig::eval(4))?.with_boxes(boxes, 2)?;
    /// let b = loader.epoch(0).next().unwrap();
    /// assert_eq!(b.masks, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    /// assert_eq!(b.mask_weights, [1.0, 1.0, 0.0, 0.0]);
    /// # Ok::<(), fracture_data::DataError>(())
    /// ```
    pub fn with_boxes(self, boxes: Vec<Option<Vec<PixelBox>>>, side: usize) -> Result<BatchLoader> {
        if boxes.len() != self.shared.data.len() || side == 0 {
            return Err(DataError::Config(format!(
                "box targets: {} entries on a {side} x {side} grid for a split of {} images",
                boxes.len(),
                self.shared.data.len()
            )));
        }
        let shared = Shared {
            data: Arc::clone(&self.shared.data),
            normalization: self.shared.normalization,
            config: self.shared.config,
            boxes: Some(BoxTargets { boxes, side }),
        };
        Ok(BatchLoader {
            shared: Arc::new(shared),
        })
    }

    /// An evaluation loader: [`LoaderConfig::eval`] with this batch size.
    pub fn eval(
        data: impl Into<Arc<DatasetSplit>>,
        normalization: Normalization,
        batch_size: usize,
    ) -> Result<BatchLoader> {
        BatchLoader::new(data, normalization, LoaderConfig::eval(batch_size))
    }

    /// The split this loader draws from.
    pub fn dataset(&self) -> &DatasetSplit {
        &self.shared.data
    }

    /// The loader's configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.shared.config
    }

    /// The standardisation applied to every batch.
    pub fn normalization(&self) -> Normalization {
        self.shared.normalization
    }

    /// Number of batches in an epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.shared.data.len();
        let b = self.shared.config.batch_size;
        if self.shared.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The dataset indices visited in `epoch`, in order (a permutation, a balanced draw, or
    /// `0..len` in evaluation mode).
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        epoch_order(&self.shared, epoch)
    }

    /// Assembles batch number `batch` of `epoch` synchronously (random access; the iterator
    /// from [`BatchLoader::epoch`] yields the same batches). Panics if
    /// `batch >= batches_per_epoch()`.
    pub fn batch(&self, epoch: usize, batch: usize) -> Batch {
        let order = self.epoch_order(epoch);
        build_batch(&self.shared, &order, epoch, batch)
    }

    /// Iterates over the batches of `epoch`. With `prefetch` the next batch is assembled on a
    /// background thread while the caller works on the current one.
    pub fn epoch(&self, epoch: usize) -> EpochBatches {
        let total = self.batches_per_epoch();
        let order = Arc::new(self.epoch_order(epoch));
        if !self.shared.config.prefetch {
            return EpochBatches {
                state: State::Sync {
                    shared: Arc::clone(&self.shared),
                    order,
                },
                epoch,
                next: 0,
                total,
            };
        }
        // Capacity 1: one finished batch waits while the worker prepares the one after it.
        let (tx, rx) = sync_channel::<Batch>(1);
        let shared = Arc::clone(&self.shared);
        let worker = std::thread::Builder::new()
            .name("fracture-data-prefetch".into())
            .spawn(move || {
                for b in 0..total {
                    let batch = build_batch(&shared, &order, epoch, b);
                    if tx.send(batch).is_err() {
                        return; // the consumer stopped early
                    }
                }
            });
        let state = match worker {
            Ok(handle) => State::Prefetch {
                rx: Some(rx),
                worker: Some(handle),
            },
            // No thread available: fall back to synchronous assembly.
            Err(_) => State::Sync {
                shared: Arc::clone(&self.shared),
                order: Arc::new(self.epoch_order(epoch)),
            },
        };
        EpochBatches {
            state,
            epoch,
            next: 0,
            total,
        }
    }
}

enum State {
    Sync {
        shared: Arc<Shared>,
        order: Arc<Vec<usize>>,
    },
    Prefetch {
        rx: Option<Receiver<Batch>>,
        worker: Option<JoinHandle<()>>,
    },
}

/// The batches of one epoch, in order (see [`BatchLoader::epoch`]).
///
/// ```
/// use fracture_data::{phantom::PhantomConfig, BatchLoader, Normalization, Split};
/// let mut data = PhantomConfig { size: 16, train: 0, val: 5, test: 0, ..Default::default() }.folder().unwrap();
/// let loader = BatchLoader::eval(data.take_split(Split::Val).unwrap(), Normalization::IDENTITY, 2).unwrap();
/// let it = loader.epoch(0);
/// assert_eq!(it.len(), 3);
/// ```
pub struct EpochBatches {
    state: State,
    epoch: usize,
    next: usize,
    total: usize,
}

impl Iterator for EpochBatches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.total {
            return None;
        }
        let batch = match &mut self.state {
            State::Sync { shared, order } => build_batch(shared, order, self.epoch, self.next),
            State::Prefetch { rx, worker } => match rx.as_ref().and_then(|r| r.recv().ok()) {
                Some(batch) => batch,
                None => {
                    // The worker only stops early by panicking: pass its panic on.
                    if let Some(Err(payload)) = worker.take().map(JoinHandle::join) {
                        std::panic::resume_unwind(payload);
                    }
                    self.next = self.total;
                    return None;
                }
            },
        };
        self.next += 1;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.total - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for EpochBatches {}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        if let State::Prefetch { rx, worker } = &mut self.state {
            // Dropping the receiver makes the worker's next send fail, so it stops.
            drop(rx.take());
            if let Some(handle) = worker.take() {
                let _ = handle.join();
            }
        }
    }
}

fn epoch_order(shared: &Shared, epoch: usize) -> Vec<usize> {
    let data = &shared.data;
    let cfg = &shared.config;
    let n = data.len();
    let mut rng = derive_rng(cfg.seed, epoch as u64, 0, DOMAIN_ORDER);
    if cfg.balanced {
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); data.classes().len()];
        for (i, &l) in data.labels().iter().enumerate() {
            by_class[l].push(i);
        }
        by_class.retain(|members| !members.is_empty());
        (0..n)
            .map(|_| {
                let members = &by_class[rng.gen_range(0..by_class.len())];
                members[rng.gen_range(0..members.len())]
            })
            .collect()
    } else {
        let mut order: Vec<usize> = (0..n).collect();
        if cfg.shuffle {
            order.shuffle(&mut rng);
        }
        order
    }
}

fn build_batch(shared: &Shared, order: &[usize], epoch: usize, batch: usize) -> Batch {
    let data = &shared.data;
    let cfg = &shared.config;
    let size = data.image_size();
    let per = size * size;
    let start = batch * cfg.batch_size;
    let end = (start + cfg.batch_size).min(order.len());
    assert!(start < end, "batch {batch} is past the end of the epoch");
    let positions = start..end;
    let n = end - start;
    let mut images = vec![0f32; n * per];
    let norm = shared.normalization;
    let side = shared.boxes.as_ref().map_or(0, |b| b.side);
    let warps: Vec<Option<crate::Warp>> = images
        .par_chunks_mut(per)
        .zip(positions.clone().into_par_iter())
        .map(|(out, pos)| {
            let src = data.image(order[pos]);
            match &cfg.augment {
                Some(aug) => {
                    let mut rng = sample_rng(cfg.seed, epoch as u64, pos as u64);
                    let warp = aug
                        .apply_traced(src, size, &mut rng, out)
                        .expect("buffer sizes are checked by construction");
                    norm.apply_unit_in_place(out);
                    warp
                }
                None => {
                    norm.apply_u8(src, out);
                    None
                }
            }
        })
        .collect();
    let cells = side * side;
    let mut masks = vec![0f32; n * cells];
    let mut mask_weights = Vec::new();
    if let Some(targets) = &shared.boxes {
        for ((mask, warp), pos) in masks
            .chunks_exact_mut(cells)
            .zip(&warps)
            .zip(positions.clone())
        {
            let known = targets.boxes[order[pos]].as_deref();
            if let Some(boxes) = known {
                mask_target(boxes, warp.as_ref(), size, side, mask);
            }
            mask_weights.push(if known.is_some() { 1.0 } else { 0.0 });
        }
    }
    let indices: Vec<usize> = order[positions].to_vec();
    let labels = indices.iter().map(|&i| data.labels()[i]).collect();
    Batch {
        images,
        labels,
        indices,
        n,
        size,
        masks,
        mask_weights,
        mask_side: side,
    }
}

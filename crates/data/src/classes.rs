//! The two classes of a fracture dataset: which class folder is positive, and labels in the
//! order a model expects.
//!
//! A fracture classifier has exactly two classes, and the trainer's positive label is 0.
//! Folders load with their classes sorted by name, so `fractured/` and `not_fractured/` give
//! the positive class label 0 as they are. Other names need the positive one named:
//!
//! - [`ClassFolders::read`] reads the class folders of `<root>/train` before any image is
//!   loaded and settles which is positive (exactly two; `fractured`/`not_fractured` unless a
//!   positive class is named);
//! - [`ClassFolders::positive_first`] relabels a loaded split so that the positive class is
//!   label 0 (when the positive folder sorts second);
//! - [`align_classes`] labels an evaluation split in a model's class order (the model's classes
//!   in either order; a model trained with a named positive class has it first);
//! - [`swap_classes`] reverses the class order of a two-class split.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::folder::{DatasetSplit, CLASS_NAMES};

/// The positive and negative class folder names of a dataset.
///
/// ```
/// use fracture_data::classes::ClassFolders;
/// let root = tempfile::tempdir()?;
/// for class in ["normal", "broken"] {
///     std::fs::create_dir_all(root.path().join("train").join(class))?;
/// }
/// // Names other than fractured/not_fractured need the positive class named ...
/// assert!(ClassFolders::read(root.path(), None).is_err());
/// // ... which must be one of the folders.
/// assert!(ClassFolders::read(root.path(), Some("fracture")).is_err());
/// let classes = ClassFolders::read(root.path(), Some("broken"))?;
/// assert_eq!((classes.positive.as_str(), classes.negative.as_str()), ("broken", "normal"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassFolders {
    /// The positive (fractured) class: the trainer's label 0.
    pub positive: String,
    /// The other class.
    pub negative: String,
}

impl ClassFolders {
    /// The class folders of `<root>/train`, read before any image loads: exactly two, named
    /// `fractured` and `not_fractured` unless `positive` names one of them.
    pub fn read(root: &Path, positive: Option<&str>) -> Result<ClassFolders> {
        let train = root.join("train");
        let entries = std::fs::read_dir(&train).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                DataError::MissingSplit {
                    path: root.to_path_buf(),
                    split: "train".into(),
                }
            } else {
                DataError::Io {
                    path: train.clone(),
                    source,
                }
            }
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        if names.len() != 2 {
            return Err(DataError::ClassCount {
                path: train,
                found: names,
            });
        }
        let positive = match positive {
            Some(p) if names.iter().any(|n| n == p) => p.to_string(),
            Some(p) => {
                return Err(DataError::UnknownPositiveClass {
                    path: train,
                    positive: p.to_string(),
                    found: names,
                })
            }
            None if names == CLASS_NAMES => names[0].clone(),
            None => {
                return Err(DataError::PositiveClassUnnamed {
                    path: root.to_path_buf(),
                    found: names,
                })
            }
        };
        let negative = names
            .into_iter()
            .find(|n| *n != positive)
            .unwrap_or_default();
        Ok(ClassFolders { positive, negative })
    }

    /// `split` relabelled so that the positive class is label 0 (the trainer's positive
    /// label): its classes reversed when the positive folder sorts second, else as it is.
    ///
    /// ```
    /// use fracture_data::{classes::ClassFolders, DatasetSplit, Split};
    /// let classes = vec!["broken".to_string(), "normal".to_string()];
    /// let split = DatasetSplit::new(Split::Train, classes, 1, vec![0, 255], vec![0, 1], vec!["a.png".into(), "b.png".into()])?;
    /// let folders = ClassFolders { positive: "normal".into(), negative: "broken".into() };
    /// let split = folders.positive_first(split)?;
    /// assert_eq!(split.classes(), ["normal", "broken"]);
    /// assert_eq!(split.labels(), [1, 0]);
    /// # Ok::<(), fracture_data::DataError>(())
    /// ```
    pub fn positive_first(&self, split: DatasetSplit) -> Result<DatasetSplit> {
        if split.classes().first() == Some(&self.positive) {
            Ok(split)
        } else {
            swap_classes(split)
        }
    }
}

/// A two-class split with its class order reversed (label 0 becomes 1 and 1 becomes 0).
///
/// ```
/// use fracture_data::{classes::swap_classes, DatasetSplit, Split};
/// let classes = vec!["fractured".to_string(), "not_fractured".to_string()];
/// let split = DatasetSplit::new(Split::Val, classes, 1, vec![7], vec![0], vec!["a.png".into()])?;
/// let swapped = swap_classes(split)?;
/// assert_eq!((swapped.classes(), swapped.labels()), (&["not_fractured".to_string(), "fractured".to_string()][..], &[1][..]));
/// # Ok::<(), fracture_data::DataError>(())
/// ```
pub fn swap_classes(s: DatasetSplit) -> Result<DatasetSplit> {
    let classes: Vec<String> = s.classes().iter().rev().cloned().collect();
    let labels = s.labels().iter().map(|&l| 1 - l.min(1)).collect();
    DatasetSplit::new(
        s.split(),
        classes,
        s.image_size(),
        s.images().to_vec(),
        labels,
        s.paths().to_vec(),
    )
}

/// `data` (loaded from the folder `dir`) labelled in the model's class order: its class
/// folders must be `model_classes`, in either order.
///
/// ```
/// use fracture_data::{classes::align_classes, DatasetSplit, Split};
/// let model = ["normal".to_string(), "broken".to_string()];
/// let sorted = vec!["broken".to_string(), "normal".to_string()];
/// let split = DatasetSplit::new(Split::Test, sorted, 1, vec![7], vec![0], vec!["a.png".into()])?;
/// let aligned = align_classes(split.clone(), &model, "test".as_ref())?;
/// assert_eq!((aligned.classes(), aligned.labels()), (&model[..], &[1][..]));
/// assert!(align_classes(split, &["a".into(), "b".into()], "test".as_ref()).is_err());
/// # Ok::<(), fracture_data::DataError>(())
/// ```
pub fn align_classes(
    data: DatasetSplit,
    model_classes: &[String],
    dir: &Path,
) -> Result<DatasetSplit> {
    if data.classes() == model_classes {
        return Ok(data);
    }
    let reversed: Vec<String> = model_classes.iter().rev().cloned().collect();
    if data.classes() == reversed.as_slice() {
        return swap_classes(data);
    }
    Err(DataError::NotModelClasses {
        path: PathBuf::from(dir),
        found: data.classes().to_vec(),
        expected: model_classes.to_vec(),
    })
}

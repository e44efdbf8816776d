//! Per-subgroup figures of an evaluation (`fracture eval --meta CSV --by COLUMN`): for each
//! value of a metadata column (body region, view, hospital, ...), the number of images,
//! ROC-AUC with its bootstrap interval, and sensitivity and specificity at the model's
//! threshold. A model whose overall figure hides a weak subgroup (hands, oblique views) shows
//! it here.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use fracture_data::csv_table::relative_key;
use fracture_data::CsvTable;
use fracture_metrics::{bootstrap_ci, roc_auc};
use serde::Serialize;

use crate::error::{Error, Result};

/// One value of the metadata column and the figures of its images.
///
/// ```
/// use fracture_nn::subgroups::subgroup_table;
/// let groups = [Some("hand".to_string()), Some("hand".into()), Some("leg".into()), None];
/// let rows = subgroup_table(&groups, &[true, false, true, false], &[0.9, 0.2, 0.4, 0.1], 0.5, 200, 0);
/// assert_eq!(rows[0].value, "hand");
/// assert_eq!((rows[0].n, rows[0].auc), (2, Some(1.0)));
/// assert_eq!(rows[1].sensitivity, Some(0.0)); // the leg's fracture scored 0.4 < 0.5
/// assert_eq!(rows[1].auc, None); // one class only
/// assert_eq!(rows[2].value, "(not listed)");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubgroupRow {
    /// The column's value (`(not listed)` for images the table does not name, `(empty)` for
    /// an empty field).
    pub value: String,
    /// Images.
    pub n: usize,
    /// Positive (fractured) images.
    pub positives: usize,
    /// ROC-AUC, when both classes are present.
    pub auc: Option<f64>,
    /// Its bootstrap 95 % interval `[lower, upper]`.
    pub auc_ci: Option<[f64; 2]>,
    /// Sensitivity at the threshold, when there are positives.
    pub sensitivity: Option<f64>,
    /// Specificity at the threshold, when there are negatives.
    pub specificity: Option<f64>,
}

/// The rows of [`SubgroupRow`], one per distinct group (sorted by value, images the table does
/// not list last): `groups[i]` is image `i`'s value, `labels[i]` whether it is positive,
/// `scores[i]` its P(positive). Intervals from `resamples` bootstrap draws seeded by `seed`.
pub fn subgroup_table(
    groups: &[Option<String>],
    labels: &[bool],
    scores: &[f64],
    threshold: f64,
    resamples: usize,
    seed: u64,
) -> Vec<SubgroupRow> {
    let mut by: BTreeMap<(bool, String), Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        let key = match g {
            Some(v) if v.is_empty() => (false, "(empty)".to_string()),
            Some(v) => (false, v.clone()),
            None => (true, "(not listed)".to_string()),
        };
        by.entry(key).or_default().push(i);
    }
    by.into_iter()
        .map(|((_, value), idx)| {
            let l: Vec<bool> = idx.iter().map(|&i| labels[i]).collect();
            let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
            let pos = l.iter().filter(|&&b| b).count();
            let neg = l.len() - pos;
            let tp = l
                .iter()
                .zip(&s)
                .filter(|(&y, &p)| y && p >= threshold)
                .count();
            let tn = l
                .iter()
                .zip(&s)
                .filter(|(&y, &p)| !y && p < threshold)
                .count();
            let auc = roc_auc(&l, &s).ok();
            let auc_ci = auc.and_then(|_| {
                bootstrap_ci(&l, &s, threshold, resamples, seed)
                    .ok()
                    .map(|ci| [ci.auc.lower, ci.auc.upper])
            });
            SubgroupRow {
                value,
                n: l.len(),
                positives: pos,
                auc,
                auc_ci,
                sensitivity: (pos > 0).then(|| tp as f64 / pos as f64),
                specificity: (neg > 0).then(|| tn as f64 / neg as f64),
            }
        })
        .collect()
}

/// A metadata table: the value of one column per image path (relative to the dataset root).
///
/// ```
/// use fracture_nn::subgroups::MetaColumn;
/// let csv = "path,region\ntest/fractured/a.png,hand\n";
/// std::fs::write(std::env::temp_dir().join("meta-doc.csv"), csv).unwrap();
/// let m = MetaColumn::load(&std::env::temp_dir().join("meta-doc.csv"), "region")?;
/// let got = m.lookup(&["/d/test/fractured/a.png".into(), "/d/test/x.png".into()], "/d".as_ref())?;
/// assert_eq!(got, [Some("hand".to_string()), None]);
/// # Ok::<(), fracture_nn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MetaColumn {
    origin: PathBuf,
    column: String,
    values: HashMap<String, String>,
}

impl MetaColumn {
    /// Reads column `column` of the CSV at `path`, keyed by its `path` column.
    pub fn load(path: &Path, column: &str) -> Result<MetaColumn> {
        let table = CsvTable::load(path)?;
        let pc = table.column("path")?;
        let vc = table.column(column)?;
        let values = (0..table.rows().len())
            .map(|r| {
                (
                    table.field(r, pc).replace('\\', "/"),
                    table.field(r, vc).to_string(),
                )
            })
            .collect();
        Ok(MetaColumn {
            origin: path.to_path_buf(),
            column: column.to_string(),
            values,
        })
    }

    /// The value of each image (`None` if not listed); an error if the table names none of
    /// them (its paths must be relative to `root`, as `test/fractured/x.png`).
    pub fn lookup(&self, paths: &[PathBuf], root: &Path) -> Result<Vec<Option<String>>> {
        let got: Vec<Option<String>> = paths
            .iter()
            .map(|p| relative_key(p, root).and_then(|k| self.values.get(&k).cloned()))
            .collect();
        if !paths.is_empty() && got.iter().all(Option::is_none) {
            return Err(Error::Config(format!(
                "{}: none of its paths matches an image of the evaluated folder (paths must be relative to the dataset root, e.g. test/fractured/x.png)",
                self.origin.display()
            )));
        }
        Ok(got)
    }

    /// Reads column `column` of `csv` and looks up every image of `paths` (under `root`) in
    /// one step, as `eval --meta` and `validate --meta` do.
    pub fn groups_of(
        csv: &Path,
        column: &str,
        paths: &[PathBuf],
        root: &Path,
    ) -> Result<Vec<Option<String>>> {
        MetaColumn::load(csv, column)?.lookup(paths, root)
    }

    /// The column's name.
    pub fn column(&self) -> &str {
        &self.column
    }
}

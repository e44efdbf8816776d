//! Assigning whole copy groups to `train`, `val` and `test`, stratified by class.
//!
//! Groups come from [`copy_groups`] over the scan's pairs. A group whose members sit in
//! different class folders is left out (its picture has no single label). For each class, the
//! groups are shuffled with a ChaCha8 stream of the seed, stably sorted by size (largest
//! first, so that the many single files come last and even out the counts), and each goes to
//! the split that still lacks the most files of that class against its target
//! (`round(n * val)`, `round(n * test)`, the rest for train). Every class therefore gets the
//! same proportions, which keeps each split's class mix within a file or so of the whole.

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::groups::copy_groups;
use super::scan::Scan;
use crate::error::{DataError, Result};
use crate::folder::Split;
use crate::rng::{derive_rng, DOMAIN_SPLIT};

/// Fractions of each class that go to `val` and `test` (the rest to `train`).
///
/// ```
/// use fracture_data::audit::SplitFractions;
/// let f = SplitFractions { val: 0.15, test: 0.15 };
/// f.validate().unwrap();
/// assert!(SplitFractions { val: 0.6, test: 0.5 }.validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitFractions {
    /// Fraction for `val`, in [0, 1).
    pub val: f64,
    /// Fraction for `test`, in [0, 1).
    pub test: f64,
}

impl SplitFractions {
    /// Both in [0, 1) and summing to less than 1.
    pub fn validate(&self) -> Result<()> {
        let ok = |x: f64| (0.0..1.0).contains(&x);
        if !ok(self.val) || !ok(self.test) || self.val + self.test >= 1.0 {
            return Err(DataError::Config(format!(
                "split fractions val {} and test {} must each be in [0, 1) and leave something \
                 for train (val + test < 1)",
                self.val, self.test
            )));
        }
        Ok(())
    }
}

/// Where one file goes.
///
/// ```
/// use fracture_data::{audit::PlanRow, Split};
/// let r = PlanRow { file: 0, group: 0, split: Some(Split::Val), excluded: None };
/// assert_eq!(r.split_name(), "val");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRow {
    /// Index into the scan's files.
    pub file: usize,
    /// Its copy group.
    pub group: usize,
    /// The split it goes to, or `None` if it is left out.
    pub split: Option<Split>,
    /// Why it is left out.
    pub excluded: Option<String>,
}

impl PlanRow {
    /// `train`, `val`, `test` or `excluded`.
    pub fn split_name(&self) -> &'static str {
        self.split.map_or("excluded", Split::dir_name)
    }
}

/// A grouped, stratified split of a scan's files.
///
/// ```
/// use fracture_data::audit::{plan_split, AuditConfig, AuditFile, Scan, SplitFractions};
/// let dir = tempfile::tempdir().unwrap();
/// let mut files = Vec::new();
/// for i in 0..20u32 {
///     let p = dir.path().join(format!("{i}.png"));
///     image::GrayImage::from_fn(16, 16, |x, y| image::Luma([((x * (i + 3) + y * y * (i + 1)) % 256) as u8]))
///         .save(&p).unwrap();
///     files.push(AuditFile { path: p, split: "all".into(), class: "a".into() });
/// }
/// let scan = Scan::run(dir.path(), files, &AuditConfig::default(), &|| {}).unwrap();
/// let plan = plan_split(&scan, SplitFractions { val: 0.25, test: 0.25 }, 7).unwrap();
/// assert_eq!(plan.count(fracture_data::Split::Test), 5);
/// assert_eq!(plan, plan_split(&scan, SplitFractions { val: 0.25, test: 0.25 }, 7).unwrap());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitPlan {
    /// One row per scanned file, in the scan's order.
    pub rows: Vec<PlanRow>,
    /// Number of copy groups (a file without copies is a group of one).
    pub groups: usize,
    /// Number of groups left out because their members carry different labels.
    pub conflicting_groups: usize,
}

impl SplitPlan {
    /// Files assigned to `split`.
    pub fn count(&self, split: Split) -> usize {
        self.rows.iter().filter(|r| r.split == Some(split)).count()
    }

    /// Files left out.
    pub fn excluded(&self) -> usize {
        self.rows.iter().filter(|r| r.split.is_none()).count()
    }
}

/// Splits the scanned files by copy group; the same scan, fractions and seed give the same
/// plan.
pub fn plan_split(scan: &Scan, fractions: SplitFractions, seed: u64) -> Result<SplitPlan> {
    fractions.validate()?;
    let group_of = copy_groups(scan.files.len(), &scan.pairs);
    let n_groups = group_of.iter().max().map_or(0, |&g| g + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); n_groups];
    for (f, &g) in group_of.iter().enumerate() {
        members[g].push(f);
    }
    let class_of = |f: usize| scan.files[f].file.class.as_str();
    let mut split_of_group: Vec<Option<Split>> = vec![None; n_groups];
    let mut conflicting = vec![false; n_groups];
    let mut by_class: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (g, files) in members.iter().enumerate() {
        let first = class_of(files[0]);
        if files.iter().any(|&f| class_of(f) != first) {
            conflicting[g] = true;
        } else {
            by_class.entry(first).or_default().push(g);
        }
    }
    for (class_index, groups) in by_class.values_mut().enumerate() {
        let mut rng = derive_rng(seed, class_index as u64, 0, DOMAIN_SPLIT);
        groups.shuffle(&mut rng);
        groups.sort_by_key(|&g| std::cmp::Reverse(members[g].len()));
        let n: usize = groups.iter().map(|&g| members[g].len()).sum();
        let val = (n as f64 * fractions.val).round() as usize;
        let test = ((n as f64 * fractions.test).round() as usize).min(n - val);
        let targets = [
            (Split::Train, n - val - test),
            (Split::Val, val),
            (Split::Test, test),
        ];
        let mut filled = [0usize; 3];
        for &g in groups.iter() {
            // The split furthest below its target; ties go to the first (train, val, test).
            let (k, _) = targets
                .iter()
                .enumerate()
                .map(|(k, (_, t))| (k, *t as i64 - filled[k] as i64))
                .fold((0, i64::MIN), |best, c| if c.1 > best.1 { c } else { best });
            filled[k] += members[g].len();
            split_of_group[g] = Some(targets[k].0);
        }
    }
    let rows = group_of
        .iter()
        .enumerate()
        .map(|(f, &g)| PlanRow {
            file: f,
            group: g,
            split: split_of_group[g],
            excluded: conflicting[g].then(|| {
                let mut classes: Vec<&str> = members[g].iter().map(|&m| class_of(m)).collect();
                classes.sort();
                classes.dedup();
                format!("copies labelled {}", classes.join(" and "))
            }),
        })
        .collect();
    Ok(SplitPlan {
        rows,
        groups: n_groups,
        conflicting_groups: conflicting.iter().filter(|&&c| c).count(),
    })
}

//! The audit report: counts per ordered pair of splits, copy groups, label conflicts and a
//! verdict, printable as text and serialisable as JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::groups::copy_groups;
use super::scan::Scan;
use crate::folder::SkippedFile;

/// How many files of `split` have an exact or a near copy in `in` (a near copy includes an
/// exact one, so `near_files >= exact_files`; when `split == in`, the copy is another file of
/// the same split).
///
/// ```
/// use fracture_data::audit::PairCount;
/// let p = PairCount { split: "test".into(), in_split: "train".into(), exact_files: 2, near_files: 5 };
/// let json = serde_json::to_string(&p).unwrap();
/// assert_eq!(json, r#"{"split":"test","in":"train","exact_files":2,"near_files":5}"#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairCount {
    /// The split whose files are counted.
    pub split: String,
    /// The split searched for their copies.
    #[serde(rename = "in")]
    pub in_split: String,
    /// Files of `split` with an identical-pixel copy in `in`.
    pub exact_files: usize,
    /// Files of `split` with a near (or exact) copy in `in`.
    pub near_files: usize,
}

/// Files per split and per class.
///
/// ```
/// use fracture_data::audit::SplitCount;
/// let s = SplitCount { split: "val".into(), files: 3, classes: [("a".to_string(), 3)].into() };
/// assert_eq!(s.classes["a"], 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitCount {
    /// Split name.
    pub split: String,
    /// Decoded files in it.
    pub files: usize,
    /// Decoded files per class folder.
    pub classes: BTreeMap<String, usize>,
}

/// One file of a copy group.
///
/// ```
/// use fracture_data::audit::GroupMember;
/// let m = GroupMember { path: "train/a/1.png".into(), split: "train".into(), class: "a".into(), hash: "00ff".into() };
/// assert_eq!(m.class, "a");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// Path relative to the audited root.
    pub path: String,
    /// Its split.
    pub split: String,
    /// Its class folder.
    pub class: String,
    /// Its pixel hash (16 hex digits): members with equal hashes are exact copies.
    pub hash: String,
}

/// Files joined by exact or near copies (two or more).
///
/// ```
/// use fracture_data::audit::CopyGroup;
/// let g = CopyGroup { id: 0, exact: true, labels_conflict: false, splits: vec!["train".into()], files: vec![] };
/// assert!(g.exact);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyGroup {
    /// Group number (in the order of the group's first file).
    pub id: usize,
    /// True if all members have identical decoded pixels.
    pub exact: bool,
    /// True if the members sit in more than one class folder.
    pub labels_conflict: bool,
    /// The splits its members sit in, sorted.
    pub splits: Vec<String>,
    /// The members.
    pub files: Vec<GroupMember>,
}

/// A file whose copies carry another label.
///
/// ```
/// use fracture_data::audit::LabelConflict;
/// let c = LabelConflict { path: "train/a/1.png".into(), split: "train".into(), class: "a".into(), group: 3, copies_labelled: vec!["b".into()] };
/// assert_eq!(c.copies_labelled, ["b"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelConflict {
    /// Path relative to the audited root.
    pub path: String,
    /// Its split.
    pub split: String,
    /// Its class folder.
    pub class: String,
    /// Its copy group.
    pub group: usize,
    /// The other class folders its group's members sit in.
    pub copies_labelled: Vec<String>,
}

/// Everything the audit found. See the [module docs](super) for an example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// The audited folder, as given.
    pub root: String,
    /// Decoded files.
    pub files: usize,
    /// Files per split and class.
    pub splits: Vec<SplitCount>,
    /// pHash distance threshold (bits of 63).
    pub max_hamming: u32,
    /// Thumbnail correlation threshold.
    pub min_correlation: f32,
    /// Pairs of files with identical decoded pixels.
    pub exact_pairs: usize,
    /// Pairs of files that are near copies but not exact ones.
    pub near_pairs: usize,
    /// One entry per ordered pair of splits (including a split with itself).
    pub pairs: Vec<PairCount>,
    /// Groups of two or more files joined by copies.
    pub groups: Vec<CopyGroup>,
    /// Files whose copies carry another label.
    pub label_conflicts: Vec<LabelConflict>,
    /// Files that could not be decoded (left out of the comparison).
    pub unreadable: Vec<SkippedFile>,
    /// True if no file has a copy in another split and no copies disagree on the label.
    pub clean: bool,
    /// The conclusions, one per line, the most important first.
    pub verdict: Vec<String>,
}

impl AuditReport {
    /// Builds the report of a scan.
    pub fn new(scan: &Scan) -> AuditReport {
        let split_names: Vec<String> = {
            let mut seen = Vec::<String>::new();
            for f in &scan.files {
                if !seen.contains(&f.file.split) {
                    seen.push(f.file.split.clone());
                }
            }
            seen
        };
        let split_of: Vec<usize> = scan
            .files
            .iter()
            .map(|f| {
                split_names
                    .iter()
                    .position(|s| *s == f.file.split)
                    .expect("listed")
            })
            .collect();
        let k = split_names.len();
        // has[f][s] = (exact copy in s, near copy in s)
        let mut has = vec![vec![(false, false); k]; scan.files.len()];
        for p in &scan.pairs {
            for (x, y) in [(p.a, p.b), (p.b, p.a)] {
                let cell = &mut has[x][split_of[y]];
                cell.0 |= p.exact;
                cell.1 = true;
            }
        }
        let mut pairs = Vec::new();
        for (si, s) in split_names.iter().enumerate() {
            for (ti, t) in split_names.iter().enumerate() {
                let members = (0..scan.files.len()).filter(|&f| split_of[f] == si);
                let (mut exact, mut near) = (0, 0);
                for f in members {
                    exact += has[f][ti].0 as usize;
                    near += has[f][ti].1 as usize;
                }
                pairs.push(PairCount {
                    split: s.clone(),
                    in_split: t.clone(),
                    exact_files: exact,
                    near_files: near,
                });
            }
        }
        let splits = split_names
            .iter()
            .enumerate()
            .map(|(si, s)| {
                let mut classes = BTreeMap::new();
                for (f, file) in scan.files.iter().enumerate() {
                    if split_of[f] == si {
                        *classes.entry(file.file.class.clone()).or_insert(0) += 1;
                    }
                }
                SplitCount {
                    split: s.clone(),
                    files: classes.values().sum(),
                    classes,
                }
            })
            .collect();
        let (groups, label_conflicts) = groups_and_conflicts(scan);
        let exact_pairs = scan.pairs.iter().filter(|p| p.exact).count();
        let mut report = AuditReport {
            root: scan.root.to_string_lossy().into_owned(),
            files: scan.files.len(),
            splits,
            max_hamming: scan.config.max_hamming,
            min_correlation: scan.config.min_correlation,
            exact_pairs,
            near_pairs: scan.pairs.len() - exact_pairs,
            pairs,
            groups,
            label_conflicts,
            unreadable: scan.unreadable.clone(),
            clean: false,
            verdict: Vec::new(),
        };
        report.verdict = report.conclude();
        report.clean = report.label_conflicts.is_empty()
            && report
                .pairs
                .iter()
                .all(|p| p.split == p.in_split || p.near_files == 0);
        report
    }

    /// The count for files of `split` with copies in `in_split`, if both splits are present.
    pub fn pair(&self, split: &str, in_split: &str) -> Option<&PairCount> {
        self.pairs
            .iter()
            .find(|p| p.split == split && p.in_split == in_split)
    }

    fn files_in(&self, split: &str) -> usize {
        self.splits
            .iter()
            .find(|s| s.split == split)
            .map_or(0, |s| s.files)
    }

    fn conclude(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let names: Vec<&str> = self.splits.iter().map(|s| s.split.as_str()).collect();
        // Leaks into the evaluation splits first: from train, then between val and test.
        let mut cross = Vec::new();
        for (i, &s) in names.iter().enumerate() {
            for &t in &names[..i] {
                cross.push((s, t));
            }
        }
        for (s, t) in cross {
            let p = self.pair(s, t).expect("all ordered pairs are listed");
            let n = self.files_in(s);
            if p.near_files == 0 {
                lines.push(format!("{s}: no copies in {t}"));
                continue;
            }
            let pct = 100.0 * p.near_files as f64 / n.max(1) as f64;
            let consequence = if t == "train" {
                "scores on it will be optimistic".to_string()
            } else {
                format!("tuning on {t} is partly tuning on {s}")
            };
            lines.push(format!(
                "{s} is {pct:.1} % leaked from {t} ({} of {n} files have a copy there, {} of them \
                 exact): {consequence}",
                p.near_files, p.exact_files
            ));
        }
        lines.sort_by_key(|l| !l.contains("leaked"));
        for &s in &names {
            let p = self.pair(s, s).expect("listed");
            if p.near_files > 0 {
                lines.push(format!(
                    "{s} holds {} files with a copy inside {s} ({} exact): repeated pictures \
                     weigh more",
                    p.near_files, p.exact_files
                ));
            }
        }
        if !self.label_conflicts.is_empty() {
            lines.push(format!(
                "{} files have copies labelled differently: drop or relabel them",
                self.label_conflicts.len()
            ));
        }
        if !self.unreadable.is_empty() {
            lines.push(format!(
                "{} files could not be decoded and were not compared",
                self.unreadable.len()
            ));
        }
        let leaks = lines.iter().any(|l| l.contains("leaked"));
        if !leaks && self.label_conflicts.is_empty() {
            lines.insert(
                0,
                if names.len() > 1 {
                    "clean: no file has a copy in another split".to_string()
                } else {
                    "one split only: nothing can leak between splits".to_string()
                },
            );
        }
        lines
    }
}

fn groups_and_conflicts(scan: &Scan) -> (Vec<CopyGroup>, Vec<LabelConflict>) {
    let group_of = copy_groups(scan.files.len(), &scan.pairs);
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (f, &g) in group_of.iter().enumerate() {
        members.entry(g).or_default().push(f);
    }
    let mut groups = Vec::new();
    let mut conflicts = Vec::new();
    for (id, files) in members.into_iter().filter(|(_, m)| m.len() > 1) {
        let classes: BTreeSet<&str> = files
            .iter()
            .map(|&f| scan.files[f].file.class.as_str())
            .collect();
        let splits: BTreeSet<String> = files
            .iter()
            .map(|&f| scan.files[f].file.split.clone())
            .collect();
        let first = &scan.files[files[0]];
        let exact = files.iter().all(|&f| {
            let o = &scan.files[f];
            (o.pixel_hash, o.width, o.height) == (first.pixel_hash, first.width, first.height)
        });
        let member = |f: usize| {
            let s = &scan.files[f];
            GroupMember {
                path: scan.relative(&s.file.path),
                split: s.file.split.clone(),
                class: s.file.class.clone(),
                hash: s.hash_hex(),
            }
        };
        if classes.len() > 1 {
            for &f in &files {
                let own = scan.files[f].file.class.as_str();
                let m = member(f);
                conflicts.push(LabelConflict {
                    path: m.path,
                    split: m.split,
                    class: m.class,
                    group: id,
                    copies_labelled: classes
                        .iter()
                        .filter(|&&c| c != own)
                        .map(|c| c.to_string())
                        .collect(),
                });
            }
        }
        groups.push(CopyGroup {
            id,
            exact,
            labels_conflict: classes.len() > 1,
            splits: splits.into_iter().collect(),
            files: files.into_iter().map(member).collect(),
        });
    }
    (groups, conflicts)
}

/// How many groups the text form lists before it says "... and N more" (JSON lists all).
const TEXT_GROUPS: usize = 20;

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "audited {} files in {} ({} unreadable); near copy = pHash within {} bits under a \
             flip/rotation and thumbnail correlation >= {}",
            self.files,
            self.root,
            self.unreadable.len(),
            self.max_hamming,
            self.min_correlation
        )?;
        for s in &self.splits {
            let classes: Vec<String> = s.classes.iter().map(|(c, n)| format!("{c} {n}")).collect();
            writeln!(
                f,
                "  {:<6} {:>6} files ({})",
                s.split,
                s.files,
                classes.join(", ")
            )?;
        }
        writeln!(
            f,
            "\n{} exact pairs, {} near (not exact) pairs, {} copy groups\n",
            self.exact_pairs,
            self.near_pairs,
            self.groups.len()
        )?;
        writeln!(
            f,
            "files of SPLIT with a copy IN    exact    near (incl. exact)"
        )?;
        for p in &self.pairs {
            writeln!(
                f,
                "  {:<6} in {:<6} {:>12} {:>8}",
                p.split, p.in_split, p.exact_files, p.near_files
            )?;
        }
        writeln!(f)?;
        for g in self.groups.iter().take(TEXT_GROUPS) {
            let kind = if g.exact { "exact" } else { "near" };
            let conflict = if g.labels_conflict {
                ", LABELS DIFFER"
            } else {
                ""
            };
            writeln!(f, "group {} ({kind}{conflict}):", g.id)?;
            for m in &g.files {
                writeln!(f, "    {}  [{}]", m.path, m.hash)?;
            }
        }
        if self.groups.len() > TEXT_GROUPS {
            writeln!(
                f,
                "... and {} more groups (--json lists all)",
                self.groups.len() - TEXT_GROUPS
            )?;
        }
        for c in &self.label_conflicts {
            writeln!(
                f,
                "label conflict: {} is {:?}, its copies are labelled {:?}",
                c.path, c.class, c.copies_labelled
            )?;
        }
        for u in &self.unreadable {
            writeln!(f, "unreadable: {u}")?;
        }
        writeln!(f)?;
        for line in &self.verdict {
            writeln!(f, "verdict: {line}")?;
        }
        Ok(())
    }
}

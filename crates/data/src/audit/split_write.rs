//! Writing a [`SplitPlan`] to disk: `<out>/{train,val,test}/<class>/<file>` as symbolic links
//! to the sources (default) or as copies, and `<out>/manifest.csv`.
//!
//! The manifest has one row per source file: `file` (the written path relative to `<out>`,
//! empty when left out), `source` (relative to the source folder), `group`, `split` (`train`,
//! `val`, `test`, `excluded` or `unreadable`), `label` (class folder) and `hash` (the decoded
//! pixels' hash, empty for unreadable files). Paths are relative, so the same seed gives a
//! byte-identical manifest wherever the folders are.
//!
//! A non-empty `<out>` is refused unless `overwrite` is set, and even then only when it holds
//! nothing but a previous split (`train`, `val`, `test`, `manifest.csv`), which is removed
//! first: the writer never deletes anything else.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::scan::Scan;
use super::split_assign::SplitPlan;
use crate::error::{DataError, Result};
use crate::folder::Split;

/// The manifest's file name inside the output folder.
pub const MANIFEST_NAME: &str = "manifest.csv";

/// How the split's files are written.
///
/// ```
/// use fracture_data::audit::LinkMode;
/// assert_eq!(LinkMode::default(), LinkMode::Symlink);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkMode {
    /// Symbolic links to the absolute source paths (copies where links are not available).
    #[default]
    Symlink,
    /// Byte copies of the sources.
    Copy,
}

/// Writes the plan under `out` and returns the manifest's path.
///
/// ```
/// use fracture_data::audit::{plan_split, write_split, AuditConfig, LinkMode, Scan, SplitFractions};
/// let from = tempfile::tempdir().unwrap();
/// for (class, v) in [("a", 10u8), ("b", 200)] {
///     std::fs::create_dir(from.path().join(class)).unwrap();
///     image::GrayImage::from_pixel(8, 8, image::Luma([v])).save(from.path().join(class).join("1.png")).unwrap();
/// }
/// let files = fracture_data::audit::list_class_folder(from.path(), "all").unwrap();
/// let scan = Scan::run(from.path(), files, &AuditConfig::default(), &|| {}).unwrap();
/// let plan = plan_split(&scan, SplitFractions { val: 0.0, test: 0.0 }, 1).unwrap();
/// let out = tempfile::tempdir().unwrap();
/// let manifest = write_split(&scan, &plan, out.path(), LinkMode::Copy, false).unwrap();
/// assert!(out.path().join("train/b/1.png").is_file());
/// let text = std::fs::read_to_string(manifest).unwrap();
/// assert!(text.starts_with("file,source,group,split,label,hash\ntrain/a/1.png,a/1.png,g00000,train,a,"));
/// // A second write into the now non-empty folder is refused without `overwrite`.
/// assert!(write_split(&scan, &plan, out.path(), LinkMode::Copy, false).is_err());
/// write_split(&scan, &plan, out.path(), LinkMode::Copy, true).unwrap();
/// ```
pub fn write_split(
    scan: &Scan,
    plan: &SplitPlan,
    out: &Path,
    mode: LinkMode,
    overwrite: bool,
) -> Result<PathBuf> {
    prepare_out(out, overwrite)?;
    let write_err = |path: &Path, e: std::io::Error| DataError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut csv = String::from("file,source,group,split,label,hash\n");
    for row in &plan.rows {
        let f = &scan.files[row.file];
        let source = scan.relative(&f.file.path);
        let mut written = String::new();
        if let Some(split) = row.split {
            let name = f.file.path.file_name().ok_or_else(|| {
                DataError::Config(format!("{}: no file name", f.file.path.display()))
            })?;
            let rel = PathBuf::from(split.dir_name())
                .join(&f.file.class)
                .join(name);
            let dest = out.join(&rel);
            let dir = dest.parent().expect("has a class folder");
            std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
            place(&f.file.path, &dest, mode).map_err(|e| write_err(&dest, e))?;
            written = rel.to_string_lossy().into_owned();
        }
        let fields = [
            written,
            source,
            format!("g{:05}", row.group),
            row.split_name().to_string(),
            f.file.class.clone(),
            f.hash_hex(),
        ];
        push_csv_row(&mut csv, &fields);
    }
    for bad in &scan.unreadable {
        let class = bad
            .path
            .parent()
            .and_then(Path::file_name)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        let fields = [
            String::new(),
            scan.relative(&bad.path),
            String::new(),
            "unreadable".into(),
            class,
            String::new(),
        ];
        push_csv_row(&mut csv, &fields);
    }
    let manifest = out.join(MANIFEST_NAME);
    std::fs::write(&manifest, csv).map_err(|e| write_err(&manifest, e))?;
    Ok(manifest)
}

fn push_csv_row(csv: &mut String, fields: &[String]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            csv.push(',');
        }
        if field.contains([',', '"', '\n', '\r']) {
            let _ = write!(csv, "\"{}\"", field.replace('"', "\"\""));
        } else {
            csv.push_str(field);
        }
    }
    csv.push('\n');
}

fn place(source: &Path, dest: &Path, mode: LinkMode) -> std::io::Result<()> {
    match mode {
        LinkMode::Copy => std::fs::copy(source, dest).map(|_| ()),
        #[cfg(unix)]
        LinkMode::Symlink => std::os::unix::fs::symlink(std::fs::canonicalize(source)?, dest),
        #[cfg(not(unix))]
        LinkMode::Symlink => std::fs::copy(source, dest).map(|_| ()),
    }
}

/// Creates `out`, or empties a previous split in it when `overwrite` is set.
fn prepare_out(out: &Path, overwrite: bool) -> Result<()> {
    let io = |e| DataError::Io {
        path: out.to_path_buf(),
        source: e,
    };
    if !out.exists() {
        return std::fs::create_dir_all(out).map_err(|e| DataError::Write {
            path: out.to_path_buf(),
            reason: e.to_string(),
        });
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(io)?;
    if entries.is_empty() {
        return Ok(());
    }
    if !overwrite {
        return Err(DataError::Write {
            path: out.to_path_buf(),
            reason: format!(
                "the output folder is not empty ({} entries); choose a new folder or allow \
                 replacing a previous split (--overwrite)",
                entries.len()
            ),
        });
    }
    let ours = |p: &PathBuf| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        let is_split = Split::ALL
            .iter()
            .any(|s| name.as_deref() == Some(s.dir_name()));
        (is_split && p.is_dir()) || (name.as_deref() == Some(MANIFEST_NAME) && p.is_file())
    };
    if let Some(other) = entries.iter().find(|p| !ours(p)) {
        return Err(DataError::Write {
            path: out.to_path_buf(),
            reason: format!(
                "holds {}, which a previous split did not write: not replacing it",
                other.display()
            ),
        });
    }
    for p in entries {
        let removed = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        removed.map_err(|e| DataError::Write {
            path: p.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

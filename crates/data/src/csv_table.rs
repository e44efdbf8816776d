//! A small CSV reader for the per-image tables the tools take (finding boxes, metadata such as
//! body region or view), keyed by the image's path relative to the dataset root.
//!
//! Commas inside double quotes are kept, a doubled quote inside quotes is a quote; the first
//! line is the header. Paths use `/` (a `\` is read as `/`).

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// A CSV file with a header row.
///
/// ```
/// use fracture_data::CsvTable;
/// let t = CsvTable::parse("path,region\n\"a,1.png\",hand\nb.png,leg\n", "m.csv".as_ref())?;
/// assert_eq!(t.column("region")?, 1);
/// assert_eq!(t.rows()[0][0], "a,1.png");
/// assert!(t.column("view").is_err());
/// # Ok::<(), fracture_data::DataError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CsvTable {
    origin: PathBuf,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl CsvTable {
    /// Reads a CSV file.
    pub fn load(path: &Path) -> Result<CsvTable> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        CsvTable::parse(&text, path)
    }

    /// Parses CSV text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<CsvTable> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else {
            return Err(DataError::Config(format!(
                "{}: empty file (expected a header row)",
                origin.display()
            )));
        };
        let header: Vec<String> = split_line(header.trim_start_matches('\u{feff}'))
            .into_iter()
            .map(|c| c.trim().to_string())
            .collect();
        let rows = lines.map(split_line).collect();
        Ok(CsvTable {
            origin: origin.to_path_buf(),
            header,
            rows,
        })
    }

    /// The column called `name`, or an error naming the file and the columns it has.
    pub fn column(&self, name: &str) -> Result<usize> {
        self.header.iter().position(|c| c == name).ok_or_else(|| {
            DataError::Config(format!(
                "{}: no column `{name}` (columns: {})",
                self.origin.display(),
                self.header.join(", ")
            ))
        })
    }

    /// The data rows (the header excluded), each as its fields.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// The file it was read from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Field `col` of row `row` (0-based data row), trimmed; empty when the row is short.
    pub fn field(&self, row: usize, col: usize) -> &str {
        self.rows[row].get(col).map_or("", |s| s.trim())
    }
}

/// `path` relative to `root`, `/`-separated (the key of these tables); `None` if it is not
/// under `root`.
///
/// ```
/// use fracture_data::csv_table::relative_key;
/// assert_eq!(relative_key("/d/train/x/a.png".as_ref(), "/d".as_ref()).as_deref(), Some("train/x/a.png"));
/// assert_eq!(relative_key("/e/a.png".as_ref(), "/d".as_ref()), None);
/// ```
pub fn relative_key(path: &Path, root: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Some(parts.join("/"))
}

/// Splits one CSV line on commas outside double quotes (a quote inside quotes is doubled).
fn split_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

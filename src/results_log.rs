//! The results file of an archive run (`fracture predict --out results.jsonl`): one JSON object
//! per line, appended batch by batch, that a killed run resumes without losing or repeating an
//! image.
//!
//! - Each line is a [`PredictionRecord`](crate::prediction_record::PredictionRecord), the
//!   object `predict --json` prints: `{"path", "p_fractured", "label", ...}`
//!   for a scored image, `{"path", "error"}` for a file that could not be classified. The
//!   `path` field is the key: [`ResultsLog::recorded`] says whether a path already has a line.
//! - [`ResultsLog::append`] writes a whole batch with one `write` and then `fsync`s the data,
//!   so after a crash the file holds every batch appended before it; a SIGKILL or power cut
//!   during a write can leave at most the last line cut short. [`ResultsLog::open`] finds such a
//!   torn last line (no final newline) and truncates it, so that image is scored again.
//! - A complete line that is not a JSON object with a string `path` is an error naming the file
//!   and the line: the file is not a results file (or was edited), and appending to it would
//!   mix runs.
//! - The file is locked ([`std::fs::File::try_lock`]) while open: a second run on the same file
//!   fails at once. The lock goes with the process, so a killed run leaves no stale lock.
//! - Memory: 16 bytes (a 128-bit hash of the path) and a flag per line already in the file, not
//!   the lines themselves.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// What [`ResultsLog::open`] does with a file that already holds lines.
///
/// ```
/// use fracture_nn::results_log::Existing;
/// assert_ne!(Existing::Refuse, Existing::Resume { retry_failed: false });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Fail, naming the file and how many lines it holds (nothing is ever silently replaced).
    Refuse,
    /// Start the file afresh.
    Overwrite,
    /// Keep its lines and append after them; with `retry_failed` the error lines are removed
    /// first (by writing the rest to a temporary file renamed over it), so those files are tried
    /// again and still end with exactly one line each.
    Resume {
        /// Remove the `{"path", "error"}` lines so that those files are tried again.
        retry_failed: bool,
    },
}

/// Counts of result lines.
///
/// ```
/// let t = fracture_nn::results_log::Tally { scored: 3, failed: 1, positive: 2 };
/// assert_eq!(t.lines(), 4);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Images with a probability.
    pub scored: usize,
    /// Files with an error line.
    pub failed: usize,
    /// Scored images labelled with the positive (fractured) class.
    pub positive: usize,
}

impl Tally {
    /// All lines: scored and failed.
    pub fn lines(&self) -> usize {
        self.scored + self.failed
    }
}

/// What the file already says about a path.
///
/// ```
/// use fracture_nn::results_log::Recorded;
/// assert_ne!(Recorded::Scored, Recorded::Failed);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A line with a probability.
    Scored,
    /// An error line.
    Failed,
}

/// The paths a results file held when it was opened (see [`ResultsLog::recorded_paths`]).
///
/// ```
/// use fracture_nn::results_log::{Existing, ResultsLog};
/// let dir = tempfile::tempdir()?;
/// let log = ResultsLog::open(&dir.path().join("r.jsonl"), Existing::Refuse, "fractured")?;
/// let done = log.recorded_paths();
/// std::thread::spawn(move || assert_eq!(done.get("a.png"), None)).join().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct RecordedPaths(Arc<HashMap<u128, Recorded>>);

impl RecordedPaths {
    /// What the file held for `path_key` (the `path` field of a line).
    pub fn get(&self, path_key: &str) -> Option<Recorded> {
        self.0.get(&key(path_key)).copied()
    }

    /// Paths held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if the file held no line.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An open, locked results file (see the module docs).
///
/// ```
/// use fracture_nn::results_log::{Existing, Recorded, ResultsLog};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("results.jsonl");
/// let mut log = ResultsLog::open(&path, Existing::Refuse, "fractured")?;
/// log.append(&[r#"{"path":"a.png","p_fractured":0.9,"label":"fractured"}"#.to_string()])?;
/// drop(log);
/// // A killed run's torn last line ...
/// use std::io::Write;
/// std::fs::OpenOptions::new().append(true).open(&path)?.write_all(br#"{"path":"b.pn"#)?;
/// assert!(ResultsLog::open(&path, Existing::Refuse, "fractured").is_err()); // never clobbered
/// let log = ResultsLog::open(&path, Existing::Resume { retry_failed: false }, "fractured")?;
/// // ... is cut off, and only a.png counts as done.
/// assert_eq!(log.torn_bytes(), Some(13));
/// assert_eq!(log.recorded("a.png"), Some(Recorded::Scored));
/// assert_eq!(log.recorded("b.png"), None);
/// assert_eq!((log.tally().scored, log.tally().positive), (1, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ResultsLog {
    path: PathBuf,
    file: File,
    done: Arc<HashMap<u128, Recorded>>,
    tally: Tally,
    torn_bytes: Option<u64>,
    retried: usize,
}

impl ResultsLog {
    /// Opens (creating it if needed) and locks the results file at `path`. A file holding lines
    /// is handled as `existing` says; `positive_label` is the class name counted in
    /// [`Tally::positive`].
    pub fn open(path: &Path, existing: Existing, positive_label: &str) -> Result<Self> {
        let io = |what: &str| {
            let what = what.to_string();
            let path = path.to_path_buf();
            move |e: std::io::Error| Error::Io {
                path: path.clone(),
                source: std::io::Error::new(e.kind(), format!("{what}: {e}")),
            }
        };
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io("cannot open the results file for writing"))?;
        lock(&file, path)?;
        if created {
            sync_parent(path);
        }
        let mut log = ResultsLog {
            path: path.to_path_buf(),
            file,
            done: Arc::default(),
            tally: Tally::default(),
            torn_bytes: None,
            retried: 0,
        };
        let len = log.file.metadata().map_err(io("cannot read"))?.len();
        match existing {
            _ if len == 0 => {}
            Existing::Overwrite => {
                log.file.set_len(0).map_err(io("cannot truncate"))?;
                log.file.sync_all().map_err(io("cannot sync"))?;
            }
            Existing::Refuse => {
                let lines = count_lines(&log.file).map_err(io("cannot read"))?;
                return Err(Error::ResultsFile {
                    path: path.to_path_buf(),
                    reason: format!("already holds {lines} result line(s): pass --resume to continue it (the files it lists are skipped), --overwrite to replace it, or choose another --out"),
                });
            }
            Existing::Resume { retry_failed } => {
                log.read_existing(positive_label, retry_failed)?;
            }
        }
        Ok(log)
    }

    /// Reads the lines already in the file, truncating a torn last line; with `retry_failed`
    /// rewrites the file without its error lines.
    fn read_existing(&mut self, positive_label: &str, retry_failed: bool) -> Result<()> {
        let path = self.path.clone();
        let io = |e| Error::Io {
            path: path.clone(),
            source: e,
        };
        let (mut done, mut tally) = (HashMap::new(), Tally::default());
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut reader = BufReader::new(&self.file);
        let mut line = Vec::new();
        let (mut offset, mut number) = (0u64, 0usize);
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io)?;
            if n == 0 {
                break;
            }
            number += 1;
            if line.last() != Some(&b'\n') {
                // Written by a run killed in the middle of a batch: that image is redone.
                self.torn_bytes = Some(n as u64);
                break;
            }
            let parsed = parse_line(&line, positive_label).map_err(|reason| {
                Error::ResultsFile {
                    path: path.clone(),
                    reason: format!("line {number}: {reason}; this is not a results file written by `fracture predict --out` (or it was edited), so it is not resumed"),
                }
            })?;
            Self::count(&mut done, &mut tally, parsed);
            offset += n as u64;
        }
        drop(reader);
        (self.done, self.tally) = (Arc::new(done), tally);
        if self.torn_bytes.is_some() {
            self.file.set_len(offset).map_err(io)?;
            self.file.sync_all().map_err(io)?;
        }
        if retry_failed && self.tally.failed > 0 {
            self.drop_error_lines(positive_label)?;
        }
        Ok(())
    }

    /// Notes one line of the file.
    fn count(done: &mut HashMap<u128, Recorded>, tally: &mut Tally, line: (u128, Recorded, bool)) {
        let (key, recorded, positive) = line;
        match recorded {
            Recorded::Scored => tally.scored += 1,
            Recorded::Failed => tally.failed += 1,
        }
        if positive {
            tally.positive += 1;
        }
        done.insert(key, recorded);
    }

    /// Writes the scored lines to a temporary file beside the results and renames it over them,
    /// so a crash leaves either the old file or the new one, never a mix.
    fn drop_error_lines(&mut self, positive_label: &str) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let name = self
            .path
            .file_name()
            .map_or("results".into(), |n| n.to_string_lossy().into_owned());
        let tmp = self
            .path
            .with_file_name(format!(".{name}.retry-{}", std::process::id()));
        let mut out = std::io::BufWriter::new(File::create(&tmp).map_err(io(&tmp))?);
        self.file.seek(SeekFrom::Start(0)).map_err(io(&self.path))?;
        let mut reader = BufReader::new(&self.file);
        let mut line = Vec::new();
        let before = self.tally.failed;
        let (mut done, mut tally) = (HashMap::new(), Tally::default());
        while reader
            .read_until(b'\n', &mut line)
            .map_err(io(&self.path))?
            > 0
        {
            let parsed =
                parse_line(&line, positive_label).map_err(|reason| Error::ResultsFile {
                    path: self.path.clone(),
                    reason: format!("changed while being read ({reason})"),
                })?;
            if parsed.1 == Recorded::Scored {
                out.write_all(&line).map_err(io(&tmp))?;
                Self::count(&mut done, &mut tally, parsed);
            }
            line.clear();
        }
        drop(reader);
        (self.done, self.tally) = (Arc::new(done), tally);
        let file = out.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io(&tmp))?;
        lock(&file, &tmp)?;
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        sync_parent(&self.path);
        // The renamed file is the results file now; the old one (still locked) goes away.
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        drop(file);
        lock(&self.file, &self.path)?;
        self.retried = before;
        Ok(())
    }

    /// What the file already holds for `path_key` (the `path` field of a line).
    pub fn recorded(&self, path_key: &str) -> Option<Recorded> {
        self.done.get(&key(path_key)).copied()
    }

    /// The paths the file held when opened, as a cheap shareable handle (for a filter running
    /// on another thread while this log is appended to).
    pub fn recorded_paths(&self) -> RecordedPaths {
        RecordedPaths(Arc::clone(&self.done))
    }

    /// The lines that were in the file when it was opened (after truncation and retries).
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Bytes of a torn last line that opening removed, if there was one.
    pub fn torn_bytes(&self) -> Option<u64> {
        self.torn_bytes
    }

    /// Error lines removed by [`Existing::Resume`] with `retry_failed`.
    pub fn retried(&self) -> usize {
        self.retried
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `lines` (each one JSON object without its newline) with one write, then syncs
    /// the data to disk.
    pub fn append(&mut self, lines: &[String]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut buf = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            debug_assert!(!l.contains('\n'), "one result per line");
            buf.push_str(l);
            buf.push('\n');
        }
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(buf.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        Ok(())
    }
}

/// Locks `file` for this process, or says who holds it.
fn lock(file: &File, path: &Path) -> Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::ResultsFile {
            path: path.to_path_buf(),
            reason: "in use by another `fracture predict` (it holds the file's lock): wait for it to finish or choose another --out".into(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(source.kind(), format!("cannot lock: {source}")),
        }),
    }
}

/// Makes a file's creation or rename durable (its folder's entry); best effort.
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn count_lines(file: &File) -> std::io::Result<usize> {
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut n = 0;
    while reader.read_until(b'\n', &mut line)? > 0 {
        n += 1;
        line.clear();
    }
    Ok(n)
}

/// The key, kind and positive flag of one complete line (a
/// [`PredictionRecord`](crate::prediction_record::PredictionRecord)), or what is wrong with it.
fn parse_line(
    line: &[u8],
    positive_label: &str,
) -> std::result::Result<(u128, Recorded, bool), String> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("not JSON ({e})"))?;
    if !v.get("path").is_some_and(serde_json::Value::is_string) {
        return Err("no \"path\" string".into());
    }
    let r: crate::prediction_record::PredictionRecord =
        serde_json::from_value(v).map_err(|e| format!("not a prediction record ({e})"))?;
    match (&r.error, &r.label) {
        (Some(_), _) => Ok((key(&r.path), Recorded::Failed, false)),
        (None, Some(label)) => Ok((key(&r.path), Recorded::Scored, label == positive_label)),
        (None, None) => Err("neither \"label\" nor \"error\"".into()),
    }
}

/// A 128-bit hash of a path key (two independent 64-bit SipHashes): a collision, which would
/// skip a file, is out of reach for any archive (about 1e-26 for a million files).
fn key(path: &str) -> u128 {
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        path.hash(&mut h);
        h.finish() as u128
    };
    (half(0) << 64) | half(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(path: &str, label: Option<&str>) -> String {
        match label {
            Some(l) => serde_json::json!({"path": path, "p_fractured": 0.5, "label": l}),
            None => serde_json::json!({"path": path, "error": "corrupt"}),
        }
        .to_string()
    }

    #[test]
    fn a_new_file_refuses_nothing_and_an_existing_one_is_never_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut log = ResultsLog::open(&path, Existing::Refuse, "fractured").unwrap();
        log.append(&[line("a", Some("fractured")), line("b", None)])
            .unwrap();
        drop(log);
        let err = ResultsLog::open(&path, Existing::Refuse, "fractured").unwrap_err();
        assert!(err.to_string().contains("2 result line(s)"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        let log = ResultsLog::open(&path, Existing::Overwrite, "fractured").unwrap();
        assert_eq!(log.tally(), Tally::default());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn resume_counts_lines_and_retry_failed_removes_error_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut log = ResultsLog::open(&path, Existing::Refuse, "fractured").unwrap();
        let lines = [
            line("a", Some("fractured")),
            line("b", None),
            line("c", Some("not_fractured")),
        ];
        log.append(&lines).unwrap();
        drop(log);
        let log = ResultsLog::open(
            &path,
            Existing::Resume {
                retry_failed: false,
            },
            "fractured",
        )
        .unwrap();
        let t = log.tally();
        assert_eq!((t.scored, t.failed, t.positive), (2, 1, 1));
        assert_eq!(log.recorded("b"), Some(Recorded::Failed));
        drop(log);
        let log =
            ResultsLog::open(&path, Existing::Resume { retry_failed: true }, "fractured").unwrap();
        assert_eq!(log.retried(), 1);
        assert_eq!(log.recorded("b"), None);
        assert_eq!(log.recorded("c"), Some(Recorded::Scored));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n{}\n", lines[0], lines[2]));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_line_that_is_not_a_result_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, format!("{}\nhello\n", line("a", None))).unwrap();
        let err = ResultsLog::open(
            &path,
            Existing::Resume {
                retry_failed: false,
            },
            "fractured",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("notes.txt: line 2: not JSON"), "{err}");
        // Nothing was changed.
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("hello\n"));
    }

    #[test]
    fn a_second_open_of_the_same_file_is_refused_while_the_first_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let _first = ResultsLog::open(&path, Existing::Refuse, "fractured").unwrap();
        let err = ResultsLog::open(
            &path,
            Existing::Resume {
                retry_failed: false,
            },
            "fractured",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("in use"), "{err}");
    }
}

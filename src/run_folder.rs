//! Claiming a run folder for training: one run per folder at a time, and no silent overwrite.
//!
//! [`RunFolder::claim`] creates the folder if needed (so an unwritable folder fails before any
//! work), then opens `<dir>/.lock` and takes an exclusive lock on it with
//! [`std::fs::File::try_lock`] (`flock` on Unix, `LockFileEx` on Windows). The lock belongs to
//! the open file, so the operating system releases it whenever the process ends, however it
//! ends (Ctrl-C, SIGKILL, a crash): there is no process id to check and no stale lock to take
//! over. A second claim on the same folder fails at once. A folder that already holds files is
//! refused unless the run resumes or overwrites it ([`ExistingRun`]). When the [`RunFolder`] is
//! dropped, the lock file is removed, together with the folder itself if this claim created it
//! and nothing was written into it (a run that failed before writing anything).

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the lock file inside a run folder.
pub const LOCK_FILE: &str = ".lock";

/// What [`RunFolder::claim`] does with a folder that already holds a run.
///
/// ```
/// use fracture_nn::run_folder::ExistingRun;
/// assert_ne!(ExistingRun::Refuse, ExistingRun::Resume);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExistingRun {
    /// Fail, naming the files it holds.
    Refuse,
    /// Keep it: the run continues from its checkpoint.
    Resume,
    /// Keep it: the run replaces its files.
    Overwrite,
}

/// A run folder held by this process; released on drop (or by the OS when the process ends).
///
/// ```
/// use fracture_nn::run_folder::{ExistingRun, RunFolder, LOCK_FILE};
/// let tmp = tempfile::tempdir()?;
/// let dir = tmp.path().join("run");
/// let run = RunFolder::claim(&dir, ExistingRun::Refuse)?;
/// assert!(dir.join(LOCK_FILE).exists());
/// // A second claim fails at once while the first holds the folder.
/// assert!(RunFolder::claim(&dir, ExistingRun::Resume).is_err());
/// std::fs::write(dir.join("model.safetensors"), b"...")?;
/// drop(run);
/// assert!(!dir.join(LOCK_FILE).exists());
/// // A folder holding a run is refused unless resumed or overwritten.
/// assert!(RunFolder::claim(&dir, ExistingRun::Refuse).is_err());
/// let _run = RunFolder::claim(&dir, ExistingRun::Overwrite)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RunFolder {
    dir: PathBuf,
    /// The locked lock file, or `None` if the lock was never taken.
    held: Option<(PathBuf, File)>,
    created_dir: bool,
}

impl RunFolder {
    /// Claims `dir` for a run; a folder that already holds one is handled as `existing` says.
    pub fn claim(dir: &Path, existing: ExistingRun) -> Result<RunFolder> {
        let created_dir = !dir.exists();
        std::fs::create_dir_all(dir).map_err(io(dir, "cannot create the run folder"))?;
        let mut held = RunFolder {
            dir: dir.to_path_buf(),
            held: None,
            created_dir,
        };
        let lock = dir.join(LOCK_FILE);
        held.held = Some((lock.clone(), take_lock(&lock, dir)?));
        let files = run_files(dir)?;
        if !files.is_empty() && existing == ExistingRun::Refuse {
            return Err(Error::RunExists {
                path: dir.to_path_buf(),
                files,
            });
        }
        Ok(held)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RunFolder {
    fn drop(&mut self) {
        if let Some((path, file)) = self.held.take() {
            // Removed while still locked, so that no other process locks the removed file
            // while a third one creates a new one (see `take_lock`).
            let _ = std::fs::remove_file(&path);
            drop(file);
        }
        if self.created_dir {
            // Only succeeds on an empty folder: a failed run leaves no empty folder behind.
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// The run folder of a run given none: `runs/<unix time>` (in seconds), relative to the
/// working directory.
///
/// ```
/// let dir = fracture_nn::run_folder::default_run_dir();
/// assert!(dir.starts_with("runs") && dir.components().count() == 2);
/// ```
pub fn default_run_dir() -> PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    PathBuf::from("runs").join(now.to_string())
}

/// An I/O error on `path`, saying what was being done.
fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |e| Error::Io {
        path,
        source: std::io::Error::new(e.kind(), format!("{what}: {e}")),
    }
}

/// Visible entries of a run folder other than the lock, sorted, at most 4 named.
fn run_files(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(dir, "cannot read the run folder"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(LOCK_FILE))
        .collect();
    names.sort();
    if names.len() > 4 {
        let more = names.len() - 3;
        names.truncate(3);
        names.push(format!("and {more} more"));
    }
    Ok(names)
}

/// Opens (creating if needed) and exclusively locks `lock`, without waiting.
///
/// A lock file left by an earlier version (holding a process id) or by a run that ended is
/// simply locked again. After locking, the file is checked to still be the one at `lock`: a
/// run that ends removes its lock file while holding the lock, and a process that opened the
/// file just before that must not run on a removed file while another creates a new one.
fn take_lock(lock: &Path, dir: &Path) -> Result<File> {
    for _ in 0..8 {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(lock)
            .map_err(io(
                lock,
                "cannot create the lock file (is the run folder writable?)",
            ))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::RunInUse {
                    path: dir.to_path_buf(),
                    lock: lock.to_path_buf(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io(lock, "cannot lock")(e)),
        }
        if still_there(&file, lock) {
            return Ok(file);
        }
    }
    Err(Error::RunInUse {
        path: dir.to_path_buf(),
        lock: lock.to_path_buf(),
    })
}

/// The open `file` is the file now at `path` (same device and inode).
fn still_there(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

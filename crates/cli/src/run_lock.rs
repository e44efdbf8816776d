//! Claiming a run folder for `train`: one run per folder at a time, and no silent overwrite.
//!
//! [`RunLock::claim`] creates the folder if needed (so an unwritable `--out` fails before any
//! work), then opens `<out>/.lock` and takes an exclusive lock on it with
//! [`std::fs::File::try_lock`] (`flock` on Unix, `LockFileEx` on Windows). The lock belongs to
//! the open file, so the operating system releases it whenever the process ends, however it
//! ends (Ctrl-C, SIGKILL, a crash): there is no process id to check and no stale lock to take
//! over. A second `train` on the same folder fails at once. A folder that already holds files
//! is refused unless the run resumes or overwrites it. When the [`RunLock`] is dropped, the
//! lock file is removed, together with the folder itself if this run created it and left
//! nothing in it (a run that failed before writing anything).
//!
//! [`on_interrupt`] turns Ctrl-C (SIGINT) into a message saying what is left in the folder,
//! and exit status 130 as a shell reports an interrupted command.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Name of the lock file inside a run folder.
pub const LOCK_FILE: &str = ".lock";

/// A run folder held by this process; released on drop (or by the OS when the process ends).
///
/// ```text
/// let lock = RunLock::claim(Path::new("runs/a"), false, false)?; // fails if in use or not empty
/// // ... train into runs/a ...
/// drop(lock); // removes runs/a/.lock
/// ```
#[derive(Debug)]
pub struct RunLock {
    dir: PathBuf,
    /// The locked lock file, or `None` if the lock was never taken.
    held: Option<(PathBuf, File)>,
    created_dir: bool,
}

impl RunLock {
    /// Claims `dir` for a run. `resume` and `overwrite` allow a folder that already holds a
    /// run; without them such a folder is refused.
    pub fn claim(dir: &Path, resume: bool, overwrite: bool) -> Result<RunLock> {
        if resume && overwrite {
            bail!("--resume and --overwrite contradict each other: --resume continues the run in --out, --overwrite replaces it");
        }
        let created_dir = !dir.exists();
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the run folder {}", dir.display()))?;
        let mut held = RunLock {
            dir: dir.to_path_buf(),
            held: None,
            created_dir,
        };
        let lock = dir.join(LOCK_FILE);
        held.held = Some((lock.clone(), take_lock(&lock, dir)?));
        let existing = run_files(dir)?;
        if !existing.is_empty() && !resume && !overwrite {
            bail!(
                "{} already holds a run ({}): pass --resume to continue it, --overwrite to replace it, or choose another --out",
                dir.display(),
                existing.join(", ")
            );
        }
        Ok(held)
    }
}

impl Drop for RunLock {
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

/// Visible entries of a run folder other than the lock, sorted, at most 4 named.
fn run_files(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the run folder {}", dir.display()))?
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
            .with_context(|| {
                format!(
                    "cannot create the lock file {} (is the run folder writable?)",
                    lock.display()
                )
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => bail!(
                "{} is in use by another `fracture train` (it holds the lock file {}): wait for it to finish or choose another --out",
                dir.display(),
                lock.display()
            ),
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock.display()))
            }
        }
        if still_there(&file, lock) {
            return Ok(file);
        }
    }
    bail!(
        "{} is in use: its lock file {} keeps being replaced by other runs",
        dir.display(),
        lock.display()
    )
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

/// On Ctrl-C (SIGINT): says on stderr what the run folder `out` holds and how to continue,
/// then exits with status 130. The run lock goes with the process. Files are written
/// atomically, so an interrupted write leaves the previous complete file.
#[cfg(not(unix))]
pub fn on_interrupt(_out: PathBuf) {}

/// See the other `on_interrupt`.
#[cfg(unix)]
pub fn on_interrupt(out: PathBuf) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        // Without a handler Ctrl-C keeps its default action: the same exit status, silently.
        Err(_) => return,
    };
    // The handler is installed before this returns, so no Ctrl-C is missed.
    let Ok(signal) = runtime.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    }) else {
        return;
    };
    std::thread::spawn(move || {
        let mut signal = signal;
        runtime.block_on(signal.recv());
        let checkpoint = out.join("last.safetensors");
        if checkpoint.exists() {
            eprintln!(
                "\ninterrupted: {} holds the checkpoint of the last completed epoch; continue with --resume --out {}",
                out.display(),
                out.display()
            );
        } else {
            eprintln!(
                "\ninterrupted before the first epoch ended: nothing to resume in {}",
                out.display()
            );
        }
        std::process::exit(130);
    });
}

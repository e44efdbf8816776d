//! Claiming a run folder for `train`: one run per folder at a time, and no silent overwrite.
//!
//! [`RunLock::claim`] creates the folder if needed (so an unwritable `--out` fails before any
//! work), then creates `<out>/.lock` exclusively with the process id inside. A second `train`
//! on the same folder finds the lock and fails at once, naming the holder's process id; a lock
//! left by a process that no longer runs (killed, power cut) is detected and taken over. A
//! folder that already holds files is refused unless the run resumes or overwrites it. The lock
//! is removed when the [`RunLock`] is dropped, together with the folder itself if this run
//! created it and left nothing in it (a run that failed before writing anything).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Name of the lock file inside a run folder.
pub const LOCK_FILE: &str = ".lock";

/// A run folder held by this process; released on drop.
///
/// ```text
/// let lock = RunLock::claim(Path::new("runs/a"), false, false)?; // fails if in use or not empty
/// // ... train into runs/a ...
/// drop(lock); // removes runs/a/.lock
/// ```
#[derive(Debug)]
pub struct RunLock {
    dir: PathBuf,
    lock: PathBuf,
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
        let lock = dir.join(LOCK_FILE);
        let mut held = RunLock {
            dir: dir.to_path_buf(),
            lock: PathBuf::new(),
            created_dir,
        };
        take_lock(&lock, dir)?;
        held.lock = lock;
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
        if self.lock.as_os_str().is_empty() {
            // The lock was never taken: the folder belongs to someone else, or is empty and ours.
            if self.created_dir {
                let _ = std::fs::remove_dir(&self.dir);
            }
            return;
        }
        let _ = std::fs::remove_file(&self.lock);
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

/// Creates `lock` exclusively with this process's id, taking over a stale one once.
///
/// The id is written to a private file first, which is then hard-linked to the lock name: the
/// link either fails (a lock exists) or creates the lock with its content complete, so another
/// process never reads a half-written lock and mistakes it for a stale one.
fn take_lock(lock: &Path, dir: &Path) -> Result<()> {
    let mine = dir.join(format!("{LOCK_FILE}.{}", std::process::id()));
    std::fs::write(&mine, format!("{}\n", std::process::id())).with_context(|| {
        format!(
            "cannot write the lock file {} (is the run folder writable?)",
            mine.display()
        )
    })?;
    let result = link_lock(&mine, lock, dir);
    let _ = std::fs::remove_file(&mine);
    result
}

fn link_lock(mine: &Path, lock: &Path, dir: &Path) -> Result<()> {
    for attempt in 0..2 {
        match std::fs::hard_link(mine, lock) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt == 0 => {
                let content = std::fs::read_to_string(lock).unwrap_or_default();
                match content.trim().parse::<u32>() {
                    Ok(pid) if process_is_running(pid) => bail!(
                        "{} is in use by another `fracture train` (process id {pid}, lock file {}): wait for it to finish or choose another --out",
                        dir.display(),
                        lock.display()
                    ),
                    Ok(pid) => eprintln!(
                        "warning: taking over the lock of process {pid}, which no longer runs ({})",
                        lock.display()
                    ),
                    Err(_) => eprintln!(
                        "warning: taking over an unreadable lock file {}",
                        lock.display()
                    ),
                }
                std::fs::remove_file(lock)
                    .with_context(|| format!("cannot remove the stale lock {}", lock.display()))?;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot create the lock file {} (is the run folder writable?)",
                        lock.display()
                    )
                })
            }
        }
    }
    bail!(
        "{} is in use: another process took the lock {} at the same moment",
        dir.display(),
        lock.display()
    )
}

/// True if a process with this id exists (or might: unknown on this platform).
fn process_is_running(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if pid <= 0 {
            return false;
        }
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

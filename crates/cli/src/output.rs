//! Output files of `export --onnx` and `import --out`: checked before any work.
//!
//! Both writers put the bytes in a temporary file in the target's folder and rename it over
//! the target, which replaces whatever the name pointed to. So a name that is something other
//! than a regular file (a FIFO, a device such as `/dev/full`, a folder, a socket) is refused
//! rather than replaced, and so is an output that is one of the command's inputs (the same
//! file by canonical path or by device and inode, so symbolic and hard links count), which
//! would destroy the input. A symbolic link to a regular file is followed: the file it points
//! to is replaced and the link stays.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// An output path that passed [`OutputFile::check`].
#[derive(Debug)]
pub struct OutputFile {
    /// Where to write: the given path, or the regular file its symbolic link points to.
    pub path: PathBuf,
}

impl OutputFile {
    /// Checks `path` (given as `flag`) before any work: absent (its folder must exist) or a
    /// regular file, and none of `inputs`.
    pub fn check(path: &Path, flag: &str, inputs: &[&Path]) -> Result<OutputFile> {
        let shown = path.display();
        let link = std::fs::symlink_metadata(path);
        let target = match std::fs::metadata(path) {
            Ok(m) if m.is_file() => std::fs::canonicalize(path)
                .with_context(|| format!("{flag} {shown}: cannot resolve the path"))?,
            Ok(m) => bail!(
                "{flag} {shown}: not a regular file ({}); writing would replace it, so give the name of a new or regular file",
                kind(&m)
            ),
            Err(_) if link.is_ok() => bail!(
                "{flag} {shown}: a symbolic link to nothing; give the name of a new or regular file"
            ),
            Err(_) => {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                if !dir.is_dir() {
                    bail!(
                        "{flag} {shown}: the folder {} does not exist",
                        dir.display()
                    );
                }
                return Ok(OutputFile {
                    path: path.to_path_buf(),
                });
            }
        };
        for input in inputs {
            if same_file(input, &target) {
                bail!(
                    "{flag} {shown} is the input {}: writing it would destroy the input; choose another file name",
                    input.display()
                );
            }
        }
        Ok(OutputFile { path: target })
    }
}

/// Both name one existing file (canonical path, or device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if (ma.dev(), ma.ino()) == (mb.dev(), mb.ino()) {
            return true;
        }
    }
    let _ = (ma, mb);
    matches!(
        (std::fs::canonicalize(a), std::fs::canonicalize(b)),
        (Ok(x), Ok(y)) if x == y
    )
}

/// What kind of file system object `m` is, in words.
fn kind(m: &std::fs::Metadata) -> &'static str {
    if m.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = m.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
    }
    "not a file"
}

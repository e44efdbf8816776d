//! What the integration tests of fracture-nn share, in one place instead of a copy per file.
//!
//! - [`shared_dir`] / [`shared_path`]: the shared data folder (`../shared` beside the
//!   repository, or `$FRACTURE_SHARED`) under one policy: present, it is returned; missing, the
//!   test prints that it skipped, except under CI ([`is_ci`]), where it fails.
//! - [`unavailable`]: the same policy for anything else a test needs from the machine
//!   (chromium, ONNX Runtime, a file).
//! - [`alloc::Counting`]: a counting allocator for tests that bound the memory a call holds.
//! - [`process`]: running a binary (the `fracture` CLI) and reading what it printed.
//!
//! A dev-dependency only (`publish = false`), with nothing but the standard library.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod alloc;
pub mod process;

use std::path::{Path, PathBuf};

/// Whether the tests run under CI: the variable `CI` is set, not empty, and neither `0` nor
/// `false` (any case). `.ci/run` exports `CI=1`. Under CI, a test that lacks what it needs
/// fails instead of skipping.
pub fn is_ci() -> bool {
    ci_value_means_ci(std::env::var("CI").ok().as_deref())
}

fn ci_value_means_ci(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        let v = v.trim();
        !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false")
    })
}

/// Reports that a test cannot run because `what` (e.g. "chromium is not installed"): under CI
/// ([`is_ci`]) this panics with that message; otherwise it prints `skipped: <what>` on stderr
/// and returns `None`, for the test to return early.
///
/// ```no_run
/// # fn find_chromium() -> Option<std::path::PathBuf> { None }
/// let Some(chromium) = find_chromium().or_else(|| fracture_test_support::unavailable("no chromium"))
/// else {
///     return;
/// };
/// ```
#[track_caller]
pub fn unavailable<T>(what: &str) -> Option<T> {
    if is_ci() {
        panic!("CI is set, so this test may not skip: {what}");
    }
    eprintln!("skipped: {what}");
    None
}

/// The workspace root (the folder of the top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    // This crate is `<root>/crates/test-support`.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/test-support has two ancestors")
        .to_path_buf()
}

/// Where the shared data folder is looked for: `$FRACTURE_SHARED` if set (even when it does
/// not exist), else `../shared` beside the workspace root.
pub fn shared_location() -> PathBuf {
    match std::env::var_os("FRACTURE_SHARED") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("../shared"),
    }
}

/// The shared data folder (golden files, datasets, pretrained weights), or `None` after
/// printing that the test skipped. Under CI ([`is_ci`]) a missing folder fails the test: CI
/// must run every test that needs it.
#[track_caller]
pub fn shared_dir() -> Option<PathBuf> {
    let dir = shared_location();
    if dir.is_dir() {
        return Some(dir);
    }
    unavailable(&format!(
        "the shared data folder {} is missing (../shared beside the repository, or set \
         FRACTURE_SHARED); CI requires it",
        dir.display()
    ))
}

/// `rel` inside the shared data folder (a file or a folder), or `None` after printing that the
/// test skipped; under CI a missing folder or a missing `rel` fails the test, as in
/// [`shared_dir`].
#[track_caller]
pub fn shared_path(rel: &str) -> Option<PathBuf> {
    let path = shared_dir()?.join(rel);
    if path.exists() {
        return Some(path);
    }
    unavailable(&format!(
        "{} is missing from the shared data folder; CI requires it",
        path.display()
    ))
}

/// Bytes a process printed, as text (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A path as a command-line argument (test paths are UTF-8).
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_is_any_value_but_empty_zero_or_false() {
        for v in ["1", "true", "yes", "github"] {
            assert!(ci_value_means_ci(Some(v)), "{v}");
        }
        for v in [
            None,
            Some(""),
            Some(" "),
            Some("0"),
            Some("false"),
            Some("FALSE"),
        ] {
            assert!(!ci_value_means_ci(v), "{v:?}");
        }
    }

    #[test]
    fn the_workspace_root_holds_this_crate() {
        assert!(workspace_root()
            .join("crates/test-support/Cargo.toml")
            .is_file());
    }
}

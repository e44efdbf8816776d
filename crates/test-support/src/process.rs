//! Running a binary from a test: the `fracture` CLI in `crates/cli/tests`. The path comes from
//! the caller, because only the binary's own crate knows it (`env!("CARGO_BIN_EXE_fracture")`
//! is defined for that crate's tests alone).

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::text;

/// Runs `bin` with `args`, waits for it and returns its status and output.
pub fn run(bin: impl AsRef<OsStr>, args: &[&str]) -> Output {
    let bin = bin.as_ref();
    Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.to_string_lossy()))
}

/// Runs `bin` with `args`, killing it and failing the test if it takes longer than `limit`: a
/// hang must fail rather than block CI.
pub fn run_within(bin: impl AsRef<OsStr>, args: &[&str], limit: Duration) -> Output {
    let bin = bin.as_ref();
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.to_string_lossy()));
    let start = Instant::now();
    loop {
        if child.try_wait().expect("poll the child").is_some() {
            return child.wait_with_output().expect("collect the output");
        }
        if start.elapsed() > limit {
            child.kill().expect("kill the hung child");
            let out = child.wait_with_output().expect("collect the output");
            panic!(
                "`{} {}` still running after {limit:?} (hang); stderr: {}",
                bin.to_string_lossy(),
                args.join(" "),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! Ctrl-C during `train`: a message saying what the run folder holds and how to continue, and
//! exit status 130 as a shell reports an interrupted command. The run folder's lock
//! ([`fracture_nn::run_folder::RunFolder`]) belongs to the open lock file, so the operating
//! system releases it when the process exits.

use std::path::PathBuf;

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

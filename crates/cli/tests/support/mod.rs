//! Helpers shared by the CLI's integration tests: running the `fracture` binary, training the
//! tiny phantom model most tests start from, and, for the `fracture serve` tests, a minimal
//! HTTP/1.1 client on `TcpStream` (no HTTP crate needed) and a server process on a free port
//! that is stopped when dropped.
//!
//! What is not about the CLI (running a binary, the `../shared` policy, reading output) is in
//! `fracture_test_support`; this module gives it the binary's path, which only this crate's
//! tests know (`CARGO_BIN_EXE_fracture`).

#![allow(dead_code)] // each test file uses a different subset

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub use fracture_test_support::{arg as s, text};

/// The `fracture` binary that cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_fracture");

/// A command that runs the `fracture` binary, for tests that set its input, output or
/// environment themselves.
pub fn bin() -> Command {
    Command::new(BIN)
}

/// Runs the `fracture` binary with `args` and waits for it.
pub fn fracture(args: &[&str]) -> std::process::Output {
    fracture_test_support::process::run(BIN, args)
}

/// Runs `fracture args`, killing it (and failing the test) if it takes longer than `limit`:
/// the hang tests must fail rather than block CI.
pub fn fracture_within(args: &[&str], limit: Duration) -> std::process::Output {
    fracture_test_support::process::run_within(BIN, args, limit)
}

/// The arguments of `fracture train` for the tiny network the CLI tests share (plain, widths 8
/// and 16, 32 px, batch 8, quiet) on the phantom folder `data`, for `epochs` epochs into `out`,
/// with `extra` arguments.
pub fn tiny_train_args<'a>(
    data: &'a Path,
    out: &'a Path,
    epochs: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--data",
        s(data),
        "--out",
        s(out),
        "--epochs",
        epochs,
        "--image-size",
        "32",
        "--widths",
        "8,16",
        "--arch",
        "plain",
        "--batch-size",
        "8",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    args
}

/// A 32 px phantom dataset (`fracture synth`, 20 images per class in train) in `dir/data` and
/// the tiny network trained on it for one epoch in `dir/run`: `(data, model file)`.
pub fn tiny_phantom_run(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    let run = dir.join("run");
    let out = fracture(&[
        "synth",
        "--out",
        s(&data),
        "--per-class",
        "20",
        "--size",
        "32",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = fracture(&tiny_train_args(&data, &run, "1", &[]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ROC-AUC"),
        "{}",
        text(&out.stdout)
    );
    (data, run.join("model.safetensors"))
}

/// [`tiny_phantom_run`] once per test binary, in a temporary folder kept for the whole run:
/// `(data, model file)`, shared by the tests of that binary.
pub fn phantom_fixture() -> &'static (PathBuf, PathBuf) {
    static FIX: OnceLock<(tempfile::TempDir, (PathBuf, PathBuf))> = OnceLock::new();
    &FIX.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let paths = tiny_phantom_run(dir.path());
        (dir, paths)
    })
    .1
}

/// Runs [`tiny_train_args`].
pub fn train_tiny(data: &Path, out: &Path, epochs: usize, extra: &[&str]) -> std::process::Output {
    let epochs = epochs.to_string();
    fracture(&tiny_train_args(data, out, &epochs, extra))
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    fracture_test_support::workspace_root()
}

/// The committed FracAtlas model.
pub fn committed_model() -> PathBuf {
    workspace().join("models/fracatlas.safetensors")
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON; panics with the body's text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
        })
    }
}

/// Sends one request (`Connection: close`) and reads the whole response. The body is written
/// from another thread, so that a server that answers early (413) and closes is still heard.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        // Errors are expected when the server refuses a body it will not read.
        let _ = writer.write_all(head.as_bytes());
        for chunk in body.chunks(1 << 16) {
            if writer.write_all(chunk).is_err() {
                break;
            }
        }
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 1 << 16];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                // Some servers (chromedriver) keep the connection open despite
                // `Connection: close`: stop at the end of the announced body.
                if complete(&raw)
                    && parse(&raw).is_some_and(|r| r.headers.contains_key("content-length"))
                {
                    break;
                }
            }
            // A reset after the answer arrived (the server did not read the whole body).
            Err(_) if complete(&raw) => break,
            Err(e) => panic!("reading the response to {method} {path}: {e}"),
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    sender.join().unwrap();
    parse(&raw).unwrap_or_else(|| {
        panic!(
            "malformed response to {method} {path}: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

fn complete(raw: &[u8]) -> bool {
    parse(raw).is_some()
}

fn parse(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = raw[end + 4..].to_vec();
    if let Some(n) = headers.get("content-length") {
        if body.len() < n.parse::<usize>().ok()? {
            return None;
        }
    }
    Some(Response {
        status,
        headers,
        body,
    })
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], Vec::new())
}

/// A running `fracture serve`, killed on drop unless stopped first.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `fracture serve --model model --addr 127.0.0.1:0 <extra>` and waits for the
    /// address it prints.
    pub fn start(model: &Path, extra: &[&str]) -> Server {
        let mut child = bin()
            .args(["serve", "--model"])
            .arg(model)
            .args(["--addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fracture serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Server { child, addr }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A synthetic 384 px grayscale PNG (a bright diagonal "bone" on a dark field), never a real
/// X-ray.
pub fn synthetic_png() -> Vec<u8> {
    let img = image::GrayImage::from_fn(384, 384, |x, y| {
        let d = (x as i32 - y as i32).abs();
        image::Luma([if d < 40 { 200 - d as u8 } else { 30 }])
    });
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

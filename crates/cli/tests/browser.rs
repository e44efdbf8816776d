//! The page of `fracture serve` in a real browser: headless Chromium driven through
//! chromedriver's W3C WebDriver HTTP API (spoken directly over `TcpStream`). It uploads a
//! FracAtlas test image through the file input, waits for the result, checks that the
//! probability shown equals `fracture predict --json` for the same file to 4 decimals and that
//! the Grad-CAM overlay loaded, and saves screenshots (laptop and phone widths, and one of a
//! synthetic image for the README) under `target/tmp/browser/`.
//!
//! Needs `chromium` and `chromedriver` on PATH (Debian: `apt-get install chromium
//! chromium-driver`) and `../shared/datasets/fracatlas/test`; without either it skips with a
//! message, unless the environment variable `CI` is set, when it fails.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fracture_test_support::{shared_path, unavailable};
use serde_json::{json, Value};
use support::{committed_model, request, Server};

/// `Some(())` if `ok`; otherwise skips (returns `None`) with a message, or fails under CI.
fn require(ok: bool, what: &str) -> Option<()> {
    if ok {
        return Some(());
    }
    unavailable(&format!("the browser test: {what}"))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// The first FracAtlas test image (sorted), or `None` (skipped; fails under CI) without the
/// shared datasets.
fn fracatlas_image() -> Option<PathBuf> {
    let dir = shared_path("datasets/fracatlas/test/fractured")?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files
        .into_iter()
        .next()
        .or_else(|| unavailable(&format!("no image in {}", dir.display())))
}

struct Driver {
    child: Child,
    addr: SocketAddr,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = std::panic::catch_unwind(|| request(self.addr, "DELETE", &path, &[], Vec::new()));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let (headers, bytes): (&[(&str, &str)], Vec<u8>) = match body {
        Some(b) => (
            &[("Content-Type", "application/json")],
            b.to_string().into_bytes(),
        ),
        None => (&[], Vec::new()),
    };
    let r = request(addr, method, path, headers, bytes);
    let v = r.json();
    assert_eq!(r.status, 200, "WebDriver {method} {path}: {v}");
    v["value"].clone()
}

impl Driver {
    fn start(user_data_dir: &Path) -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": which("chromium"),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars",
                    format!("--user-data-dir={}", user_data_dir.display()),
                ]
            }
        }}});
        let mut driver = Driver {
            child,
            addr,
            session: String::new(),
        };
        let v = call(addr, "POST", "/session", Some(caps));
        driver.session = v["sessionId"].as_str().unwrap().to_string();
        driver
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(
            self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
    }

    fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn size(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Uploads `file` through the page's file input and waits for its result card.
    fn upload_and_wait(&self, file: &Path) -> Value {
        let el = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": "#files"})),
        );
        let id = el["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no file input on the page: {el}"));
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            // chromedriver wants a canonical path (no `..`).
            Some(json!({"text": file.canonicalize().unwrap().display().to_string()})),
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let v = self.js(
                "const err = document.querySelector('.status.error');
                 if (err) return {error: err.textContent};
                 const c = document.querySelector('.card.done');
                 if (!c) return null;
                 const o = c.querySelector('.overlay');
                 if (!o.complete) return null;
                 return {p: c.querySelector('.p-value').textContent,
                         label: c.querySelector('.label').textContent,
                         overlayWidth: o.naturalWidth,
                         meaning: c.querySelector('.meaning').textContent,
                         time: c.querySelector('.time').textContent,
                         notice: document.querySelector('#notice').textContent,
                         noticeShown: document.querySelector('#notice').getBoundingClientRect().height > 0,
                         model: document.querySelector('#model-facts').textContent};",
            );
            if !v.is_null() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no result on the page within 120 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", None);
        std::fs::write(path, base64_decode(b64.as_str().unwrap())).unwrap();
    }
}

fn which(program: &str) -> String {
    let path = std::env::var_os("PATH").unwrap();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap()
        .display()
        .to_string()
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=' && c != b'\n').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= (value(c) as u32) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn the_page_shows_what_predict_prints() {
    if require(
        on_path("chromium") && on_path("chromedriver"),
        "chromium or chromedriver is not installed (apt-get install chromium chromium-driver)",
    )
    .is_none()
    {
        return;
    }
    let Some(image) = fracatlas_image() else {
        return;
    };
    let started = Instant::now();
    let out = support::bin()
        .args(["predict", "--json", "--model"])
        .arg(committed_model())
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = cli["p_fractured"].as_f64().unwrap();

    let server = Server::start(&committed_model(), &[]);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(profile.path());
    driver.size(1280, 1000);
    let url = format!("http://{}/", server.addr);
    driver.cmd("POST", "/url", Some(json!({ "url": url })));

    let shown = driver.upload_and_wait(&image);
    assert!(
        shown.get("error").is_none(),
        "the page shows an error: {shown}"
    );
    assert_eq!(shown["p"].as_str().unwrap(), format!("{p:.4}"), "{shown}");
    assert_eq!(
        shown["label"].as_str().unwrap(),
        cli["label"].as_str().unwrap().replace('_', " ")
    );
    assert!(shown["overlayWidth"].as_u64().unwrap() > 0, "{shown}");
    assert!(shown["notice"]
        .as_str()
        .unwrap()
        .contains("not a medical device"));
    assert_eq!(shown["noticeShown"], true);
    assert!(shown["model"]
        .as_str()
        .unwrap()
        .contains("Validation ROC-AUC"));
    assert!(shown["meaning"].as_str().unwrap().contains("threshold"));
    driver.screenshot(&shots.join("laptop.png"));
    driver.size(390, 1400);
    driver.screenshot(&shots.join("phone.png"));

    // A synthetic image on a fresh page: the screenshot the README may show.
    let synthetic = profile.path().join("synthetic-bone.png");
    std::fs::write(&synthetic, support::synthetic_png()).unwrap();
    driver.size(1280, 1000);
    driver.cmd("POST", "/url", Some(json!({ "url": url })));
    let synthetic_shown = driver.upload_and_wait(&synthetic);
    assert!(
        synthetic_shown["overlayWidth"].as_u64().unwrap() > 0,
        "{synthetic_shown}"
    );
    driver.screenshot(&shots.join("synthetic.png"));
    eprintln!(
        "browser test: P(fractured) {} on the page and from predict; screenshots in {} ({:.1} s)",
        shown["p"],
        shots.display(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn the_validation_report_renders_in_chromium() {
    if require(
        on_path("chromium") && on_path("chromedriver"),
        "chromium or chromedriver is not installed (apt-get install chromium chromium-driver)",
    )
    .is_none()
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (data, model) = support::tiny_phantom_run(tmp.path());
    let report = tmp.path().join("report");
    let out = support::fracture(&[
        "validate",
        "--model",
        support::s(&model),
        "--data",
        support::s(&data),
        "--report",
        support::s(&report),
        "--resamples",
        "200",
    ]);
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    let page = report.join("index.html").canonicalize().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(profile.path());
    driver.size(1280, 1400);
    let url = format!("file://{}", page.display());
    driver.cmd("POST", "/url", Some(json!({ "url": url })));
    let deadline = Instant::now() + Duration::from_secs(30);
    let shown = loop {
        let v = driver.js("const imgs = Array.from(document.images);
             if (imgs.length === 0 || !imgs.every(i => i.complete)) return null;
             return {widths: imgs.map(i => i.naturalWidth), title: document.title,
                     rows: document.querySelectorAll('tr').length,
                     notice: document.querySelector('.notice').textContent};");
        if !v.is_null() {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the report's images did not load"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let widths: Vec<u64> = shown["widths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap())
        .collect();
    assert_eq!(widths.len(), 3, "{shown}");
    assert!(
        widths.iter().all(|&w| w > 0),
        "an embedded plot did not decode: {shown}"
    );
    assert!(shown["notice"]
        .as_str()
        .unwrap()
        .contains("not a medical device"));
    assert!(shown["rows"].as_u64().unwrap() >= 7, "{shown}");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    driver.screenshot(&shots.join("validation-report.png"));
}

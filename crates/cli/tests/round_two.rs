//! Issue 31, "Reliability, round two": each defect the fault audit found, reproduced through
//! the real `fracture` binary on tiny phantoms and files made here in temporary folders. Every
//! test failed on the code before its fix (run against commit `38c1e03`).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{fracture, phantom_fixture, s, text, Server};

/// Non-zero exit, no panic, and exactly one `error: ` line, the last, containing `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(out.status.code(), Some(1), "not a clean failure: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "not one error line: {err}");
    assert_eq!(err.trim_end().lines().last(), Some(errors[0]), "{err}");
    assert!(errors[0].contains(needle), "{needle:?} not in {err}");
}

/// Runs `fracture args` and returns its output and peak resident memory in bytes: the
/// kernel's high-water mark of the process's resident set (`VmHWM` in `/proc/<pid>/status`,
/// which starts afresh at `exec`), read every 2 ms until the process exits. (`wait4`'s
/// `ru_maxrss` would also count the test process's own pages, shared with the child between
/// `fork` and `exec`.)
fn fracture_peak_rss(args: &[&str]) -> (Output, u64) {
    let mut child = support::bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the fracture binary runs");
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        out_pipe.read_to_end(&mut v).unwrap();
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        err_pipe.read_to_end(&mut v).unwrap();
        v
    });
    let mut peak = 0;
    let status = loop {
        if let Some((_, hwm)) = rss(child.id()) {
            peak = peak.max(hwm);
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let output = Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    };
    (output, peak)
}

/// `../shared/pretrained/efficientnet-lite0-57934424.pth`, or `None` (with a note) without
/// `../shared`; under CI its absence fails the test.
fn lite0_pth() -> Option<PathBuf> {
    fracture_test_support::shared_path("pretrained/efficientnet-lite0-57934424.pth")
}

/// Bytes of EfficientNet-Lite0's own weights at 224 px with a 2-class head: the parameter
/// count `fracture info --json` reports for an imported model, times 4 (f32).
const LITE0_PARAMETERS: u64 = 3_372_994;

// ---- 1. `.pth` reading is bounded by what the architecture needs. ----

/// A `torch.save` zip pickle of `{name: FloatStorage tensor of shape [numel]}` for each
/// `(name, storage key, numel)`.
fn state_dict_pickle(tensors: &[(&str, &str, u32)]) -> Vec<u8> {
    let mut p = vec![0x80, 0x02, b'}'];
    let string = |p: &mut Vec<u8>, s: &str| {
        p.push(b'X');
        p.extend((s.len() as u32).to_le_bytes());
        p.extend(s.as_bytes());
    };
    let int = |p: &mut Vec<u8>, v: u32| {
        p.push(b'J');
        p.extend(v.to_le_bytes());
    };
    for &(name, key, numel) in tensors {
        string(&mut p, name);
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        p.push(b'(');
        string(&mut p, "storage");
        p.extend(b"ctorch\nFloatStorage\n");
        string(&mut p, key);
        string(&mut p, "cpu");
        int(&mut p, numel);
        p.extend(b"tQ");
        int(&mut p, 0);
        int(&mut p, numel);
        p.push(0x85);
        int(&mut p, 1);
        p.push(0x85);
        p.push(0x89);
        p.extend(b"ccollections\nOrderedDict\n)R");
        p.extend(b"tRs");
    }
    p.push(b'.');
    p
}

/// A zip-format `.pth` holding `pickle` as `archive/data.pkl` and, for each `(key, bytes)`,
/// a storage of that many zero bytes, deflated.
fn pth_zip(path: &Path, pickle: &[u8], storages: &[(&str, usize)]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(true);
    w.start_file("archive/data.pkl", opts).unwrap();
    w.write_all(pickle).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for (key, bytes) in storages {
        w.start_file(format!("archive/data/{key}"), opts).unwrap();
        let mut left = *bytes;
        while left > 0 {
            let n = left.min(zeros.len());
            w.write_all(&zeros[..n]).unwrap();
            left -= n;
        }
    }
    w.finish().unwrap().flush().unwrap();
}

#[test]
fn import_of_a_pth_bomb_refuses_it_before_inflating_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let budget = 2 * 4 * LITE0_PARAMETERS + 100_000_000;
    // Four storages of 192 MiB of zeros under names the architecture does not have.
    let numel = 48 << 20;
    let bomb = dir.path().join("bomb.pth");
    let names = ["a", "b", "c", "d"];
    let tensors: Vec<(&str, &str, u32)> = names.iter().map(|n| (*n, *n, numel)).collect();
    let storages: Vec<(&str, usize)> = names.iter().map(|n| (*n, 4 * numel as usize)).collect();
    pth_zip(&bomb, &state_dict_pickle(&tensors), &storages);
    assert!(std::fs::metadata(&bomb).unwrap().len() < 10_000_000);
    let (o, peak) = fracture_peak_rss(&["import", "--from", s(&bomb), "--out", s(&out)]);
    assert_one_line_error(&o, "none of their tensors is in the file");
    eprintln!("import of 4 x 192 MiB zero storages under wrong names: peak RSS {peak} bytes");
    assert!(
        peak <= budget,
        "peak RSS {peak} bytes > {budget}: {}",
        text(&o.stderr)
    );
    // The right name with a storage far larger than its shape needs.
    let big = dir.path().join("big_storage.pth");
    pth_zip(
        &big,
        &state_dict_pickle(&[("_conv_stem.weight", "0", 864)]),
        &[("0", 768 << 20)],
    );
    let (o, peak) = fracture_peak_rss(&["import", "--from", s(&big), "--out", s(&out)]);
    assert!(!o.status.success());
    eprintln!("import of a 768 MiB storage behind a 864-element tensor: peak RSS {peak} bytes");
    assert!(peak <= budget, "peak RSS {peak} bytes > {budget}");
    // A pickle that inflates to 768 MiB before it could be parsed.
    let fat = dir.path().join("fat_pickle.pth");
    let mut pickle = vec![0x80, 0x02, b'X'];
    pickle.extend((768u32 << 20).to_le_bytes());
    pickle.resize(pickle.len() + (768 << 20), b' ');
    pickle.push(b'.');
    pth_zip(&fat, &pickle, &[]);
    drop(pickle);
    let (o, peak) = fracture_peak_rss(&["import", "--from", s(&fat), "--out", s(&out)]);
    assert_one_line_error(&o, "pickle");
    eprintln!("import of a 768 MiB pickle: peak RSS {peak} bytes");
    assert!(peak <= budget, "peak RSS {peak} bytes > {budget}");
    assert!(!out.exists());
}

#[test]
fn import_of_the_real_lite0_weights_stays_within_twice_the_architecture() {
    let Some(pth) = lite0_pth() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lite0.safetensors");
    let (o, peak) = fracture_peak_rss(&["import", "--from", s(&pth), "--out", s(&out)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let budget = 2 * 4 * LITE0_PARAMETERS + 100_000_000;
    eprintln!("import of the real weights: peak RSS {peak} bytes (bound {budget})");
    assert!(peak <= budget, "peak RSS {peak} bytes > {budget}");
    let info = fracture(&["info", "--json", "--model", s(&out)]);
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["parameters"].as_u64(), Some(LITE0_PARAMETERS));
}

// ---- 2. Outputs are never anything but regular files, and never an input. ----

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success());
}

fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

#[test]
fn export_and_import_never_replace_an_input_or_a_special_file() {
    let (_, model) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("c.safetensors");
    std::fs::copy(model, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    // The output is the model itself, by name, through a symbolic link, and a hard link.
    let link = dir.path().join("link.onnx");
    std::os::unix::fs::symlink(&copy, &link).unwrap();
    let hard = dir.path().join("hard.onnx");
    std::fs::hard_link(&copy, &hard).unwrap();
    for out in [&copy, &link, &hard] {
        let o = fracture(&["export", "--model", s(&copy), "--onnx", s(out)]);
        assert_one_line_error(&o, "is the input");
        assert_eq!(
            std::fs::read(&copy).unwrap(),
            before,
            "the model was changed"
        );
    }
    let o = fracture(&["import", "--from", s(&copy), "--out", s(&copy)]);
    assert_one_line_error(&o, "is the input");
    assert_eq!(std::fs::read(&copy).unwrap(), before);
    // A FIFO is refused (not replaced by a regular file, not opened).
    let fifo = dir.path().join("out.fifo");
    mkfifo(&fifo);
    let o = fracture(&["export", "--model", s(&copy), "--onnx", s(&fifo)]);
    assert_one_line_error(&o, "not a regular file");
    assert!(is_fifo(&fifo), "the FIFO was replaced");
    let o = fracture(&["import", "--from", s(&copy), "--out", s(&fifo)]);
    assert_one_line_error(&o, "not a regular file");
    assert!(is_fifo(&fifo), "the FIFO was replaced");
    // A folder is refused too; an absent path and a regular file are written.
    let o = fracture(&["export", "--model", s(&copy), "--onnx", s(dir.path())]);
    assert_one_line_error(&o, "not a regular file");
    let onnx = dir.path().join("m.onnx");
    let o = fracture(&["export", "--model", s(&copy), "--onnx", s(&onnx)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = fracture(&["export", "--model", s(&copy), "--onnx", s(&onnx)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Writing through a symbolic link to a regular file keeps the link.
    let to_onnx = dir.path().join("to.onnx");
    std::os::unix::fs::symlink(&onnx, &to_onnx).unwrap();
    let o = fracture(&["export", "--model", s(&copy), "--onnx", s(&to_onnx)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(std::fs::symlink_metadata(&to_onnx)
        .unwrap()
        .file_type()
        .is_symlink());
    // No temporary file is left behind.
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

// ---- 3. and 4. `serve` admits before it reads, bounds what it buffers, and times out. ----

/// Sends the head of `POST /api/predict` announcing `length` body bytes, and `first` bytes
/// of the body.
fn start_upload(addr: SocketAddr, length: usize, first: usize) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /api/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/png\r\nContent-Length: {length}\r\n\r\n"
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&vec![0u8; first]).unwrap();
    c
}

/// Reads until the server answers or closes, at most `limit`: the response head and body
/// read (possibly empty) and the time it took.
fn read_answer(c: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let t0 = Instant::now();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < limit {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if response_complete(&raw) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (String::from_utf8_lossy(&raw).into_owned(), t0.elapsed())
}

fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    raw.len() >= end + 4 + length
}

/// The JSON body of a raw response.
fn json_body(raw: &str) -> serde_json::Value {
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {raw:?}"))
}

#[test]
fn serve_refuses_with_503_before_reading_a_body_when_full() {
    let (_, model) = phantom_fixture();
    let server = Server::start(model, &["--slots", "1", "--queue", "0"]);
    // The only place is taken by an upload that has sent its head and 1 kB of 49 MB.
    let _holder = start_upload(server.addr, 49_000_000, 1000);
    std::thread::sleep(Duration::from_millis(500));
    // The next one is answered at once, without its body.
    let mut c = start_upload(server.addr, 49_000_000, 0);
    let (raw, took) = read_answer(&mut c, Duration::from_secs(10));
    assert!(raw.starts_with("HTTP/1.1 503"), "after {took:?}: {raw:?}");
    assert!(
        raw.to_ascii_lowercase().contains("retry-after: "),
        "{raw:?}"
    );
    assert!(json_body(&raw)["error"].as_str().unwrap().contains("busy"));
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn serve_caps_the_bytes_it_buffers_across_requests() {
    let (_, model) = phantom_fixture();
    let server = Server::start(
        model,
        &["--slots", "2", "--queue", "8", "--max-buffered-mb", "100"],
    );
    // Two admitted 49 MB uploads reserve 98 MB of the 100 MB: a third cannot be buffered.
    let _a = start_upload(server.addr, 49_000_000, 1000);
    let _b = start_upload(server.addr, 49_000_000, 1000);
    std::thread::sleep(Duration::from_millis(500));
    let mut c = start_upload(server.addr, 49_000_000, 0);
    let (raw, took) = read_answer(&mut c, Duration::from_secs(10));
    assert!(raw.starts_with("HTTP/1.1 503"), "after {took:?}: {raw:?}");
    assert!(
        raw.to_ascii_lowercase().contains("retry-after: "),
        "{raw:?}"
    );
    // A small upload still fits.
    let r = support::request(
        server.addr,
        "POST",
        "/api/predict",
        &[("Content-Type", "image/png")],
        support::synthetic_png(),
    );
    assert_eq!(r.status, 200, "{:?}", text(&r.body));
}

/// Resident memory of a running process in bytes: (now, peak since its `exec`); `None` once
/// it has exited.
fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// POSTs `body` (shared by the threads, not copied) as `image/png` and returns the status;
/// the body is written from another thread so that an early answer (503) is still read.
fn upload_shared(addr: SocketAddr, body: &std::sync::Arc<Vec<u8>>) -> u16 {
    let mut c = start_upload(addr, body.len(), 0);
    let mut writer = c.try_clone().unwrap();
    let body = std::sync::Arc::clone(body);
    let sender = std::thread::spawn(move || {
        for chunk in body.chunks(1 << 16) {
            if writer.write_all(chunk).is_err() {
                break;
            }
        }
    });
    let (raw, _) = read_answer(&mut c, Duration::from_secs(120));
    let _ = c.shutdown(std::net::Shutdown::Both);
    sender.join().unwrap();
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {raw:?}"))
}

#[test]
fn forty_parallel_49_mb_uploads_keep_the_server_small() {
    let (_, model) = phantom_fixture();
    let server = Server::start(model, &[]);
    let pid = server.child.id();
    // 49 MB behind a PNG signature: read in full by an admitted request, then refused as
    // corrupt (422); the others are refused (503) before their bodies are read.
    let mut body = b"\x89PNG\r\n\x1a\n".to_vec();
    body.resize(49_000_000, 7);
    let body = std::sync::Arc::new(body);
    let t0 = Instant::now();
    let threads: Vec<_> = (0..40)
        .map(|_| {
            let body = std::sync::Arc::clone(&body);
            let addr = server.addr;
            std::thread::spawn(move || upload_shared(addr, &body))
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let (now, peak) = rss(pid).expect("the server runs");
    eprintln!(
        "40 x 49 MB uploads in {took:?}: statuses {statuses:?}; server RSS peak {} MB, after {} MB",
        peak / 1_000_000,
        now / 1_000_000
    );
    assert!(
        statuses.iter().all(|s| [422, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(peak <= 600_000_000, "peak RSS {peak}");
    assert!(now <= 150_000_000, "RSS after the load {now}");
    assert_eq!(support::get(server.addr, "/healthz").status, 200);
}

#[test]
fn a_one_byte_per_second_body_is_cut_off_within_the_timeout() {
    let (_, model) = phantom_fixture();
    let server = Server::start(model, &["--timeout", "3"]);
    let mut c = start_upload(server.addr, 1000, 0);
    let mut writer = c.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..20 {
            if writer.write_all(b"x").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let (raw, took) = read_answer(&mut c, Duration::from_secs(12));
    eprintln!("1 byte/s body with --timeout 3: answered after {took:?}");
    assert!(took < Duration::from_secs(6), "cut off after {took:?}");
    assert!(raw.starts_with("HTTP/1.1 408"), "{raw:?}");
    assert!(json_body(&raw)["error"].as_str().unwrap().contains("3 s"));
    drop(c);
    trickle.join().unwrap();
}

#[test]
fn slow_headers_are_cut_off_within_the_timeout() {
    let (_, model) = phantom_fixture();
    let server = Server::start(model, &["--timeout", "3"]);
    let mut c = TcpStream::connect(server.addr).unwrap();
    c.write_all(b"POST /api/predict HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    let mut writer = c.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..20 {
            if writer.write_all(b"a").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let (_, took) = read_answer(&mut c, Duration::from_secs(12));
    eprintln!("1 byte/s headers with --timeout 3: closed after {took:?}");
    assert!(took < Duration::from_secs(6), "cut off after {took:?}");
    drop(c);
    trickle.join().unwrap();
}

#[test]
fn sigterm_exits_within_10_s_despite_a_slow_client() {
    let (_, model) = phantom_fixture();
    let server = Server::start(model, &["--timeout", "60"]);
    let c = start_upload(server.addr, 1_000_000, 10);
    let mut writer = c.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..30 {
            if writer.write_all(b"x").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let mut server = server;
    let kill = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(st) = server.child.try_wait().unwrap() {
            break Some(st);
        }
        if t0.elapsed() > Duration::from_secs(15) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = t0.elapsed();
    eprintln!("SIGTERM with a slow upload in flight: exited after {took:?}");
    assert!(took < Duration::from_secs(10), "exited after {took:?}");
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    drop(c);
    trickle.join().unwrap();
}

// ---- 5. `train --image-size` is bounded like every other command. ----

#[test]
fn train_refuses_an_image_size_over_1024_before_any_work() {
    let (data, _) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    for size in ["1025", "4096"] {
        // On a folder, as the audit found (the phantom generator has a bound of its own).
        let mut args = support::tiny_train_args(data, &run, "1", &[]);
        let i = args.iter().position(|a| *a == "--image-size").unwrap();
        args[i + 1] = size;
        let o = fracture(&args);
        assert_one_line_error(&o, "at most 1024");
        assert!(text(&o.stderr).contains(&format!("--image-size {size}")));
        assert!(!run.exists(), "a run folder was made");
    }
}

// ---- 6. An untrained classifier is never used silently. ----

#[test]
fn an_untrained_classifier_is_flagged_by_predict_and_serve() {
    let Some(pth) = lite0_pth() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("lite0.safetensors");
    let o = fracture(&[
        "import",
        "--from",
        s(&pth),
        "--out",
        s(&model),
        "--image-size",
        "64",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let png = dir.path().join("x.png");
    std::fs::write(&png, support::synthetic_png()).unwrap();
    let o = fracture(&["predict", "--model", s(&model), s(&png)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("warning: ") && err.contains("not trained"),
        "{err}"
    );
    let o = fracture(&["predict", "--json", "--model", s(&model), s(&png)]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["warning"].as_str().unwrap().contains("not trained"),
        "{v}"
    );
    // A trained model has no such warning.
    let (_, trained) = phantom_fixture();
    let o = fracture(&["predict", "--json", "--model", s(trained), s(&png)]);
    assert!(!text(&o.stdout).contains("not trained"));
    assert!(!text(&o.stderr).contains("not trained"));
    // The API's answers and model description, and the page's script, say it.
    let server = Server::start(&model, &[]);
    let r = support::request(
        server.addr,
        "POST",
        "/api/predict",
        &[("Content-Type", "image/png")],
        support::synthetic_png(),
    );
    assert_eq!(r.status, 200);
    assert!(r.json()["warning"]
        .as_str()
        .unwrap()
        .contains("not trained"));
    let m = support::get(server.addr, "/api/model").json();
    assert!(
        m["warning"].as_str().unwrap().contains("not trained"),
        "{m}"
    );
    let js = text(&support::get(server.addr, "/page.js").body);
    assert!(js.contains("warning"), "the page does not show the warning");
}

// ---- 7. `split` never writes inside its source. ----

#[test]
fn split_refuses_an_output_inside_its_source_and_the_reverse() {
    let (data, _) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("from");
    for class in ["fractured", "not_fractured"] {
        std::fs::create_dir_all(from.join(class)).unwrap();
        for e in std::fs::read_dir(data.join("train").join(class))
            .unwrap()
            .take(6)
        {
            let e = e.unwrap();
            std::fs::copy(e.path(), from.join(class).join(e.file_name())).unwrap();
        }
    }
    let listing = |p: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = Vec::new();
        let mut stack = vec![p.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p.clone());
                }
                v.push(p);
            }
        }
        v.sort();
        v
    };
    let before = listing(&from);
    for out in [from.join("splits"), from.join("fractured/x"), from.clone()] {
        let o = fracture(&["split", "--from", s(&from), "--out", s(&out), "--quiet"]);
        assert_one_line_error(&o, "inside");
        assert_eq!(
            listing(&from),
            before,
            "--out {} changed --from",
            out.display()
        );
    }
    let o = fracture(&[
        "split",
        "--from",
        s(&from),
        "--out",
        s(dir.path()),
        "--quiet",
    ]);
    assert_one_line_error(&o, "inside");
    assert_eq!(listing(&from), before);
}

// ---- 8. A multipart upload with two files is refused, not half-answered. ----

#[test]
fn a_two_file_multipart_upload_is_refused() {
    let (_, model) = phantom_fixture();
    let server = Server::start(model, &[]);
    let png = support::synthetic_png();
    let mut form = Vec::new();
    for name in ["a.png", "b.png"] {
        form.extend(
            format!("--XY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n")
                .as_bytes(),
        );
        form.extend(&png);
        form.extend(b"\r\n");
    }
    form.extend(b"--XY--\r\n");
    let r = support::request(
        server.addr,
        "POST",
        "/api/predict",
        &[("Content-Type", "multipart/form-data; boundary=XY")],
        form,
    );
    assert!([400, 422].contains(&r.status), "{}", r.status);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(msg.contains("2 files") && msg.contains("one"), "{msg}");
}

// ---- Smaller: messages in people's words, said once. ----

#[test]
fn info_and_the_api_describe_settings_in_words_not_type_names() {
    let (_, model) = phantom_fixture();
    let o = fracture(&["info", "--model", s(model)]);
    // The layer table names layers; the settings above it are in words.
    let out = text(&o.stdout);
    let out = out.split("\n\n").next().unwrap();
    for name in ["HFlip", "Letterbox", "Stretch", "Center", "None"] {
        assert!(!out.contains(name), "{name} in {out}");
    }
    let server = Server::start(model, &[]);
    let m = support::get(server.addr, "/api/model").json();
    let resize = m["resize_mode"].as_str().unwrap();
    assert_eq!(resize, resize.to_lowercase(), "{m}");
}

#[test]
fn a_conflicting_arch_is_named_as_on_the_command_line() {
    let (data, model) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let o = fracture(&[
        "train",
        "--data",
        s(data),
        "--out",
        s(&dir.path().join("run")),
        "--pretrained",
        s(model),
        "--arch",
        "residual",
        "--epochs",
        "1",
        "--quiet",
    ]);
    assert_one_line_error(&o, "--arch residual");
    let err = text(&o.stderr);
    assert!(err.contains("(plain)"), "{err}");
    assert!(!err.contains("Residual") && !err.contains("Plain"), "{err}");
}

#[test]
fn decode_limits_are_explained_without_type_names() {
    let (_, model) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let big = image::GrayImage::new(3000, 20);
    let p = dir.path().join("wide.png");
    big.save(&p).unwrap();
    let server = Server::start(model, &["--max-side", "1000"]);
    let r = support::request(
        server.addr,
        "POST",
        "/api/predict",
        &[("Content-Type", "image/png")],
        std::fs::read(&p).unwrap(),
    );
    assert_eq!(r.status, 413);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(!msg.contains("DecodeLimits"), "{msg}");
    // A corrupt PNG chunk is described, not dumped as a Rust value.
    let mut png = support::synthetic_png();
    let idat = png.windows(4).position(|w| w == b"IDAT").unwrap();
    png[idat + 6] ^= 0xFF; // breaks the chunk's checksum
    let r = support::request(
        server.addr,
        "POST",
        "/api/predict",
        &[("Content-Type", "image/png")],
        png,
    );
    assert_eq!(r.status, 422);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(!msg.contains("ChunkType") && !msg.contains('{'), "{msg}");
}

#[test]
fn every_error_status_of_serve_has_a_json_body() {
    let (_, model) = phantom_fixture();
    let server = Server::start(model, &[]);
    // 415 names every accepted kind, DICOM included.
    let r = support::request(
        server.addr,
        "POST",
        "/api/predict",
        &[("Content-Type", "image/png")],
        b"plain text, not an image".to_vec(),
    );
    assert_eq!(r.status, 415);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(msg.contains("DICOM"), "{msg}");
    // A URI and headers too long to handle.
    // (Beyond 64 KiB, hyper refuses the request line itself, with an empty body.)
    let long = format!("/api/predict?name={}", "a".repeat(20_000));
    let r = support::get(server.addr, &long);
    assert_eq!(r.status, 414);
    assert!(r.json()["error"].as_str().is_some());
    let filler = "x".repeat(100);
    let many: Vec<(String, String)> = (0..200)
        .map(|i| (format!("X-Filler-{i}"), filler.clone()))
        .collect();
    let headers: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = support::request(server.addr, "GET", "/healthz", &headers, Vec::new());
    assert_eq!(r.status, 431);
    assert!(r.json()["error"].as_str().is_some());
}

#[test]
fn counts_are_plural_only_when_plural_and_causes_are_said_once() {
    let (data, model) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    // One image in the test split.
    let one = dir.path().join("one");
    for class in ["fractured", "not_fractured"] {
        std::fs::create_dir_all(one.join("test").join(class)).unwrap();
    }
    let src = std::fs::read_dir(data.join("test/fractured"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&src, one.join("test/fractured/a.png")).unwrap();
    let o = fracture(&["predict", "--model", s(model), s(&src)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let all = text(&o.stdout) + &text(&o.stderr);
    // "1 images" only as the end of a rate such as "221.1 images/s".
    let plural_one = all.match_indices("1 images").any(|(i, _)| {
        let before = all.as_bytes().get(i.wrapping_sub(1)).copied();
        !before.is_some_and(|b| b.is_ascii_digit() || b == b'.')
    });
    assert!(all.contains("(1 image in") && !plural_one, "{all}");
    // A missing file: each cause once, each path once.
    let missing = dir.path().join("missing.safetensors");
    for args in [
        vec!["export", "--model", s(&missing), "--onnx", "x.onnx"],
        vec!["import", "--from", s(&missing), "--out", "x.safetensors"],
        vec!["eval", "--model", s(&missing), "--data", s(&one)],
        vec!["serve", "--model", s(&missing)],
        vec!["audit", "--data", s(&missing)],
        vec![
            "split",
            "--from",
            s(&missing),
            "--out",
            s(&dir.path().join("o")),
        ],
    ] {
        let o = fracture(&args);
        assert_one_line_error(&o, "missing");
        let err = text(&o.stderr);
        assert!(err.matches("(os error 2)").count() <= 1, "{err}");
        assert!(
            err.matches("No such file or directory").count() <= 1,
            "{err}"
        );
        assert_eq!(err.matches(s(&missing)).count(), 1, "{err}");
    }
}

#[test]
fn wrong_kinds_of_input_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // `export` given a PyTorch checkpoint points to `import`.
    let pth = dir.path().join("weights.pth");
    pth_zip(&pth, &state_dict_pickle(&[("w", "0", 4)]), &[("0", 16)]);
    let o = fracture(&[
        "export",
        "--model",
        s(&pth),
        "--onnx",
        s(&dir.path().join("w.onnx")),
    ]);
    assert_one_line_error(&o, "fracture import");
    assert!(!text(&o.stderr).contains("implausibly"));
    // `audit --data` given a file says it is a file.
    let o = fracture(&["audit", "--data", s(&pth)]);
    assert_one_line_error(&o, "is a file, not a folder");
}

// ---- Smaller: training that diverges, and Ctrl-C. ----

#[test]
fn a_huge_learning_rate_ends_with_a_divergence_message() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // Residual blocks with AdamW at lr 1e6 on 40 phantoms: the training losses stay finite
    // but the validation logits do not (the audit's "logit 0 of sample 0 is NaN").
    let o = fracture(&[
        "train",
        "--out",
        s(&run),
        "--phantoms",
        "40",
        "--epochs",
        "2",
        "--arch",
        "residual",
        "--lr",
        "1e6",
        "--quiet",
    ]);
    assert_one_line_error(&o, "training diverged");
    let err = text(&o.stderr);
    assert!(err.contains("(--lr)"), "{err}");
    assert!(
        !err.contains("cross-entropy") && !err.contains("logit"),
        "{err}"
    );
}

#[test]
fn ctrl_c_during_train_says_so_and_leaves_no_lock_behind() {
    let (data, _) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let args = support::tiny_train_args(data, &run, "200", &[]);
    let mut child = support::bin()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first checkpoint, then interrupt.
    let t0 = Instant::now();
    while !run.join("last.safetensors").exists() && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}: {err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains("--resume"), "{err}");
    // The next run on the folder finds no lock to take over.
    let o = support::train_tiny(data, &run, 1, &["--overwrite"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("lock"), "{}", text(&o.stderr));
}

// ---- Issue 29: DICOM objects that are not projection radiographs. ----

#[test]
fn predict_refuses_a_ct_naming_its_modality() {
    let Some(ct) =
        fracture_test_support::shared_path("datasets/dicom-sample/pydicom-test-files/CT_small.dcm")
    else {
        return;
    };
    let (_, model) = phantom_fixture();
    let o = fracture(&["predict", "--json", "--model", s(model), s(&ct)]);
    assert!(!o.status.success());
    let out = text(&o.stdout) + &text(&o.stderr);
    assert!(
        out.contains("modality CT (computed tomography) is not a projection radiograph"),
        "{out}"
    );
}

//! `fracture serve` over real HTTP, with the committed model: the page and the JSON API answer,
//! a prediction equals `fracture predict --json` for the same bytes, every bad request gets a
//! 4xx JSON error naming the problem, 50 requests at once on 2 slots all get a well-formed
//! answer (200, or 503 with `Retry-After`), the server keeps serving throughout, and SIGTERM
//! lets a request in flight finish.

mod support;

use std::sync::{Arc, Barrier};

use support::{committed_model, get, request, synthetic_png, Server};

fn predict_cli(path: &std::path::Path) -> serde_json::Value {
    let out = support::bin()
        .args(["predict", "--json", "--model"])
        .arg(committed_model())
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_error(r: &support::Response, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let msg = v["error"].as_str().expect("an error message");
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
}

#[test]
fn page_model_and_health() {
    let server = Server::start(&committed_model(), &[]);
    let r = get(server.addr, "/healthz");
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ok")));
    let page = get(server.addr, "/");
    assert_eq!(page.status, 200);
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains("not a medical device"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    for asset in ["/page.css", "/page.js"] {
        let r = get(server.addr, asset);
        assert_eq!(r.status, 200, "{asset}");
        let text = String::from_utf8(r.body).unwrap();
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{asset}"
        );
    }
    let m = get(server.addr, "/api/model").json();
    // What the page describes is what the model file says.
    let meta = fracture_nn::Classifier::read_meta(&committed_model()).unwrap();
    assert_eq!(m["input_size"], meta.model.image_size);
    assert_eq!(m["threshold"].as_f64(), Some(meta.threshold));
    assert_eq!(m["val_auc"].as_f64(), meta.provenance.val_auc);
    assert!(m["val_auc"].as_f64().unwrap() > 0.5);
    let arch = m["architecture"].as_str().unwrap();
    assert!(
        arch.starts_with(&meta.model.backbone().describe()),
        "{arch}"
    );
    if matches!(
        meta.model.kind(),
        fracture_nn::BlockKind::EfficientNetLite(_)
    ) {
        assert!(arch.starts_with("EfficientNet-Lite0"), "{arch}");
    }
    assert_error(&get(server.addr, "/nope"), 404, "no such route");
    assert_error(&get(server.addr, "/api/predict"), 405, "method not allowed");
}

#[test]
fn predictions_match_the_cli_raw_and_multipart() {
    let dir = tempfile::tempdir().unwrap();
    let png = synthetic_png();
    let file = dir.path().join("synthetic.png");
    std::fs::write(&file, &png).unwrap();
    let cli = predict_cli(&file);
    let server = Server::start(&committed_model(), &[]);

    let raw = request(
        server.addr,
        "POST",
        "/api/predict",
        &[("Content-Type", "image/png")],
        png.clone(),
    );
    assert_eq!(raw.status, 200);
    let v = raw.json();
    assert_eq!(v["path"], "upload");
    assert_eq!(
        v["p_fractured"], cli["p_fractured"],
        "same bytes, same number"
    );
    assert_eq!(v["label"], cli["label"]);
    assert!(v.get("heatmap").is_none());

    let mut form = b"--B0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"synthetic.png\"\r\nContent-Type: image/png\r\n\r\n".to_vec();
    form.extend_from_slice(&png);
    form.extend_from_slice(b"\r\n--B0undary--\r\n");
    let multi = request(
        server.addr,
        "POST",
        "/api/predict?heatmap=1",
        &[("Content-Type", "multipart/form-data; boundary=B0undary")],
        form,
    );
    assert_eq!(multi.status, 200);
    let v = multi.json();
    assert_eq!(v["path"], "synthetic.png");
    assert_eq!(v["p_fractured"], cli["p_fractured"]);
    let url = v["heatmap"].as_str().unwrap();
    assert!(
        url.starts_with("data:image/png;base64,iVBORw0KGgo"),
        "{}",
        &url[..40]
    );
    assert!(v["ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn bad_requests_get_json_errors_and_the_server_keeps_serving() {
    let server = Server::start(&committed_model(), &[]);
    let png = synthetic_png();
    let post = |headers: &[(&str, &str)], body: Vec<u8>| {
        request(server.addr, "POST", "/api/predict", headers, body)
    };
    // A PNG cut in half: corrupt.
    let r = post(
        &[("Content-Type", "image/png")],
        png[..png.len() / 2].to_vec(),
    );
    assert_error(&r, 422, "upload");
    // Bytes that are no image at all.
    assert_error(
        &post(&[], b"hello, not an image".to_vec()),
        415,
        "not an image",
    );
    // Nothing.
    assert_error(
        &post(&[("Content-Type", "image/png")], Vec::new()),
        400,
        "empty body",
    );
    // A content type the API does not take.
    assert_error(
        &post(&[("Content-Type", "text/plain")], png.clone()),
        415,
        "text/plain",
    );
    // Multipart without a file.
    let form =
        b"--x\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--x--\r\n".to_vec();
    assert_error(
        &post(&[("Content-Type", "multipart/form-data; boundary=x")], form),
        400,
        "without a file field",
    );
    // 60 MB, over the default 50 MB limit.
    let r = post(
        &[("Content-Type", "application/octet-stream")],
        vec![0u8; 60_000_000],
    );
    assert_error(&r, 413, "larger than");
    // Still serving, and still right.
    assert_eq!(get(server.addr, "/healthz").status, 200);
    assert_eq!(post(&[("Content-Type", "image/png")], png).status, 200);
}

#[test]
fn decoded_size_limit_applies() {
    let server = Server::start(&committed_model(), &["--max-side", "100"]);
    let r = request(
        server.addr,
        "POST",
        "/api/predict",
        &[("Content-Type", "image/png")],
        synthetic_png(),
    );
    assert_error(&r, 413, "384");
}

#[test]
fn fifty_requests_at_once_on_two_slots() {
    let server = Server::start(&committed_model(), &["--slots", "2", "--queue", "4"]);
    let addr = server.addr;
    let png = Arc::new(synthetic_png());
    let start = Arc::new(Barrier::new(50));
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let (png, start) = (Arc::clone(&png), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                request(
                    addr,
                    "POST",
                    "/api/predict?heatmap=1",
                    &[("Content-Type", "image/png")],
                    png.to_vec(),
                )
            })
        })
        .collect();
    let (mut ok, mut busy) = (0, 0);
    let mut p = None;
    for t in threads {
        let r = t.join().expect("every request gets an answer");
        let v = r.json();
        match r.status {
            200 => {
                ok += 1;
                let got = v["p_fractured"].as_f64().unwrap();
                assert_eq!(*p.get_or_insert(got), got, "same image, same answer");
            }
            503 => {
                busy += 1;
                assert!(v["error"].as_str().unwrap().contains("busy"));
                assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("1"));
            }
            s => panic!("unexpected status {s}: {v}"),
        }
    }
    eprintln!("50 requests at once: {ok} answered, {busy} turned away with 503");
    assert_eq!(ok + busy, 50);
    assert!(ok >= 2, "at least the two slots' worth is served");
    assert!(busy > 0, "2 slots + 4 queued cannot take 50 at once");
    assert_eq!(get(addr, "/healthz").status, 200);
    assert_eq!(
        request(
            addr,
            "POST",
            "/api/predict",
            &[("Content-Type", "image/png")],
            png.to_vec()
        )
        .status,
        200
    );
}

#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    let server = Server::start(&committed_model(), &[]);
    let addr = server.addr;
    let png = synthetic_png();
    let in_flight = std::thread::spawn(move || {
        request(
            addr,
            "POST",
            "/api/predict?heatmap=1",
            &[("Content-Type", "image/png")],
            png,
        )
    });
    // Give the request time to arrive, then ask the server to stop.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let exit = server.terminate();
    let r = in_flight.join().unwrap();
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(exit.success(), "{exit:?}");
}

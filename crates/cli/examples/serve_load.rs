//! A bounded load run against a running `fracture serve`: N requests, C at a time, each
//! `POST /api/predict` of the same image; prints requests per second and latency percentiles.
//!
//! ```text
//! fracture serve --model models/fracatlas.safetensors --addr 127.0.0.1:8080 &
//! cargo run --release -p fracture-cli --example serve_load -- 127.0.0.1:8080 [image] [requests] [concurrency] [heatmap]
//! ```
//!
//! Without an image it sends a synthetic 384 px PNG. Defaults: 1000 requests, 4 at a time, no
//! heatmap. Requests turned away with 503 (the server's queue was full) are counted apart.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn synthetic_png() -> Vec<u8> {
    let img = image::GrayImage::from_fn(384, 384, |x, y| {
        let d = (x as i32 - y as i32).abs();
        image::Luma([if d < 40 { 200 - d as u8 } else { 30 }])
    });
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encode PNG");
    png
}

/// One `POST /api/predict`; the HTTP status.
fn post(addr: SocketAddr, path: &str, body: &[u8]) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let head = String::from_utf8_lossy(&raw[..raw.len().min(32)]).into_owned();
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("malformed response {head:?}")))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr: SocketAddr = args
        .first()
        .map_or("127.0.0.1:8080", String::as_str)
        .parse()?;
    let image = match args.get(1).filter(|a| a.as_str() != "-") {
        Some(p) => std::fs::read(p)?,
        None => synthetic_png(),
    };
    let total: usize = args.get(2).map_or(Ok(1000), |a| a.parse())?;
    let conc: usize = args.get(3).map_or(Ok(4), |a| a.parse())?;
    let path = match args.get(4).map(String::as_str) {
        Some("heatmap") => "/api/predict?heatmap=1",
        _ => "/api/predict",
    };
    let image = Arc::new(image);
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let busy = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..conc)
        .map(|_| {
            let (image, next, latencies, busy, failed) = (
                Arc::clone(&image),
                Arc::clone(&next),
                Arc::clone(&latencies),
                Arc::clone(&busy),
                Arc::clone(&failed),
            );
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::SeqCst) < total {
                    let t = Instant::now();
                    match post(addr, path, &image) {
                        Ok(200) => latencies.lock().unwrap().push(t.elapsed().as_secs_f64()),
                        Ok(503) => {
                            busy.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker thread");
    }
    let wall = start.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        l.get(((l.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |v| v * 1000.0)
    };
    println!(
        "{} requests ({} bytes each, {path}), {conc} at a time: {} ok, {} busy (503), {} failed in {wall:.1} s",
        total,
        image.len(),
        l.len(),
        busy.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst)
    );
    println!(
        "{:.1} requests/s; latency p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        l.len() as f64 / wall,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}

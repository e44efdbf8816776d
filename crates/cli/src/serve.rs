//! `fracture serve`: a web page and a JSON API over one model file.
//!
//! The server is [axum](https://docs.rs/axum) on a [tokio](https://docs.rs/tokio) runtime: axum
//! because it is a thin layer over hyper (the HTTP implementation most Rust servers share) whose
//! extractors turn a bad request into a typed rejection we can answer with JSON, and tokio
//! because axum runs on it and it gives signals, timeouts, a semaphore and `spawn_blocking` for
//! the CPU-bound inference. Only the features in use are compiled (HTTP/1, JSON, query strings);
//! multipart uploads are parsed by [`multipart`] rather than by axum's `multipart` feature.
//! The accept loop, the checks of a request's head and the shutdown are in [`connections`]; the
//! page and the model's description in [`page`](mod@page); this file holds the routes and the inference.
//!
//! Routes:
//!
//! - `GET /`: the page (HTML, CSS and JavaScript embedded in the binary, nothing fetched from
//!   elsewhere, so it works offline);
//! - `POST /api/predict[?heatmap=1][&name=NAME]`: the image as the raw body, or multipart
//!   form-data with a file field; answers `{"path", "p_fractured", "label"}` as
//!   `fracture predict --json` prints it, plus `threshold` and `ms` (server time), and with
//!   `heatmap=1` also `heatmap` (the Grad-CAM overlay as a PNG data URL) and `peak`;
//! - `GET /api/model`: the model's description;
//! - `GET /healthz`: `{"status": "ok"}`.
//!
//! Every error is `{"error": "..."}` with a 4xx status (5xx only for the server's own faults).
//! Limits: the body size (`--max-body-mb`), the decoded image size (the model's
//! [`DecodeLimits`](fracture_nn::data::DecodeLimits), tightened by `--max-side`), `--slots`
//! inferences at once (each slot owns its copy of the network) with at most `--queue` requests
//! waiting for a slot (beyond that, 503 with `Retry-After`), and a per-request `--timeout`.
//! Inference runs in `spawn_blocking` under `catch_unwind`, so neither a slow nor a panicking
//! request stops the server. Nothing is written to disk: uploads are decoded from memory by
//! [`load_resized_from_memory`], the same decode and resize as for files. One line per request
//! goes to stderr (method, path, status, milliseconds; never image content). Ctrl-C or SIGTERM
//! stops accepting connections and lets the requests in flight finish.
//!
//! Research software, not a medical device.

mod connections;
mod multipart;
mod page;

use std::io::Write;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use fracture_nn::data::{load_resized_from_memory, standardise, DataError, PreprocessConfig};
use fracture_nn::overlay::{render_overlay, OverlayConfig, Probability};
use fracture_nn::prediction_record::PredictionRecord;
use fracture_nn::{Classifier, GradCam};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use connections::{check_head, log_request, serve_until, shutdown_signal};
use page::{css, describe, js, page};

/// Arguments of `fracture serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Model file (model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on; port 0 picks a free port (the bound address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Inferences running at once (each slot holds its own copy of the network).
    #[arg(long, default_value_t = 2)]
    slots: usize,
    /// Requests that may wait for a free slot; beyond that the answer is 503 with Retry-After.
    #[arg(long, default_value_t = 8)]
    queue: usize,
    /// Largest request body in MB (10^6 bytes).
    #[arg(long, default_value_t = 50)]
    max_body_mb: usize,
    /// Largest image width or height in pixels (default: the model file's decode limits).
    #[arg(long)]
    max_side: Option<u32>,
    /// Largest total of request bodies held in memory at once, in MB: a request that would
    /// go over it is answered 503 (with Retry-After) before its body is read.
    #[arg(long, default_value_t = 200)]
    max_buffered_mb: usize,
    /// Seconds a client has to send a request's headers, and a prediction request to be
    /// received and answered (waiting for a slot included); beyond it, 408 or 503.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Worker threads of the network's parallel loops (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// One inference slot: a network and, once a heatmap has been asked for, its Grad-CAM twin.
struct Worker {
    clf: Classifier,
    cam: Option<GradCam>,
}

struct AppState {
    /// `GET /api/model`.
    description: Value,
    threshold: f64,
    preprocess: PreprocessConfig,
    workers: Mutex<Vec<Worker>>,
    slots: Arc<Semaphore>,
    /// Prediction requests admitted (receiving their body, running or waiting for a slot).
    admitted: AtomicUsize,
    capacity: usize,
    timeout: Duration,
    /// Bytes of request bodies that may be held at once, one permit per byte.
    buffer: Arc<Semaphore>,
    /// Largest request body in bytes.
    body_limit: usize,
    /// Set when the model's classifier was never trained (see [`crate::predict::untrained_warning`]).
    warning: Option<String>,
}

/// A JSON error answer: `{"error": message}` with `status` (and `Retry-After` on 503).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<DataError> for ApiError {
    fn from(e: DataError) -> Self {
        let status = match &e {
            DataError::UnknownFormat { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            DataError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DataError::Corrupt { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        let message = match &e {
            DataError::UnknownFormat { path } => format!(
                "{}: not an image this server reads (PNG, JPEG, GIF, BMP, TIFF, WebP or DICOM)",
                path.display()
            ),
            other => other.to_string(),
        };
        ApiError::new(status, message)
    }
}

/// Runs `fracture serve` until Ctrl-C or SIGTERM.
pub fn run(a: ServeArgs) -> Result<ExitCode> {
    if a.slots == 0 {
        bail!("--slots must be at least 1");
    }
    if a.max_body_mb == 0 {
        bail!("--max-body-mb must be at least 1");
    }
    if a.timeout == 0 {
        bail!("--timeout must be at least 1 second");
    }
    if a.max_buffered_mb < a.max_body_mb {
        bail!(
            "--max-buffered-mb {} is below --max-body-mb {}: one upload of the largest size could never be received",
            a.max_buffered_mb,
            a.max_body_mb
        );
    }
    crate::checks::set_threads(a.threads)?;
    let mut workers = Vec::with_capacity(a.slots);
    for _ in 0..a.slots {
        let clf = Classifier::load(&a.model)?;
        workers.push(Worker { clf, cam: None });
    }
    let clf = &workers[0].clf;
    let mut preprocess = clf.meta.preprocess;
    if let Some(side) = a.max_side {
        preprocess.limits.max_width = preprocess.limits.max_width.min(side);
        preprocess.limits.max_height = preprocess.limits.max_height.min(side);
    }
    let body_limit = a.max_body_mb * 1_000_000;
    let warning = crate::predict::untrained_warning(&clf.meta);
    if let Some(w) = &warning {
        eprintln!("warning: {}: {w}", a.model.display());
    }
    let state = Arc::new(AppState {
        description: describe(clf, &a.model, warning.as_deref()),
        threshold: clf.meta.threshold,
        preprocess,
        workers: Mutex::new(workers),
        slots: Arc::new(Semaphore::new(a.slots)),
        admitted: AtomicUsize::new(0),
        capacity: a.slots + a.queue,
        timeout: Duration::from_secs(a.timeout),
        buffer: Arc::new(Semaphore::new(
            a.max_buffered_mb
                .saturating_mul(1_000_000)
                .min(Semaphore::MAX_PERMITS),
        )),
        body_limit,
        warning,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.addr)
            .await
            .with_context(|| format!("cannot listen on {}", a.addr))?;
        // Listen for SIGTERM before announcing the address, so that a supervisor's stop
        // request is never lost.
        let shutdown = shutdown_signal()?;
        let bound = listener.local_addr()?;
        println!("listening on http://{bound}");
        std::io::stdout().flush().ok();
        eprintln!(
            "model {}; {} slot(s), queue {}, body limit {} MB, {} MB of bodies at once, timeout {} s; Ctrl-C stops",
            a.model.display(),
            a.slots,
            a.queue,
            a.max_body_mb,
            a.max_buffered_mb,
            a.timeout
        );
        let timeout = Duration::from_secs(a.timeout);
        serve_until(listener, router(state, body_limit), timeout, shutdown).await;
        anyhow::Ok(())
    })?;
    // Inference still running past the deadline is not waited for.
    runtime.shutdown_timeout(Duration::from_millis(500));
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/page.css", get(css))
        .route("/page.js", get(js))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/api/model", get(model_info))
        .route("/api/predict", post(predict))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(check_head))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

async fn model_info(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(state.description.clone())
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct PredictQuery {
    /// `1` or `true`: also return the Grad-CAM overlay.
    heatmap: Option<String>,
    /// Name of a raw-body upload (default "upload").
    name: Option<String>,
}

/// Releases an admission when the request ends, however it ends.
struct Admission<'a>(&'a AtomicUsize);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn predict(
    State(state): State<Arc<AppState>>,
    query: Result<Query<PredictQuery>, QueryRejection>,
    req: Request,
) -> Result<Json<PredictionRecord>, ApiError> {
    let start = Instant::now();
    let Query(query) = query.map_err(|r| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("bad query string: {}", r.body_text()),
        )
    })?;
    let heatmap = matches!(query.heatmap.as_deref(), Some("1" | "true" | "yes"));
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than the server's limit (--max-body-mb)",
        )
    };
    let length = match req.headers().get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad Content-Length"))?,
        ),
    };
    if length.is_some_and(|n| n > state.body_limit) {
        return Err(too_large());
    }

    // Admitted (a slot or a queue place) and memory reserved before any of the body is read:
    // a busy server answers at once instead of buffering uploads it cannot serve.
    let busy = |what: &str| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the server is busy ({what}): retry shortly"),
        )
    };
    if state.admitted.fetch_add(1, Ordering::SeqCst) >= state.capacity {
        state.admitted.fetch_sub(1, Ordering::SeqCst);
        return Err(busy("all inference slots and the queue are full"));
    }
    let _admission = Admission(&state.admitted);
    // A body of unknown length may grow to the limit.
    let reserve = length.unwrap_or(state.body_limit).max(1);
    let _buffered = u32::try_from(reserve)
        .ok()
        .and_then(|n| Arc::clone(&state.buffer).try_acquire_many_owned(n).ok())
        .ok_or_else(|| busy("too many uploads are held in memory"))?;

    let timeout = state.timeout;
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, state.body_limit);
    let body = match tokio::time::timeout(timeout, http_body_util::BodyExt::collect(limited)).await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) => {
            let limit = e.is::<http_body_util::LengthLimitError>();
            return Err(if limit {
                too_large()
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
            });
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s (--timeout)",
                    timeout.as_secs()
                ),
            ))
        }
    };
    let (bytes, name) = upload(&parts.headers, body, query.name)?;

    let remaining = timeout.saturating_sub(start.elapsed());
    let work = {
        let state = Arc::clone(&state);
        async move {
            let permit = Arc::clone(&state.slots)
                .acquire_owned()
                .await
                .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
            tokio::task::spawn_blocking(move || {
                // The slot stays taken until the network is back in the pool, even if the
                // request has timed out meanwhile.
                let _permit = permit;
                let mut worker = lock(&state.workers)
                    .pop()
                    .expect("a slot permit guarantees a free worker");
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    infer(
                        &mut worker,
                        &bytes,
                        &name,
                        &state.preprocess,
                        state.threshold,
                        heatmap,
                        state.warning.as_deref(),
                    )
                }));
                lock(&state.workers).push(worker);
                result.unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("inference failed on {name}: {what}"),
                    ))
                })
            })
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        }
    };
    match tokio::time::timeout(remaining, work).await {
        Ok(result) => result.map(Json),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no answer within {} s (the server is busy): retry shortly",
                timeout.as_secs()
            ),
        )),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The image bytes and their name from a raw or multipart body.
fn upload(
    headers: &HeaderMap,
    body: Bytes,
    name: Option<String>,
) -> Result<(Bytes, String), ApiError> {
    // The media type is compared in lower case; the boundary keeps its case.
    let raw_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or(""));
    let content_type = raw_type.map(str::to_ascii_lowercase);
    let (bytes, name) = match content_type.as_deref() {
        Some(ct) if ct.starts_with("multipart/form-data") => {
            let boundary = multipart::boundary(raw_type.unwrap_or("")).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "multipart/form-data without a boundary",
                )
            })?;
            let file = multipart::first_file(&body, &boundary)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
            let name = file.filename.unwrap_or_else(|| "upload".into());
            (body.slice(file.range), name)
        }
        None => (body, name.unwrap_or_else(|| "upload".into())),
        Some(ct)
            if ct.starts_with("image/")
                || ct.starts_with("application/octet-stream")
                || ct.starts_with("application/dicom") =>
        {
            (body, name.unwrap_or_else(|| "upload".into()))
        }
        Some(ct) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content type {ct:?} is not accepted: send the image as the body (image/png, \
                     image/jpeg, application/octet-stream) or as multipart/form-data"
                ),
            ))
        }
    };
    if bytes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty body: send an image as the request body or as a multipart file field",
        ));
    }
    Ok((bytes, clean_name(&name)))
}

/// The last path component of an upload's name, at most 200 characters, never empty.
fn clean_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let base: String = base.chars().filter(|c| !c.is_control()).take(200).collect();
    if base.is_empty() {
        "upload".into()
    } else {
        base
    }
}

/// Decodes, classifies and optionally explains one upload, exactly as `fracture predict`
/// treats a file with the same bytes.
fn infer(
    w: &mut Worker,
    bytes: &[u8],
    name: &str,
    preprocess: &PreprocessConfig,
    threshold: f64,
    heatmap: bool,
    warning: Option<&str>,
) -> Result<PredictionRecord, ApiError> {
    let start = Instant::now();
    let internal = |e: fracture_nn::Error| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{name}: {e}"))
    };
    let gray = load_resized_from_memory(bytes, Path::new(name), preprocess)?;
    let x = standardise(&gray, &w.clf.meta.normalization);
    let p = w.clf.predict_batch(&x, 1).map_err(internal)?[0];
    let label = w.clf.label(p, Some(threshold)).to_string();
    let typicality = w.clf.last_typicality().and_then(|t| t.first().copied());
    // A model-wide warning (an untrained classifier) comes before the image's own.
    let mut v = PredictionRecord::scored(name, p, label, typicality, warning.map(String::from));
    v.threshold = Some(threshold);
    if let Ok(Some(uid)) =
        fracture_nn::data::dicom::sop_instance_uid_from_memory(bytes, Path::new(name))
    {
        v.sop_instance_uid = Some(uid); // DICOM: match back to the archive, as predict --json does
    }
    if heatmap {
        if w.cam.is_none() {
            w.cam = Some(GradCam::new(&w.clf).map_err(internal)?);
        }
        let cam = w.cam.as_mut().expect("just set");
        let heat = cam.heatmap(&x).map_err(internal)?;
        let img = render_overlay(
            &gray,
            &heat,
            Some(Probability { p, threshold }),
            &OverlayConfig::default(),
        )
        .map_err(internal)?;
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        v.heatmap = Some(format!("data:image/png;base64,{}", base64(&png)));
        v.heatmap_kind = Some(
            if w.clf.meta.model.mask_head {
                "fracture map (the model's box-mask head)"
            } else {
                "Grad-CAM"
            }
            .into(),
        );
        v.peak = Some(heat.peak);
    }
    v.ms = Some(start.elapsed().as_secs_f64() * 1000.0);
    Ok(v)
}

use fracture_nn::validation_report::base64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn upload_names_lose_their_folders() {
        assert_eq!(clean_name("C:\\x\\scan.png"), "scan.png");
        assert_eq!(clean_name("a/b/../c.jpg"), "c.jpg");
        assert_eq!(clean_name("dir/"), "upload");
    }
}

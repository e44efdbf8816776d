//! The connections of `fracture serve`: hyper's accept loop with a header read timeout and a
//! shutdown deadline, the checks of a request's head, one log line per request, and Ctrl-C or
//! SIGTERM.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::ApiError;

/// How long requests in flight may take to finish after Ctrl-C or SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Longest request target (path and query) in bytes; longer is a 414 with a JSON body.
const MAX_URI_BYTES: usize = 8 * 1024;

/// Most header fields, and most header bytes, of a request; more is a 431 with a JSON body.
const MAX_HEADERS: usize = 100;
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Accepts connections until `shutdown` resolves, then lets the requests in flight finish for
/// at most [`SHUTDOWN_GRACE`] and drops the rest.
///
/// Each connection is HTTP/1.1 served by hyper with a header read timeout of `timeout` (a
/// client must send a request's headers within it, so a slow or silent client cannot hold a
/// connection); axum's own `serve` has no such setting. hyper's own limits are set above this
/// server's ([`MAX_URI_BYTES`], [`MAX_HEADERS`]), so that the usual oversized requests reach
/// [`check_head`] and get a JSON error; only a request line over 64 KiB or a head over hyper's
/// 400 KB buffer is answered by hyper itself, with an empty body.
pub(super) async fn serve_until(
    listener: tokio::net::TcpListener,
    app: Router,
    timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let (close_tx, close_rx) = tokio::sync::watch::channel(());
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    eprintln!("warning: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let service = TowerToHyperService::new(app.clone());
        let mut close_rx = close_rx.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .max_headers(4 * MAX_HEADERS);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = close_rx.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    drop(close_tx);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!(
            "shutting down: {} connection(s) still open after {} s are closed",
            connections.len(),
            SHUTDOWN_GRACE.as_secs()
        );
        connections.abort_all();
    }
}

/// 414 and 431 with a JSON body, like every other error, for a request target or headers
/// larger than this server takes.
pub(super) async fn check_head(req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!(
                "the request target is {target} bytes long; at most {MAX_URI_BYTES} are accepted"
            ),
        )
        .into_response();
    }
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "{} header fields ({bytes} bytes); at most {MAX_HEADERS} fields and {MAX_HEADER_BYTES} bytes are accepted",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// One stderr line per request: method, path, status, milliseconds.
pub(super) async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    eprintln!(
        "{method} {path} {} {} ms",
        response.status().as_u16(),
        start.elapsed().as_millis()
    );
    response
}

/// Resolves on Ctrl-C or SIGTERM. The SIGTERM handler is installed when this is called.
pub(super) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    Ok(async move {
        #[cfg(unix)]
        let term = async move {
            term.recv().await;
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term => {},
        }
        eprintln!(
            "shutting down: finishing the requests in flight (at most {} s)",
            SHUTDOWN_GRACE.as_secs()
        );
    })
}

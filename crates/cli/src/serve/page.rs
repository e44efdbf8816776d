//! The page of `fracture serve` (HTML, CSS and JavaScript embedded in the binary, nothing
//! fetched from elsewhere) and the model's description that `/api/model` returns and the page
//! shows.

use std::path::Path;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use fracture_nn::layers::Layer;
use fracture_nn::Classifier;
use serde_json::{json, Value};

const PAGE_HTML: &str = include_str!("page.html");
const PAGE_CSS: &str = include_str!("page.css");
const PAGE_JS: &str = include_str!("page.js");

/// The notice shown on the page and returned by `/api/model`.
pub const NOTICE: &str =
    "Research software, not a medical device: never use its output for diagnosis.";

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Everything the page needs comes from this server; uploads show as blob: URLs and
            // overlays as data: URLs.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data: blob:; object-src 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn page() -> Response {
    static_file("text/html; charset=utf-8", PAGE_HTML)
}

pub(super) async fn css() -> Response {
    static_file("text/css; charset=utf-8", PAGE_CSS)
}

pub(super) async fn js() -> Response {
    static_file("text/javascript; charset=utf-8", PAGE_JS)
}

/// The model's description for `/api/model` and the page's side panel.
pub(super) fn describe(clf: &Classifier, path: &Path, warning: Option<&str>) -> Value {
    let m = &clf.meta;
    let architecture = format!(
        "{}, {}",
        m.model.backbone().describe(),
        m.model.head.describe()
    );
    let p = &m.provenance;
    let mut v = json!({
        "file": path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "architecture": architecture,
        "members": m.model.members,
        "parameters": clf.net.num_params(),
        "input_size": m.model.image_size,
        "resize_mode": m.preprocess.resize_mode.name(),
        "class_names": m.class_names,
        "positive_class": m.class_names.get(m.positive_class),
        "threshold": m.threshold,
        "threshold_rule": m.threshold_rule,
        "tta": m.tta.to_string(),
        "val_auc": p.val_auc,
        "provenance": p,
        "notice": NOTICE,
    });
    if let Some(w) = warning {
        v["warning"] = json!(w);
    }
    v
}

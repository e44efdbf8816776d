//! One image's result as JSON: what `fracture predict --json` prints, what `predict --out`
//! appends to a results file ([`crate::results_log`]) and reads back on `--resume`, and what
//! `fracture serve` answers on `POST /api/predict`.
//!
//! A [`PredictionRecord`] is either scored (`path`, `p_fractured`, `label`, `typicality`, and
//! optionally a DICOM `sop_instance_uid`, a `warning`, a heatmap and, from the server,
//! `threshold` and `ms`) or failed (`path` and `error`). Absent fields are left out, never
//! written as `null`; the keys come out in alphabetical order (the fields are declared in that
//! order), as they did when the objects were built as `serde_json::Value` maps.

use serde::{Deserialize, Deserializer, Serialize};

use crate::typicality::{Typicality, ATYPICAL_WARNING};

/// One image's result (see the module docs).
///
/// ```
/// use fracture_nn::prediction_record::PredictionRecord;
/// let scored = PredictionRecord::scored("a.png", 0.75, "fractured", None, None);
/// assert_eq!(
///     scored.to_line(),
///     r#"{"label":"fractured","p_fractured":0.75,"path":"a.png","typicality":{"note":"this model file has no typicality reference (written before it existed): it cannot judge","score":null,"typical":null}}"#
/// );
/// let failed = PredictionRecord::failed("b.png", "b.png: not a recognised image");
/// assert_eq!(failed.to_line(), r#"{"error":"b.png: not a recognised image","path":"b.png"}"#);
/// assert_eq!(PredictionRecord::from_line(failed.to_line().as_bytes())?, failed);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord {
    /// Why the file could not be classified (a failed record holds only this and `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The heatmap: the overlay PNG written (`predict --heatmap`), or the overlay as a PNG data
    /// URL (`serve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heatmap: Option<String>,
    /// Why the overlay could not be written (the image is still scored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heatmap_error: Option<String>,
    /// What the heatmap shows (`serve`): Grad-CAM or the model's box-mask map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heatmap_kind: Option<String>,
    /// The class name at the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Server time in milliseconds (`serve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<f64>,
    /// P(fractured), under the model's test-time augmentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_fractured: Option<f64>,
    /// The file as the input named it (escaped as `predict` prints paths), or the upload's
    /// name: the key by which a results file recognises a file.
    pub path: String,
    /// With a heatmap: its peak as `[x, y]` pixels of the model's input, or `null` for a flat
    /// map.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub peak: Option<Option<[usize; 2]>>,
    /// The SOP Instance UID of a DICOM file, to match the result back to the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sop_instance_uid: Option<String>,
    /// The threshold the label was taken at (`serve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// How typical the image is of the training radiographs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typicality: Option<TypicalityRecord>,
    /// What a person must know before reading the probability (an atypical or blank image, a
    /// classifier that was never trained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl PredictionRecord {
    /// A scored image. `warning` (about the input or the model) is kept; without one, an
    /// atypical image gets [`ATYPICAL_WARNING`].
    pub fn scored(
        path: impl Into<String>,
        p_fractured: f64,
        label: impl Into<String>,
        typicality: Option<Typicality>,
        warning: Option<String>,
    ) -> PredictionRecord {
        let atypical = typicality.is_some_and(|t| !t.typical);
        PredictionRecord {
            path: path.into(),
            p_fractured: Some(p_fractured),
            label: Some(label.into()),
            typicality: Some(TypicalityRecord::from(typicality)),
            warning: warning.or_else(|| atypical.then(|| ATYPICAL_WARNING.to_string())),
            ..PredictionRecord::default()
        }
    }

    /// A file that could not be classified.
    pub fn failed(path: impl Into<String>, error: impl Into<String>) -> PredictionRecord {
        PredictionRecord {
            path: path.into(),
            error: Some(error.into()),
            ..PredictionRecord::default()
        }
    }

    /// The record as one line of JSON (without the newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a prediction record always serialises")
    }

    /// A record read back from one line of JSON.
    pub fn from_line(line: &[u8]) -> Result<PredictionRecord, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

/// The `typicality` object of a record: the score and verdict, or `null`s and a note when the
/// model file has no typicality reference.
///
/// ```
/// use fracture_nn::prediction_record::TypicalityRecord;
/// use fracture_nn::typicality::Typicality;
/// let t = TypicalityRecord::from(Some(Typicality { score: 0.5, typical: true }));
/// assert_eq!(serde_json::to_string(&t)?, r#"{"score":0.5,"typical":true}"#);
/// assert!(TypicalityRecord::from(None).note.is_some());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TypicalityRecord {
    /// Why there is no score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The k-NN score (lower is more typical), widened from `f32` as results have always been
    /// written.
    pub score: Option<f64>,
    /// Whether the score is at or below the model's 99th validation percentile.
    pub typical: Option<bool>,
}

/// Why a record has no typicality score.
pub const NO_TYPICALITY_NOTE: &str =
    "this model file has no typicality reference (written before it existed): it cannot judge";

impl From<Option<Typicality>> for TypicalityRecord {
    fn from(t: Option<Typicality>) -> Self {
        match t {
            Some(t) => TypicalityRecord {
                note: None,
                score: Some(f64::from(t.score)),
                typical: Some(t.typical),
            },
            None => TypicalityRecord {
                note: Some(NO_TYPICALITY_NOTE.to_string()),
                score: None,
                typical: None,
            },
        }
    }
}

/// A field that is present is `Some`, even when it is `null` (`"peak": null`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<[usize; 2]>>, D::Error> {
    Option::<[usize; 2]>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The objects as `predict` and `serve` built them before this type existed, as
    /// `serde_json::Value` maps: the record writes the same bytes.
    #[test]
    fn records_write_the_bytes_the_value_maps_wrote() {
        let t = Typicality {
            score: 0.123_456_79,
            typical: false,
        };
        let mut r = PredictionRecord::scored("x/a.dcm", 0.1 + 0.2, "not_fractured", Some(t), None);
        r.sop_instance_uid = Some("1.2.3".into());
        r.heatmap = Some("out/a.gradcam.png".into());
        r.peak = Some(None);
        r.threshold = Some(0.37);
        r.heatmap_kind = Some("Grad-CAM".into());
        r.ms = Some(12.5);
        let mut v = json!({"path": "x/a.dcm", "p_fractured": 0.1 + 0.2, "label": "not_fractured"});
        v["sop_instance_uid"] = json!("1.2.3");
        v["heatmap"] = json!("out/a.gradcam.png");
        v["peak"] = json!(None::<[usize; 2]>);
        v["typicality"] = json!({"score": t.score, "typical": t.typical});
        v["warning"] = json!(ATYPICAL_WARNING);
        v["threshold"] = json!(0.37);
        v["heatmap_kind"] = json!("Grad-CAM");
        v["ms"] = json!(12.5);
        assert_eq!(r.to_line(), v.to_string());
        assert_eq!(
            PredictionRecord::from_line(r.to_line().as_bytes()).unwrap(),
            r
        );

        let mut r = PredictionRecord::scored("b.png", 1.0, "fractured", None, Some("w".into()));
        r.heatmap_error = Some("disk full".into());
        let v = json!({"path": "b.png", "p_fractured": 1.0, "label": "fractured",
            "heatmap_error": "disk full", "warning": "w",
            "typicality": {"score": null, "typical": null, "note": NO_TYPICALITY_NOTE}});
        assert_eq!(r.to_line(), v.to_string());

        let r = PredictionRecord::failed("c.png", "c.png: corrupt");
        assert_eq!(
            r.to_line(),
            json!({"path": "c.png", "error": "c.png: corrupt"}).to_string()
        );
    }
}

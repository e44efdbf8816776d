//! `fracture export`: the committed model becomes an ONNX file whose interface the command and
//! `fracture info` state alike; bad inputs are errors naming the file. (The graph's numbers are
//! checked against the engine in the root crate's `tests/onnx_export.rs`.)

mod support;

use support::{fracture, text};

fn committed_model() -> String {
    support::committed_model().to_string_lossy().into_owned()
}

#[test]
fn export_writes_the_graph_and_states_the_input_formula_as_info_does() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("fracatlas.onnx");
    let model = committed_model();
    let out = fracture(&[
        "export",
        "--model",
        &model,
        "--onnx",
        onnx.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("ONNX opset 17"), "{said}");
    assert!(
        said.contains("p_fractured: float32 [N] (flip-averaged inside the graph)"),
        "{said}"
    );
    // A protobuf ModelProto starts with field 1 (ir_version, varint): tag byte 0x08, then 8.
    let bytes = std::fs::read(&onnx).unwrap();
    assert_eq!(&bytes[..2], &[0x08, 8]);
    assert!(bytes.len() > 3_000_000, "{} bytes", bytes.len());
    // The same formula, with the model's numbers, in `export` and in `info`.
    let formula = said
        .lines()
        .find_map(|l| l.strip_prefix("input   image: float32 [N, 1, 224, 224], "))
        .unwrap_or_else(|| panic!("no input line in {said}"))
        .to_string();
    assert!(
        formula.starts_with("x = (p / 255 - 0.5) / 0.5"),
        "{formula}"
    );
    let info = fracture(&["info", "--model", &model]);
    assert!(info.status.success(), "{}", text(&info.stderr));
    assert!(text(&info.stdout).contains(&format!("input formula  {formula}")));
}

#[test]
fn export_of_a_file_that_is_not_a_model_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("notes.safetensors");
    std::fs::write(&bogus, b"not a model").unwrap();
    let onnx = dir.path().join("out.onnx");
    let out = fracture(&[
        "export",
        "--model",
        bogus.to_str().unwrap(),
        "--onnx",
        onnx.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("notes.safetensors"), "{err}");
    assert!(!onnx.exists(), "nothing written");
}

#[test]
fn export_into_a_missing_folder_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("no/such/folder/out.onnx");
    let out = fracture(&[
        "export",
        "--model",
        &committed_model(),
        "--onnx",
        onnx.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("out.onnx"), "{err}");
}

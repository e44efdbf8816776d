//! The 38 real originals of `../shared/datasets/raw-sample` (listed with their quirks in its
//! `labels.csv`), loaded under both bad-file policies and checked file by file.
//!
//! Expected: every file decodes by content (JPEG RGB and 1-channel, PNG gray/palette/RGBA, PNG and
//! GIF data behind `.jpg`, `.jpeg`, sizes 224 px to 2880 px) to its listed size, except the two
//! JPEGs truncated in the original release, which are corrupt: `Fail` stops on the first of them,
//! `Skip` loads the 36 others with their labels and lists exactly those two.
//!
//! Without `../shared` the tests print that they skipped, and fail instead when `CI` is set.

use std::collections::BTreeMap;
use std::path::PathBuf;

use fracture_data::{
    decode_luma8, BadFileKind, BadFilePolicy, DataError, DatasetSplit, DecodeLimits, LoadOptions,
    Split,
};
use fracture_test_support::shared_path;

struct Row {
    file: String,
    label: String,
    width: u32,
    height: u32,
    note: String,
}

/// Splits one CSV line, honouring double-quoted fields.
fn fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().expect("non-empty").push(c),
        }
    }
    out
}

fn read_labels(dir: &std::path::Path) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join("labels.csv")).expect("labels.csv");
    let mut lines = text.lines();
    let header = fields(lines.next().expect("header"));
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    let (f, l, w, h, n) = (
        col("file"),
        col("label"),
        col("width"),
        col("height"),
        col("note"),
    );
    lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let v = fields(line);
            Row {
                file: v[f].clone(),
                label: v[l].clone(),
                width: v[w].parse().expect("width"),
                height: v[h].parse().expect("height"),
                note: v[n].clone(),
            }
        })
        .collect()
}

/// `../shared/datasets/raw-sample` (with its `labels.csv`), or `None` (skipped; fails under CI).
fn raw_sample() -> Option<PathBuf> {
    let labels = shared_path("datasets/raw-sample/labels.csv")?;
    Some(labels.parent().expect("a file has a folder").to_path_buf())
}

#[test]
fn raw_sample_file_by_file_under_both_policies() {
    let Some(dir) = raw_sample() else {
        return;
    };
    let rows = read_labels(&dir);
    assert_eq!(rows.len(), 38, "labels.csv lists 38 files");
    let truncated: Vec<PathBuf> = rows
        .iter()
        .filter(|r| r.note.contains("TRUNCATED"))
        .map(|r| dir.join(&r.file))
        .collect();
    assert_eq!(truncated.len(), 2);

    // Each file on its own: the header gives the listed size (read by content), and the
    // truncated ones are corrupt-data errors naming the file. (The full decode of every other
    // file is checked by the `Skip` load below.)
    for r in &rows {
        let path = dir.join(&r.file);
        let dims = image::ImageReader::open(&path)
            .and_then(|reader| reader.with_guessed_format())
            .map_err(|e| e.to_string())
            .and_then(|reader| reader.into_dimensions().map_err(|e| e.to_string()));
        assert_eq!(dims, Ok((r.width, r.height)), "{}", r.file);
        if truncated.contains(&path) {
            let err = decode_luma8(&path, &DecodeLimits::default()).unwrap_err();
            assert!(matches!(err, DataError::Corrupt { .. }), "{err:?}");
            assert!(err.to_string().contains(&r.file), "{err}");
        }
    }

    // Skip: 36 images with the listed labels, exactly the 2 truncated files skipped.
    let skip = LoadOptions::new(32).with_policy(BadFilePolicy::Skip);
    let (split, summary) = DatasetSplit::load(&dir, Split::Train, &skip).unwrap();
    assert_eq!(split.classes(), ["fractured", "not_fractured"]);
    assert_eq!(split.len(), 36);
    assert_eq!(summary.loaded, 36);
    let skipped: Vec<PathBuf> = summary.skipped.iter().map(|s| s.path.clone()).collect();
    let mut expected_skipped = truncated.clone();
    expected_skipped.sort();
    assert_eq!(skipped, expected_skipped);
    assert!(summary
        .skipped
        .iter()
        .all(|s| s.kind == BadFileKind::Corrupt));
    assert_eq!(summary.ignored, vec![dir.join("labels.csv")]);
    let labels: BTreeMap<PathBuf, &str> = rows
        .iter()
        .map(|r| (dir.join(&r.file), r.label.as_str()))
        .collect();
    for (i, path) in split.paths().iter().enumerate() {
        let class = &split.classes()[split.labels()[i]];
        assert_eq!(class, labels[path], "{}", path.display());
        // Nothing decoded to an empty picture.
        assert!(split.image(i).iter().any(|&p| p > 16), "{}", path.display());
    }

    // Fail: the first truncated file in sorted order stops the load.
    let err = DatasetSplit::load(&dir, Split::Train, &LoadOptions::new(32)).unwrap_err();
    assert!(matches!(err, DataError::Corrupt { .. }), "{err:?}");
    assert_eq!(err.path(), Some(expected_skipped[0].as_path()));
}

#[test]
fn raw_sample_with_a_size_limit_skips_the_large_originals() {
    let Some(dir) = raw_sample() else {
        return;
    };
    let rows = read_labels(&dir);
    let mut opts = LoadOptions::new(16).with_policy(BadFilePolicy::Skip);
    opts.preprocess.limits.max_width = 2000;
    opts.preprocess.limits.max_height = 2000;
    let (split, summary) = DatasetSplit::load(&dir, Split::Val, &opts).unwrap();
    let large = rows
        .iter()
        .filter(|r| r.width > 2000 || r.height > 2000)
        .count();
    let too_large = summary
        .skipped
        .iter()
        .filter(|s| s.kind == BadFileKind::TooLarge)
        .count();
    assert_eq!(too_large, large);
    assert_eq!(split.len() + summary.skipped.len(), 38);
}

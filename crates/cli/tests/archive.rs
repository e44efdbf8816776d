//! Issue 21 part B, archive-scale `fracture predict --out results.jsonl --resume`, through the
//! real binary on generated phantoms:
//!
//! - a run over a folder of 20,000 images (`FRACTURE_ARCHIVE_IMAGES` changes the count) is
//!   killed with SIGKILL about halfway and resumed; the results file then holds exactly one line
//!   per image, none duplicated or lost, and the lines written before the kill are kept as they
//!   were. About 11 s on 2 shared cores (test profile, opt-level 2): 5 s to write the images,
//!   2.5 s to score half of them before the kill, 2.6 s for the rest;
//! - a torn last line (a kill in the middle of a write) is cut and its image scored again;
//! - an existing results file is never clobbered, failed files get a line and are retried only
//!   with `--retry-failed`, a second run on the same file is refused, batching does not
//!   change a probability, and an extension-less FIFO in a folder is not opened.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::{bin, fracture, s, text};

/// A tiny phantom model (one epoch at 32 px), shared by the tests.
fn model() -> &'static Path {
    static FIX: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &FIX.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (_, model) = support::tiny_phantom_run(dir.path());
        (dir, model)
    })
    .1
}

/// Writes at least `n` 32 px phantom PNGs under `root` (train/val/test splits of `synth`) and
/// returns every image path, sorted.
fn phantom_folder(root: &Path, n: usize) -> BTreeSet<String> {
    // synth writes 2p training images and a fifth of that for validation and for test.
    let total = |p: usize| 2 * p + 2 * (2 * p / 5).max(2);
    let per_class = (1..).find(|&p| total(p) >= n).unwrap();
    let out = fracture(&[
        "synth",
        "--out",
        s(root),
        "--per-class",
        &per_class.to_string(),
        "--size",
        "32",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut files = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "png") {
                files.insert(p.to_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(files.len(), total(per_class));
    files
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

fn line_count(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// The `path` fields of a results file, asserting that none repeats.
fn unique_paths(results: &[serde_json::Value]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for v in results {
        let p = v["path"].as_str().unwrap().to_string();
        assert!(seen.insert(p.clone()), "{p} has two lines");
    }
    seen
}

#[test]
fn a_killed_run_resumed_has_exactly_one_line_per_image() {
    let n: usize = std::env::var("FRACTURE_ARCHIVE_IMAGES")
        .ok()
        .map(|v| v.parse().expect("FRACTURE_ARCHIVE_IMAGES is a number"))
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("archive");
    let started = Instant::now();
    let files = phantom_folder(&data, n);
    eprintln!("{} images written in {:?}", files.len(), started.elapsed());
    let results = dir.path().join("results.jsonl");
    let args = [
        "predict",
        "--model",
        s(model()),
        "--out",
        s(&results),
        s(&data),
    ];
    let mut child = bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let half = files.len() / 2;
    let deadline = Instant::now() + Duration::from_secs(600);
    while line_count(&results) < half {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        assert!(Instant::now() < deadline, "no progress in 600 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished: {status:?}");
    let at_kill = std::fs::read(&results).unwrap();
    let complete = at_kill
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |i| i + 1);
    let killed_lines = line_count(&results);
    eprintln!(
        "killed after {killed_lines} of {} lines ({} bytes of a torn line) in {:?}",
        files.len(),
        at_kill.len() - complete,
        started.elapsed()
    );
    assert!(
        killed_lines < files.len(),
        "the kill came too late to test anything"
    );

    let out = fracture(&[&args[..], &["--resume"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("skipped {killed_lines} file(s) already in")),
        "{err}"
    );
    let after = std::fs::read(&results).unwrap();
    assert_eq!(
        &after[..complete],
        &at_kill[..complete],
        "the lines written before the kill are kept as they were"
    );
    let all = lines(&results);
    assert_eq!(all.len(), files.len());
    assert_eq!(unique_paths(&all), files, "one line per image, none lost");
    assert!(all.iter().all(|v| v["p_fractured"].is_f64()));
    eprintln!("resumed and finished in {:?}", started.elapsed());
}

/// A small folder of `n` phantom PNGs named `img000.png` ...
fn small_folder(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..n {
        let px = fracture_nn::data::phantom::render(32, i as u64, i % 2 == 0).pixels;
        image::GrayImage::from_raw(32, 32, px)
            .unwrap()
            .save(dir.path().join(format!("img{i:03}.png")))
            .unwrap();
    }
    dir
}

#[test]
fn a_torn_last_line_is_cut_and_its_image_scored_again() {
    let images = small_folder(40);
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("r.jsonl");
    let args = [
        "predict",
        "--model",
        s(model()),
        "--batch-size",
        "7",
        "--out",
        s(&results),
        s(images.path()),
    ];
    let out = fracture(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let full = std::fs::read_to_string(&results).unwrap();
    assert_eq!(full.lines().count(), 40);
    // As a kill in the middle of the last batch's write leaves it: 33 whole lines and half of
    // the 34th.
    let ends: Vec<usize> = full.match_indices('\n').map(|(i, _)| i + 1).collect();
    let torn = ends[32] + (ends[33] - ends[32]) / 2;
    std::fs::write(&results, &full[..torn]).unwrap();
    let out = fracture(&[&args[..], &["--resume"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("removed a torn last line"));
    // The same file as the uninterrupted run: results are in walk order and deterministic.
    assert_eq!(std::fs::read_to_string(&results).unwrap(), full);
    // A damaged line inside the file is not "torn": it is an error naming the line, and the
    // file is left as it is.
    let mut damaged: Vec<&str> = full.lines().collect();
    damaged[5] = "{\"path\": 12}";
    let damaged = damaged.join("\n") + "\n";
    std::fs::write(&results, &damaged).unwrap();
    let out = fracture(&[&args[..], &["--resume"]].concat());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("r.jsonl: line 6: no \"path\" string"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(std::fs::read_to_string(&results).unwrap(), damaged);
}

#[test]
fn an_existing_results_file_is_never_clobbered() {
    let images = small_folder(3);
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("r.jsonl");
    let base = ["predict", "--model", s(model()), s(images.path())];
    let with = |extra: &[&str]| fracture(&[&base[..], extra].concat());
    std::fs::write(&results, "{\"path\":\"other.png\",\"error\":\"x\"}\n").unwrap();
    let out = with(&["--out", s(&results)]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("already holds 1 result line(s)") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(line_count(&results), 1);
    let out = with(&["--out", s(&results), "--overwrite"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(lines(&results).len(), 3);
    assert!(text(&out.stdout).is_empty(), "results go to the file only");
    // Flags that need another flag, each one error line naming it.
    for (extra, needle) in [
        (vec!["--resume"], "--out FILE"),
        (vec!["--retry-failed"], "--out FILE"),
        (vec!["--overwrite"], "--out FILE"),
        (
            vec!["--out", s(&results), "--resume", "--overwrite"],
            "contradict",
        ),
        (vec!["--out", s(&results), "--retry-failed"], "--resume"),
        (vec!["--batch-size", "0"], "--batch-size"),
    ] {
        let out = with(&extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{extra:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
    }
    assert_eq!(lines(&results).len(), 3);
}

#[test]
fn failed_files_get_a_line_and_are_retried_only_on_request() {
    let images = small_folder(3);
    let broken = images.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("r.jsonl");
    let args = [
        "predict",
        "--model",
        s(model()),
        "--out",
        s(&results),
        s(images.path()),
    ];
    let out = fracture(&args);
    assert_eq!(out.status.code(), Some(1), "a failed file fails the run");
    assert!(text(&out.stderr).contains("broken.png"));
    let first = lines(&results);
    assert_eq!(first.len(), 4);
    let errors: Vec<_> = first.iter().filter(|v| v.get("error").is_some()).collect();
    assert_eq!(errors.len(), 1);
    assert!(errors[0]["path"].as_str().unwrap().ends_with("broken.png"));
    // Resumed: nothing is tried again and the failure is still reported.
    let out = fracture(&[&args[..], &["--resume"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("(3 scored, 1 failed;"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(lines(&results), first);
    // Mended and retried on request: still one line per image, now all scored.
    std::fs::copy(images.path().join("img000.png"), &broken).unwrap();
    let out = fracture(&[&args[..], &["--resume", "--retry-failed"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let last = lines(&results);
    assert_eq!(last.len(), 4);
    assert!(last.iter().all(|v| v["p_fractured"].is_f64()), "{last:?}");
    assert_eq!(unique_paths(&last).len(), 4);
}

#[test]
fn a_second_run_on_the_same_results_file_is_refused() {
    let images = small_folder(2);
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("r.jsonl");
    // A run holds the file's lock from opening it to its end; taking the lock here as a run
    // does stands in for a run in progress (a real one could finish before the second starts).
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&results)
        .unwrap();
    file.try_lock().unwrap();
    let out = fracture(&[
        "predict",
        "--model",
        s(model()),
        "--out",
        s(&results),
        "--resume",
        s(images.path()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("in use by another"));
    drop(file);
    let out = fracture(&[
        "predict",
        "--model",
        s(model()),
        "--out",
        s(&results),
        "--resume",
        s(images.path()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn batching_does_not_change_a_probability_and_json_keeps_its_fields() {
    let images = small_folder(21);
    let run = |batch: &str| {
        let out = fracture(&[
            "predict",
            "--model",
            s(model()),
            "--json",
            "--batch-size",
            batch,
            s(images.path()),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let one = run("1");
    let many = run("8");
    assert_eq!(one.len(), 21);
    for (a, b) in one.iter().zip(&many) {
        let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
        // An image the typicality check calls atypical also gets a warning, and only then.
        let atypical = a["typicality"]["typical"] == false;
        let want: &[&str] = if atypical {
            &["label", "p_fractured", "path", "typicality", "warning"]
        } else {
            &["label", "p_fractured", "path", "typicality"]
        };
        assert_eq!(keys, want);
        assert_eq!(a["path"], b["path"], "same order");
        let (s, t) = (&a["typicality"]["score"], &b["typicality"]["score"]);
        assert!(
            (s.as_f64().unwrap() - t.as_f64().unwrap()).abs() < 1e-5,
            "typicality {s} vs {t}"
        );
        let (p, q) = (
            a["p_fractured"].as_f64().unwrap(),
            b["p_fractured"].as_f64().unwrap(),
        );
        assert!((p - q).abs() < 1e-6, "{a} vs {b}");
    }
}

#[cfg(unix)]
#[test]
fn an_extension_less_fifo_in_a_folder_is_not_opened() {
    let images = small_folder(2);
    // Archives export extension-less DICOM files, so the walk sniffs extension-less files;
    // opening a FIFO to sniff it would block until a writer appears.
    let st = Command::new("mkfifo")
        .arg(images.path().join("IM0001"))
        .status()
        .unwrap();
    assert!(st.success());
    let mut child = bin()
        .args(["predict", "--model", s(model()), s(images.path())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("predict blocked on the FIFO");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 2);
}

//! Issue 18, "no panic, hang or lost run on any input": every defect the issue reproduced,
//! run through the real `fracture` binary on tiny phantoms. Each test failed before its fix.
//!
//! Model files with bad metadata are made by editing the JSON header of a real model file
//! ([`tamper`]), so the library's own writer (which only writes valid files) is not involved.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{bin, fracture, fracture_within, phantom_fixture, s, text};

/// `args` with the value of `flag` set to `value` (added if absent).
fn with<'a>(mut args: Vec<&'a str>, flag: &'a str, value: &'a str) -> Vec<&'a str> {
    match args.iter().position(|a| *a == flag) {
        Some(i) => args[i + 1] = value,
        None => args.extend_from_slice(&[flag, value]),
    }
    args
}

/// A few phantom images copied into a fresh folder.
fn image_folder(n: usize) -> tempfile::TempDir {
    let (data, _) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let mut srcs: Vec<PathBuf> = std::fs::read_dir(data.join("test/fractured"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    srcs.sort();
    for (i, src) in srcs.iter().cycle().take(n).enumerate() {
        std::fs::copy(src, dir.path().join(format!("img{i:02}.png"))).unwrap();
    }
    dir
}

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

/// A copy of `model` (in `dir`) whose classifier metadata has been edited by `edit`.
fn tamper(model: &Path, dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let bytes = std::fs::read(model).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let meta_str = header["__metadata__"]["fracture_nn"].as_str().unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(meta_str).unwrap();
    edit(&mut meta);
    header["__metadata__"]["fracture_nn"] = serde_json::json!(meta.to_string());
    let mut h = header.to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    let path = dir.join("tampered.safetensors");
    std::fs::write(&path, out).unwrap();
    path
}

// ---- Items 2 and 3: model metadata is validated once, on open, naming the field. ----

#[test]
fn bad_model_metadata_is_one_error_naming_the_field() {
    let (_, model) = phantom_fixture();
    let images = image_folder(1);
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 9] = [
        ("positive_class", |m| m["positive_class"] = 7.into()),
        ("class_names", |m| m["class_names"] = serde_json::json!([])),
        ("class_names", |m| {
            m["class_names"] = serde_json::json!(["a", "a"])
        }),
        ("threshold", |m| m["threshold"] = 5.0.into()),
        ("threshold", |m| m["threshold"] = (-1.0).into()),
        ("image_size", |m| {
            m["model"]["image_size"] = 100000.into();
            m["preprocess"]["image_size"] = 100000.into();
        }),
        ("normalization.std", |m| {
            m["normalization"]["std"] = 0.0.into()
        }),
        ("model.arch", |m| {
            m["model"]["arch"]["stages"][1]["width"] = 1_000_000.into()
        }),
        ("model.image_size", |m| m["model"]["image_size"] = 64.into()),
    ];
    for (field, edit) in cases {
        let dir = tempfile::tempdir().unwrap();
        let bad = tamper(model, dir.path(), edit);
        for cmd in [
            vec!["info", "--model", s(&bad)],
            vec!["predict", "--model", s(&bad), s(images.path())],
        ] {
            let out = fracture(&cmd);
            assert_one_line_error(&out, field);
            assert!(text(&out.stderr).contains("tampered.safetensors"));
            assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
        }
    }
}

#[test]
fn eval_refuses_a_threshold_outside_0_1_like_predict() {
    let (data, model) = phantom_fixture();
    for t in ["5", "-1", "NaN"] {
        let eval = [
            "eval",
            "--model",
            s(model),
            "--data",
            s(data),
            "--threshold",
            t,
        ];
        let predict = ["predict", "--model", s(model), s(data), "--threshold", t];
        for args in [&eval[..], &predict[..]] {
            assert_one_line_error(&fracture(args), "--threshold");
        }
    }
}

/// The CRC-32 of PNG chunks.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A tiny PNG whose header announces `w x h` pixels.
fn png_announcing(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    png
}

#[test]
fn limits_in_a_model_file_cannot_raise_the_built_in_ones() {
    let (_, model) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let bad = tamper(model, dir.path(), |m| {
        m["preprocess"]["limits"] = serde_json::json!({
            "max_width": u32::MAX, "max_height": u32::MAX, "max_alloc": u64::MAX
        });
    });
    let bomb = dir.path().join("bomb.png");
    std::fs::write(&bomb, png_announcing(100_000, 100_000)).unwrap();
    assert!(std::fs::metadata(&bomb).unwrap().len() < 500);
    let out = fracture_within(
        &["predict", "--model", s(&bad), s(&bomb)],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("exceeds the limit of 10000x10000"),
        "{}",
        text(&out.stderr)
    );
}

// ---- Item 1: a closed pipe ends the process quietly. ----

#[cfg(unix)]
#[test]
fn a_closed_stdout_pipe_is_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let (data, model) = phantom_fixture();
    let images = image_folder(40);
    for args in [
        vec!["predict", "--model", s(model), s(images.path())],
        vec!["eval", "--model", s(model), "--data", s(data)],
    ] {
        let mut child = bin()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the first line is written (as `head -1` would after it).
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            status.success() || status.signal() == Some(libc_sigpipe()),
            "{args:?}: {status:?} {err}"
        );
    }
}

#[cfg(unix)]
fn libc_sigpipe() -> i32 {
    13
}

// ---- Item 6: no lost or mixed runs. ----

#[test]
fn train_refuses_a_folder_holding_a_run_unless_resume_or_overwrite() {
    let (data, _) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = fracture(&support::tiny_train_args(data, &run, "1", &[]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let model = run.join("model.safetensors");
    let before = std::fs::read(&model).unwrap();
    let out = fracture(&support::tiny_train_args(data, &run, "1", &["--seed", "5"]));
    assert_one_line_error(&out, "already holds a run");
    assert!(text(&out.stderr).contains("--overwrite"));
    assert_eq!(
        std::fs::read(&model).unwrap(),
        before,
        "the finished run was touched"
    );
    let out = fracture(&support::tiny_train_args(
        data,
        &run,
        "1",
        &["--seed", "5", "--overwrite"],
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(std::fs::read(&model).unwrap(), before);
    assert!(!run.join(".lock").exists(), "the lock outlives the run");
}

#[test]
fn a_second_train_on_a_locked_folder_fails_at_once() {
    let (data, _) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    // A live holder: this test process holds the OS lock on the lock file.
    let held = std::fs::File::create(run.join(".lock")).unwrap();
    held.try_lock().unwrap();
    let out = fracture_within(
        &support::tiny_train_args(data, &run, "1", &[]),
        Duration::from_secs(30),
    );
    assert_one_line_error(&out, "is in use by another `fracture train`");
    assert!(!run.join("model.safetensors").exists());
    assert!(
        run.join(".lock").exists(),
        "the holder's lock was taken away"
    );
    drop(held);
}

/// Issue 31: the lock is the OS's (`File::try_lock`), so a run that ended any way at all,
/// even by SIGKILL, leaves nothing stale: a lock file left behind (here one in the old format,
/// holding a process id) is simply locked again, without a warning.
#[test]
fn a_lock_file_left_by_a_dead_process_is_no_obstacle() {
    let (data, _) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    std::fs::write(run.join(".lock"), format!("{dead}\n")).unwrap();
    let out = fracture(&support::tiny_train_args(data, &run, "1", &[]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("lock"), "{}", text(&out.stderr));
    assert!(run.join("model.safetensors").exists());
    assert!(!run.join(".lock").exists());
    // A run killed with SIGKILL in the middle: the next one starts at once.
    let run2 = dir.path().join("run2");
    let mut child = bin()
        .args(support::tiny_train_args(data, &run2, "200", &[]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !run2.join(".lock").exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let out = fracture(&support::tiny_train_args(
        data,
        &run2,
        "1",
        &["--overwrite"],
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn two_trains_at_once_on_one_folder_never_both_succeed() {
    let (data, _) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let args = with(
        support::tiny_train_args(data, &run, "1", &[]),
        "--epochs",
        "3",
    );
    let a = bin()
        .args(&args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let b = bin()
        .args(&args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let ok = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "{} / {}", text(&a.stderr), text(&b.stderr));
    let loser = if a.status.success() { &b } else { &a };
    let err = text(&loser.stderr);
    assert!(
        err.contains("is in use by another") || err.contains("already holds a run"),
        "{err}"
    );
}

// ---- Item 7: output places are checked before the work. ----

#[test]
fn train_into_an_unwritable_folder_fails_before_training() {
    let (data, _) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    // Under a regular file: no folder can be created there (even by root).
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let run = file.join("run");
    let out = fracture(&support::tiny_train_args(data, &run, "1", &[]));
    assert_one_line_error(&out, "cannot create the run folder");
    assert!(
        !text(&out.stderr).contains("train "),
        "data was loaded first"
    );
}

// ---- Item 9: bad numbers are one clear line, before the data loads. ----

#[test]
fn bad_training_numbers_fail_before_the_data_loads_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-data");
    let run = dir.path().join("run");
    for (flag, value) in [
        ("--lr", "-1"),
        ("--lr", "0"),
        ("--lr", "NaN"),
        ("--epochs", "0"),
        ("--batch-size", "0"),
        ("--dropout", "1.5"),
        ("--weight-decay", "-0.1"),
        ("--label-smoothing", "-0.5"),
    ] {
        let out = fracture(&with(
            support::tiny_train_args(&missing, &run, "1", &[]),
            flag,
            value,
        ));
        assert_one_line_error(&out, &format!("{flag} {value}"));
        assert!(!run.exists(), "{flag}: a run folder was left behind");
    }
}

// ---- Item 10: tiny phantom runs and empty folders. ----

#[test]
fn phantoms_1_is_refused_and_a_failed_train_leaves_no_empty_folder() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = fracture(&[
        "train",
        "--phantoms",
        "1",
        "--out",
        s(&run),
        "--epochs",
        "1",
    ]);
    assert_one_line_error(&out, "--phantoms 1");
    let missing = dir.path().join("no-such-data");
    let out = fracture(&support::tiny_train_args(&missing, &run, "1", &[]));
    assert!(!out.status.success());
    assert!(!run.exists(), "a failed train left an empty run folder");
}

// ---- Item 4: no hang on FIFOs, no blow-up on symbolic link loops. ----

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success());
}

#[cfg(unix)]
#[test]
fn fifos_are_skipped_not_opened() {
    let (data, model) = phantom_fixture();
    let limit = Duration::from_secs(60);
    // Named directly: an error for that file, no hang.
    let dir = image_folder(2);
    let fifo = dir.path().join("pipe.png");
    mkfifo(&fifo);
    let out = fracture_within(&["predict", "--model", s(model), s(&fifo)], limit);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not a regular file"),
        "{}",
        text(&out.stderr)
    );
    // Inside a predict folder: skipped with a warning, the images are classified.
    let out = fracture_within(&["predict", "--model", s(model), s(dir.path())], limit);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 2);
    assert!(
        text(&out.stderr).contains("warning: skipping"),
        "{}",
        text(&out.stderr)
    );
    // Inside a training class folder: skipped as unreadable.
    let copy = tempfile::tempdir().unwrap();
    let root = copy.path().join("data");
    copy_tree(data, &root);
    mkfifo(&root.join("train/fractured/pipe.png"));
    let run = copy.path().join("run");
    let out = fracture_within(
        &support::tiny_train_args(&root, &run, "1", &[]),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("pipe.png"),
        "{}",
        text(&out.stderr)
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[cfg(unix)]
#[test]
fn symlink_loops_visit_each_image_once() {
    use std::os::unix::fs::symlink;
    let (_, model) = phantom_fixture();
    let dir = image_folder(3);
    let d = dir.path();
    // A link to the folder itself, and two branches pointing at each other.
    symlink(".", d.join("self")).unwrap();
    std::fs::create_dir(d.join("a")).unwrap();
    std::fs::create_dir(d.join("b")).unwrap();
    symlink("../b", d.join("a/to_b")).unwrap();
    symlink("../a", d.join("b/to_a")).unwrap();
    symlink("../img00.png", d.join("a/link.png")).unwrap();
    let out = fracture_within(
        &["predict", "--model", s(model), s(d)],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 3, "each real image once: {lines:#?}");
}

// ---- Item 5: reads are bounded. ----

#[cfg(unix)]
#[test]
fn predict_on_dev_zero_and_a_huge_sparse_file_reads_almost_nothing() {
    let (_, model) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let sparse = dir.path().join("sparse.png");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let mut png_sparse = b"\x89PNG\r\n\x1a\n".to_vec();
    png_sparse.resize(64, 0);
    let big = dir.path().join("big.png");
    std::fs::write(&big, &png_sparse).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    for (file, needle) in [
        (Path::new("/dev/zero"), "not a regular file"),
        (sparse.as_path(), "not a recognised image"),
        (big.as_path(), "exceeds the limit"),
    ] {
        let out = fracture_within(
            &["predict", "--model", s(model), s(file)],
            Duration::from_secs(20),
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(needle), "{}", text(&out.stderr));
    }
}

// ---- Item 7: results are not thrown away for an unwritable output. ----

#[test]
fn unwritable_outputs_fail_before_the_work() {
    let (data, model) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let roc = file.join("roc.png");
    let out = fracture(&[
        "eval",
        "--model",
        s(model),
        "--data",
        s(data),
        "--roc-png",
        s(&roc),
    ]);
    assert_one_line_error(&out, "--roc-png");
    assert!(text(&out.stdout).is_empty());
    let images = image_folder(2);
    let heat = file.join("heat");
    let out = fracture(&[
        "predict",
        "--model",
        s(model),
        "--heatmap",
        s(&heat),
        s(images.path()),
    ]);
    assert_one_line_error(&out, "heatmap folder");
}

// ---- Item 10: overlays, odd file names, degenerate inputs. ----

#[test]
fn predict_heatmap_inside_the_input_folder_does_not_classify_its_overlays() {
    let (_, model) = phantom_fixture();
    let images = image_folder(2);
    let heat = images.path().join("heat");
    for _ in 0..2 {
        let out = fracture(&[
            "predict",
            "--model",
            s(model),
            "--heatmap",
            s(&heat),
            s(images.path()),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout).lines().count(),
            2,
            "{}",
            text(&out.stdout)
        );
    }
}

#[cfg(unix)]
#[test]
fn odd_file_names_stay_one_escaped_line() {
    use std::os::unix::ffi::OsStrExt;
    let (_, model) = phantom_fixture();
    let images = image_folder(1);
    let src = images.path().join("img00.png");
    let tabbed = images.path().join("a\tb\nc.png");
    std::fs::copy(&src, &tabbed).unwrap();
    let latin1 = images
        .path()
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9.png"));
    std::fs::copy(&src, &latin1).unwrap();
    let out = fracture(&["predict", "--model", s(model), s(images.path())]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines.iter().all(|l| l.split('\t').count() == 3), "{stdout}");
    assert!(stdout.contains("a\\tb\\nc.png"), "{stdout}");
    assert!(stdout.contains("caf\\xe9.png"), "{stdout}");
    let out = fracture(&["predict", "--json", "--model", s(model), s(images.path())]);
    for l in text(&out.stdout).lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }
    assert!(text(&out.stdout).contains("caf\\\\xe9.png"));
}

#[test]
fn degenerate_inputs_are_flagged() {
    let (_, model) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    image::GrayImage::new(1, 1)
        .save(dir.path().join("dot.png"))
        .unwrap();
    image::GrayImage::new(50, 40)
        .save(dir.path().join("black.png"))
        .unwrap();
    let out = fracture(&["predict", "--model", s(model), s(dir.path())]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("degenerate input").count(), 2, "{stdout}");
    let out = fracture(&["predict", "--json", "--model", s(model), s(dir.path())]);
    for l in text(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["warning"].as_str().unwrap().contains("degenerate"), "{v}");
    }
}

// ---- Item 8: no silent label inversion. ----

/// The fixture's data with its class folders renamed in every split.
fn renamed_classes(root: &Path, renames: &[(&str, &str)]) {
    let (data, _) = phantom_fixture();
    copy_tree(data, root);
    for split in ["train", "val", "test"] {
        for (from, to) in renames {
            let d = root.join(split);
            if to.is_empty() {
                std::fs::remove_dir_all(d.join(from)).unwrap();
            } else {
                std::fs::rename(d.join(from), d.join(to)).unwrap();
            }
        }
    }
}

#[test]
fn unknown_class_names_need_positive_class_and_it_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    // `normal` sorts first: without a check it would silently become the positive class.
    renamed_classes(
        &root,
        &[("fractured", "positive"), ("not_fractured", "normal")],
    );
    let run = dir.path().join("run");
    let out = fracture(&support::tiny_train_args(&root, &run, "1", &[]));
    assert_one_line_error(&out, "--positive-class");
    assert!(!run.exists());
    let out = fracture(&support::tiny_train_args(
        &root,
        &run,
        "1",
        &["--positive-class", "nope"],
    ));
    assert_one_line_error(&out, "not one of the class folders");
    let out = fracture(&support::tiny_train_args(
        &root,
        &run,
        "1",
        &["--positive-class", "positive"],
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = text(&out.stderr).lines().next().unwrap_or("").to_string();
    assert!(
        first.contains("positive class \"positive\""),
        "first line: {first}"
    );
    let info = fracture(&["info", "--model", s(&run.join("model.safetensors"))]);
    let info = text(&info.stdout);
    assert!(info.contains("(positive: positive)"), "{info}");
    // The known names announce their positive class too.
    let (data, _) = phantom_fixture();
    let run2 = dir.path().join("run2");
    let out = fracture(&support::tiny_train_args(data, &run2, "1", &[]));
    let first = text(&out.stderr).lines().next().unwrap_or("").to_string();
    assert!(first.contains("positive class \"fractured\""), "{first}");
}

#[test]
fn one_or_three_classes_are_one_clear_error_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one");
    renamed_classes(&one, &[("not_fractured", "")]);
    let out = fracture(&support::tiny_train_args(
        &one,
        &dir.path().join("r1"),
        "1",
        &[],
    ));
    assert_one_line_error(&out, "1 class folder(s)");
    let three = dir.path().join("three");
    copy_tree(&phantom_fixture().0, &three);
    for split in ["train", "val", "test"] {
        copy_tree(
            &three.join(split).join("fractured"),
            &three.join(split).join("other"),
        );
    }
    let out = fracture(&support::tiny_train_args(
        &three,
        &dir.path().join("r3"),
        "1",
        &[],
    ));
    assert_one_line_error(&out, "3 class folder(s)");
    assert!(
        !text(&out.stderr).contains("loading"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn eval_of_a_positive_class_model_uses_the_models_class_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    renamed_classes(
        &root,
        &[("fractured", "positive"), ("not_fractured", "normal")],
    );
    let run = dir.path().join("run");
    let out = fracture(&support::tiny_train_args(
        &root,
        &run,
        "1",
        &["--positive-class", "positive"],
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let model = run.join("model.safetensors");
    let out = fracture(&[
        "eval",
        "--json",
        "--model",
        s(&model),
        "--data",
        s(&root),
        "--threshold",
        "0",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    // Threshold 0 labels everything positive: 4 of the 8 test images are `positive`.
    assert_eq!(v["confusion"]["tp"], 4, "{v}");
    assert_eq!(v["confusion"]["fp"], 4, "{v}");
    let out = fracture(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&phantom_fixture().0),
    ]);
    assert_one_line_error(&out, "not the model's classes");
}

// ---- Item 9: one clear line per mistake. ----

#[test]
fn a_missing_file_is_named_once_not_twice() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.safetensors");
    for args in [
        vec!["info", "--model", s(&missing)],
        vec!["predict", "--model", s(&missing), s(dir.path())],
    ] {
        let out = fracture(&args);
        assert_one_line_error(&out, "nope.safetensors");
        let err = text(&out.stderr);
        assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    }
}

#[test]
fn eval_stopping_on_a_corrupt_file_suggests_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    copy_tree(&phantom_fixture().0, &root);
    std::fs::write(
        root.join("test/fractured/zz.png"),
        b"\x89PNG\r\n\x1a\nbroken",
    )
    .unwrap();
    let model = &phantom_fixture().1;
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--model", s(model), "--data", s(&root)];
        args.extend_from_slice(extra);
        fracture(&args)
    };
    assert_one_line_error(&eval(&["--bad-files", "fail"]), "--bad-files skip");
    // Skipping is the default, as for train and predict; the file is named on stderr.
    for extra in [&[][..], &["--bad-files", "skip"], &["--skip-bad"]] {
        let out = eval(extra);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("zz.png"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn nan_weights_are_refused_on_open() {
    let (_, model) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(model).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // Every tensor's first float (and more) becomes NaN.
    for v in bytes[8 + n..].chunks_exact_mut(4) {
        v.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    let bad = dir.path().join("nan.safetensors");
    std::fs::write(&bad, bytes).unwrap();
    let images = image_folder(1);
    for args in [
        vec!["info", "--model", s(&bad)],
        vec!["predict", "--model", s(&bad), s(images.path())],
    ] {
        assert_one_line_error(&fracture(&args), "NaN or infinite");
    }
}

#[test]
fn a_divergence_in_epoch_1_does_not_promise_a_checkpoint() {
    let e = fracture_nn::Error::NonFiniteLoss {
        epoch: 1,
        batch: 3,
        loss: f32::NAN,
    };
    let msg = e.to_string();
    assert!(!msg.contains("checkpoint is kept"), "{msg}");
    assert!(
        msg.contains("no checkpoint") && msg.contains("--lr"),
        "{msg}"
    );
    let e = fracture_nn::Error::NonFiniteLoss {
        epoch: 4,
        batch: 1,
        loss: f32::INFINITY,
    };
    assert!(e.to_string().contains("last finished epoch is kept"));
}

#[test]
fn a_refused_resume_names_the_changed_setting() {
    let (data, _) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = fracture(&support::tiny_train_args(data, &run, "1", &[]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let args = with(
        with(
            support::tiny_train_args(data, &run, "1", &["--resume"]),
            "--epochs",
            "2",
        ),
        "--batch-size",
        "4",
    );
    let out = fracture(&args);
    assert_one_line_error(&out, "batch_size: 8 -> 4");
    let args = with(
        with(
            support::tiny_train_args(data, &run, "1", &["--resume"]),
            "--epochs",
            "2",
        ),
        "--widths",
        "8,8",
    );
    assert_one_line_error(&fracture(&args), "arch.stages.1.width: 16 -> 8");
}

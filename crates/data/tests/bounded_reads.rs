//! Reading image files never blocks or reads without bound (issue 18, items 4 and 5): only
//! regular files are opened, the format is sniffed from the first bytes, and no more than the
//! decode limits' `max_alloc` bytes are read.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use fracture_data::{
    decode::read_image_bytes, decode_luma8, BadFileKind, BadFilePolicy, DataError, DecodeLimits,
    ImageFolder, LoadOptions,
};

/// Runs `f` on another thread and fails the test if it has not returned within `secs`.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("still running: a read blocked or ran away")
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    assert!(std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success());
}

#[cfg(unix)]
#[test]
fn a_fifo_is_refused_without_being_opened() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("x.png");
    mkfifo(&fifo);
    let err = within(10, move || {
        decode_luma8(&fifo, &DecodeLimits::default()).unwrap_err()
    });
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    let err = within(10, || {
        decode_luma8("/dev/zero".as_ref(), &DecodeLimits::default()).unwrap_err()
    });
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_fifo_in_a_class_folder_is_skipped_as_unreadable() {
    let root = tempfile::tempdir().unwrap();
    for class in ["fractured", "not_fractured"] {
        let d = root.path().join("train").join(class);
        std::fs::create_dir_all(&d).unwrap();
        image::GrayImage::new(8, 8).save(d.join("a.png")).unwrap();
    }
    mkfifo(&root.path().join("train/fractured/pipe.png"));
    let path = root.path().to_path_buf();
    let folder = within(20, move || {
        ImageFolder::load(&path, &LoadOptions::new(8).with_policy(BadFilePolicy::Skip)).unwrap()
    });
    let skipped = &folder.summary().skipped;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].kind, BadFileKind::Unreadable);
    assert!(skipped[0].path.ends_with("pipe.png"));
}

#[test]
fn the_format_is_sniffed_before_the_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    // 2 GiB of sparse zeros: refused from its first bytes.
    let sparse = dir.path().join("sparse.jpg");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let err = within(10, move || {
        read_image_bytes(&sparse, &DecodeLimits::default()).unwrap_err()
    });
    assert!(matches!(err, DataError::UnknownFormat { .. }), "{err:?}");
}

#[test]
fn no_more_than_max_alloc_bytes_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.png");
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.resize(100_000, 7);
    std::fs::write(&big, &bytes).unwrap();
    let limits = DecodeLimits {
        max_alloc: 10_000,
        ..DecodeLimits::default()
    };
    let err = read_image_bytes(&big, &limits).unwrap_err();
    assert!(
        matches!(err, DataError::FileTooLarge { max: 10_000, .. }),
        "{err:?}"
    );
    assert_eq!(BadFileKind::of(&err), Some(BadFileKind::TooLarge));
    // At the limit it is read whole.
    let exact = DecodeLimits {
        max_alloc: 100_000,
        ..DecodeLimits::default()
    };
    assert_eq!(read_image_bytes(&big, &exact).unwrap().len(), 100_000);
}

//! Image folders: layout, class order, structural errors, the bad-file policy and its summary,
//! and a deterministic result whatever the thread count.

mod common;

use common::{make_layout, write_png};
use fracture_data::{
    BadFileKind, BadFilePolicy, DataError, DatasetSplit, ImageFolder, LoadOptions, Split,
};

const CLASSES: [&str; 2] = ["not_fractured", "fractured"]; // deliberately unsorted

fn opts() -> LoadOptions {
    LoadOptions::new(8)
}

fn skip() -> LoadOptions {
    LoadOptions::new(8).with_policy(BadFilePolicy::Skip)
}

#[test]
fn loads_all_splits_with_sorted_classes_and_sorted_files() {
    let root = tempfile::tempdir().unwrap();
    make_layout(
        root.path(),
        &["train", "val", "test"],
        &CLASSES,
        3,
        |split, class, i| {
            let base = if class == "fractured" { 10 } else { 100 };
            base + i as u8 + if split == "train" { 0 } else { 50 }
        },
    );
    let data = ImageFolder::load(root.path(), &opts()).unwrap();
    assert_eq!(data.classes(), ["fractured", "not_fractured"]);
    let train = data.train().unwrap();
    assert_eq!(train.labels(), &[0, 0, 0, 1, 1, 1]);
    assert_eq!(train.image_size(), 8);
    assert_eq!(train.images().len(), 6 * 64);
    // Stretch is not the default: a 12x9 image letterboxed to 8x8 keeps 8x6 of content.
    let first = train.image(0);
    assert_eq!(first[0], 0, "top padding row");
    assert_eq!(first[8 * 4 + 4], 10, "content");
    assert!(train.paths()[2].ends_with("train/fractured/002.png"));
    assert_eq!(train.image(5)[8 * 4], 102);
    assert_eq!(data.summary().loaded, 18);
    assert!(data.summary().skipped.is_empty());
    for split in Split::ALL {
        assert_eq!(data.split(split).unwrap().split(), split);
    }
}

#[test]
fn a_missing_split_is_absent_and_asking_for_it_names_it() {
    let root = tempfile::tempdir().unwrap();
    make_layout(root.path(), &["train", "val"], &CLASSES, 1, |_, _, _| 9);
    let data = ImageFolder::load(root.path(), &opts()).unwrap();
    assert!(!data.has_split(Split::Test));
    let err = data.test().unwrap_err();
    assert!(matches!(err, DataError::MissingSplit { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("test") && msg.contains(&root.path().display().to_string()),
        "{msg}"
    );
}

#[test]
fn an_empty_class_folder_is_an_error_under_both_policies() {
    let root = tempfile::tempdir().unwrap();
    make_layout(root.path(), &["train"], &CLASSES, 1, |_, _, _| 9);
    let empty = root.path().join("train/zz_empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join(".DS_Store"), b"hidden files do not count").unwrap();
    for o in [opts(), skip()] {
        let err = ImageFolder::load(root.path(), &o).unwrap_err();
        assert!(matches!(err, DataError::EmptyClassFolder { .. }), "{err:?}");
        assert_eq!(err.path(), Some(empty.as_path()));
    }
}

#[test]
fn a_class_folder_without_usable_images() {
    let root = tempfile::tempdir().unwrap();
    make_layout(root.path(), &["train"], &["fractured"], 1, |_, _, _| 9);
    let dir = root.path().join("train/not_fractured");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("readme.txt"), "no images here").unwrap();
    std::fs::write(dir.join("list.csv"), "a,b").unwrap();
    // Fail: the first non-image is the error.
    let err = ImageFolder::load(root.path(), &opts()).unwrap_err();
    assert!(matches!(err, DataError::UnknownFormat { .. }), "{err:?}");
    assert!(
        err.to_string().contains("list.csv"),
        "first in sorted order: {err}"
    );
    // Skip: the folder ends up with no images, which is an error naming it.
    let err = ImageFolder::load(root.path(), &skip()).unwrap_err();
    match &err {
        DataError::NoImages { path, skipped } => {
            assert_eq!(path, &dir);
            assert_eq!(*skipped, 2);
        }
        other => panic!("expected NoImages, got {other:?}"),
    }
}

#[test]
fn a_split_folder_without_class_folders() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("train")).unwrap();
    let err = ImageFolder::load(root.path(), &opts()).unwrap_err();
    assert!(
        matches!(err, DataError::NoImages { skipped: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("train"));
}

#[test]
fn images_directly_in_a_split_folder_are_a_wrong_layout() {
    let root = tempfile::tempdir().unwrap();
    write_png(&root.path().join("train/a.png"), 4, 4, 1);
    write_png(&root.path().join("train/b.png"), 4, 4, 1);
    let err = ImageFolder::load(root.path(), &opts()).unwrap_err();
    assert!(matches!(err, DataError::WrongLayout { .. }), "{err:?}");
    assert!(err.to_string().contains("class folders"), "{err}");
}

#[test]
fn a_root_without_splits_is_a_wrong_layout_with_a_hint() {
    let root = tempfile::tempdir().unwrap();
    make_layout(root.path(), &["."], &CLASSES, 1, |_, _, _| 9);
    let err = ImageFolder::load(root.path(), &opts()).unwrap_err();
    assert!(matches!(err, DataError::WrongLayout { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("DatasetSplit::load") && msg.contains("fractured"),
        "{msg}"
    );
    // ... and that folder does load as one split.
    let (split, _) = DatasetSplit::load(root.path(), Split::Test, &opts()).unwrap();
    assert_eq!(split.len(), 2);

    let nothing = tempfile::tempdir().unwrap();
    let err = ImageFolder::load(nothing.path(), &opts()).unwrap_err();
    assert!(matches!(err, DataError::WrongLayout { .. }), "{err:?}");
}

#[test]
fn a_folder_inside_a_class_folder_is_a_wrong_layout() {
    let root = tempfile::tempdir().unwrap();
    make_layout(root.path(), &["train"], &CLASSES, 1, |_, _, _| 9);
    write_png(&root.path().join("train/fractured/nested/x.png"), 4, 4, 1);
    let err = ImageFolder::load(root.path(), &skip()).unwrap_err();
    assert!(matches!(err, DataError::WrongLayout { .. }), "{err:?}");
    assert!(err.to_string().contains("nested"));
}

#[test]
fn a_missing_root_or_a_file_root() {
    let dir = tempfile::tempdir().unwrap();
    let err = ImageFolder::load(&dir.path().join("nope"), &opts()).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nope"));
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = ImageFolder::load(&file, &opts()).unwrap_err();
    assert!(matches!(err, DataError::WrongLayout { .. }), "{err:?}");
}

#[test]
fn class_sets_must_agree_between_splits() {
    let root = tempfile::tempdir().unwrap();
    make_layout(root.path(), &["train"], &CLASSES, 1, |_, _, _| 9);
    make_layout(
        root.path(),
        &["val"],
        &["fractured", "not_fractured", "unsure"],
        1,
        |_, _, _| 9,
    );
    let err = ImageFolder::load(root.path(), &skip()).unwrap_err();
    match &err {
        DataError::ClassMismatch {
            path,
            expected,
            found,
            reference,
        } => {
            assert!(path.ends_with("val"));
            assert_eq!(expected, &["fractured", "not_fractured"]);
            assert_eq!(found.len(), 3);
            assert_eq!(reference, "train");
        }
        other => panic!("expected ClassMismatch, got {other:?}"),
    }
    // A renamed class is a mismatch too.
    let root = tempfile::tempdir().unwrap();
    make_layout(root.path(), &["train"], &CLASSES, 1, |_, _, _| 9);
    make_layout(
        root.path(),
        &["test"],
        &["fractured", "normal"],
        1,
        |_, _, _| 9,
    );
    assert!(matches!(
        ImageFolder::load(root.path(), &opts()).unwrap_err(),
        DataError::ClassMismatch { .. }
    ));
}

fn layout_with_bad_files() -> (tempfile::TempDir, Vec<std::path::PathBuf>) {
    let root = tempfile::tempdir().unwrap();
    make_layout(root.path(), &["train"], &CLASSES, 2, |_, _, i| 20 + i as u8);
    let dir = root.path().join("train/fractured");
    let corrupt = dir.join("a_corrupt.png");
    std::fs::write(
        &corrupt,
        [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3],
    )
    .unwrap();
    let text = dir.join("b_notes.jpg");
    std::fs::write(&text, "not an image").unwrap();
    let big = dir.join("c_big.png");
    write_png(&big, 5000, 2, 3);
    let mut bad = vec![corrupt, text, big];
    #[cfg(unix)]
    {
        let link = root.path().join("train/not_fractured/d_broken.png");
        std::os::unix::fs::symlink(root.path().join("gone.png"), &link).unwrap();
        bad.push(link);
    }
    // Stray files beside the class folders are ignored and reported.
    std::fs::write(root.path().join("train/README.md"), "about").unwrap();
    (root, bad)
}

fn limited(policy: BadFilePolicy) -> LoadOptions {
    let mut o = LoadOptions::new(8).with_policy(policy);
    o.preprocess.limits.max_width = 4096;
    o
}

#[test]
fn fail_policy_stops_at_the_first_bad_file_in_sorted_order() {
    let (root, bad) = layout_with_bad_files();
    let err = ImageFolder::load(root.path(), &limited(BadFilePolicy::Fail)).unwrap_err();
    assert!(matches!(err, DataError::Corrupt { .. }), "{err:?}");
    assert_eq!(err.path(), Some(bad[0].as_path()));
}

#[test]
fn skip_policy_lists_every_skipped_file_with_its_reason() {
    let (root, bad) = layout_with_bad_files();
    let data = ImageFolder::load(root.path(), &limited(BadFilePolicy::Skip)).unwrap();
    let summary = data.summary();
    assert_eq!(summary.loaded, 4);
    let skipped: Vec<_> = summary
        .skipped
        .iter()
        .map(|s| (s.path.clone(), s.kind))
        .collect();
    let mut expected = vec![
        (bad[0].clone(), BadFileKind::Corrupt),
        (bad[1].clone(), BadFileKind::UnknownFormat),
        (bad[2].clone(), BadFileKind::TooLarge),
    ];
    if bad.len() > 3 {
        expected.push((bad[3].clone(), BadFileKind::Unreadable));
    }
    assert_eq!(skipped, expected);
    assert_eq!(summary.ignored, vec![root.path().join("train/README.md")]);
    let text = summary.to_string();
    assert!(
        text.starts_with(&format!(
            "loaded 4 images, skipped {} files",
            expected.len()
        )),
        "{text}"
    );
    for (path, _) in &expected {
        assert!(text.contains(&path.display().to_string()), "{text}");
    }
    assert!(text.contains("5000x2"), "the reason says why: {text}");
    assert_eq!(data.train().unwrap().labels(), &[0, 0, 1, 1]);
}

#[test]
fn loading_does_not_depend_on_the_thread_count() {
    let root = tempfile::tempdir().unwrap();
    make_layout(root.path(), &["train", "val"], &CLASSES, 40, |s, c, i| {
        (i * 7 + s.len() * 3 + c.len()) as u8
    });
    let load = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| ImageFolder::load(root.path(), &opts()).unwrap())
    };
    let one = load(1);
    assert_eq!(one, load(3));
    assert_eq!(one.train().unwrap().len(), 80);
}

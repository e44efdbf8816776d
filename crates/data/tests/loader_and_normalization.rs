//! Batch loader behaviour (order, balance, shapes, early stop) and normalisation statistics
//! that come from the training split only.

mod common;

use std::collections::HashSet;

use common::make_layout;
use fracture_data::phantom::PhantomConfig;
use fracture_data::{
    preprocess_file, BatchLoader, DataError, DatasetSplit, ImageFolder, LoadOptions, LoaderConfig,
    Normalization, Split,
};

fn split_with_labels(labels: Vec<usize>, size: usize) -> DatasetSplit {
    let n = labels.len();
    let images = (0..n * size * size).map(|i| (i % 256) as u8).collect();
    let paths = (0..n).map(|i| format!("{i}.png").into()).collect();
    DatasetSplit::new(
        Split::Train,
        vec!["fractured".into(), "not_fractured".into()],
        size,
        images,
        labels,
        paths,
    )
    .unwrap()
}

#[test]
fn normalisation_comes_from_train_only() {
    // Train pixels are 40 and 80 (half each); val and test are all 250. Any leak would pull
    // the mean up.
    let root = tempfile::tempdir().unwrap();
    make_layout(
        root.path(),
        &["train", "val", "test"],
        &["fractured", "not_fractured"],
        2,
        |split, class, _| match (split, class) {
            ("train", "fractured") => 40,
            ("train", _) => 80,
            _ => 250,
        },
    );
    let mut opts = LoadOptions::new(6);
    opts.preprocess.resize_mode = fracture_data::ResizeMode::Stretch; // no black padding
    let data = ImageFolder::load(root.path(), &opts).unwrap();
    let norm = data.normalization().unwrap();
    assert!((norm.mean - 60.0 / 255.0).abs() < 1e-6, "{norm:?}");
    assert!((norm.std - 20.0 / 255.0).abs() < 1e-6, "{norm:?}");
    for split in [Split::Val, Split::Test] {
        let err = Normalization::from_train(data.split(split).unwrap()).unwrap_err();
        assert!(matches!(err, DataError::Config(_)));
        assert!(err.to_string().contains(split.dir_name()), "{err}");
    }
    // Without a train split there are no statistics to compute.
    let root = tempfile::tempdir().unwrap();
    make_layout(root.path(), &["val"], &["a", "b"], 1, |_, _, _| 1);
    let data = ImageFolder::load(root.path(), &LoadOptions::new(4)).unwrap();
    assert!(matches!(
        data.normalization(),
        Err(DataError::MissingSplit { .. })
    ));
}

#[test]
fn phantom_statistics_ignore_val_and_test() {
    let cfg = PhantomConfig {
        size: 32,
        train: 40,
        val: 40,
        test: 40,
        ..PhantomConfig::default()
    };
    let data = cfg.folder().unwrap();
    let norm = data.normalization().unwrap();
    let train = data.train().unwrap();
    assert_eq!(norm, Normalization::from_images(train.images()).unwrap());
    // Adding val and test changes the statistics, so using them would be visible.
    let mut all = train.images().to_vec();
    all.extend_from_slice(data.val().unwrap().images());
    all.extend_from_slice(data.test().unwrap().images());
    assert_ne!(norm, Normalization::from_images(&all).unwrap());
    assert!(
        Normalization::from_images(&[7; 100]).is_err(),
        "constant pixels have no std"
    );
}

#[test]
fn shuffled_epochs_are_permutations_that_change_with_epoch_and_seed() {
    let data = std::sync::Arc::new(split_with_labels((0..50).map(|i| i % 2).collect(), 4));
    let make = |seed| {
        BatchLoader::new(
            std::sync::Arc::clone(&data),
            Normalization::IDENTITY,
            LoaderConfig {
                batch_size: 7,
                seed,
                ..LoaderConfig::default()
            },
        )
        .unwrap()
    };
    let l = make(1);
    let e0: Vec<usize> = l.epoch(0).flat_map(|b| b.indices).collect();
    assert_eq!(e0, l.epoch_order(0));
    let mut sorted = e0.clone();
    sorted.sort();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    assert_ne!(e0, l.epoch_order(1));
    assert_ne!(e0, make(2).epoch_order(0));
    assert_eq!(e0, make(1).epoch_order(0));
    assert_eq!(l.batches_per_epoch(), 8);
    let sizes: Vec<usize> = l.epoch(0).map(|b| b.n).collect();
    assert_eq!(sizes, vec![7, 7, 7, 7, 7, 7, 7, 1]);
}

#[test]
fn drop_last_and_batch_contents() {
    let data = split_with_labels(vec![0, 1, 1, 0, 1], 3);
    let expected_labels = data.labels().to_vec();
    let l = BatchLoader::new(
        data,
        Normalization {
            mean: 0.5,
            std: 0.5,
        },
        LoaderConfig {
            batch_size: 2,
            drop_last: true,
            augment: None,
            ..LoaderConfig::default()
        },
    )
    .unwrap();
    assert_eq!(l.batches_per_epoch(), 2);
    for b in l.epoch(3) {
        assert_eq!(b.shape(), [2, 1, 3, 3]);
        assert_eq!(b.images.len(), 2 * 9);
        for (k, &i) in b.indices.iter().enumerate() {
            assert_eq!(b.labels[k], expected_labels[i]);
            let want: Vec<f32> = l
                .dataset()
                .image(i)
                .iter()
                .map(|&p| (p as f32 / 255.0 - 0.5) / 0.5)
                .collect();
            assert_eq!(b.image(k), &want[..]);
        }
    }
}

#[test]
fn balanced_sampling_draws_classes_equally() {
    // 10 % fractured.
    let labels: Vec<usize> = (0..400).map(|i| usize::from(i % 10 != 0)).collect();
    let l = BatchLoader::new(
        split_with_labels(labels, 2),
        Normalization::IDENTITY,
        LoaderConfig {
            batch_size: 50,
            balanced: true,
            augment: None,
            ..LoaderConfig::default()
        },
    )
    .unwrap();
    let mut fractured = 0;
    let mut total = 0;
    let mut distinct = HashSet::new();
    for epoch in 0..5 {
        for b in l.epoch(epoch) {
            fractured += b.labels.iter().filter(|&&y| y == 0).count();
            total += b.n;
            distinct.extend(b.indices);
        }
    }
    assert_eq!(total, 2000);
    let share = fractured as f64 / total as f64;
    assert!((0.45..=0.55).contains(&share), "fractured share {share}");
    assert_eq!(
        distinct.iter().filter(|&&i| i % 10 == 0).count(),
        40,
        "every minority image is drawn"
    );
}

#[test]
fn eval_batches_equal_prediction_preprocessing_of_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PhantomConfig {
        size: 40,
        train: 6,
        val: 5,
        test: 0,
        seed: 8,
        ..PhantomConfig::default()
    };
    cfg.write_folder(dir.path()).unwrap();
    let mut opts = LoadOptions::new(32); // 40 px files resized to 32, as a real set would be
    opts.preprocess.resize_mode = fracture_data::ResizeMode::Letterbox;
    let mut data = ImageFolder::load(dir.path(), &opts).unwrap();
    let norm = data.normalization().unwrap();
    let val = data.take_split(Split::Val).unwrap();
    let paths = val.paths().to_vec();
    let loader = BatchLoader::eval(val, norm, 2).unwrap();
    let mut seen = 0;
    for b in loader.epoch(0) {
        for (k, &i) in b.indices.iter().enumerate() {
            let x = preprocess_file(&paths[i], &opts.preprocess, &norm).unwrap();
            assert_eq!(b.image(k), &x[..], "{}", paths[i].display());
            seen += 1;
        }
    }
    assert_eq!(seen, 5);
}

#[test]
fn stopping_an_epoch_early_does_not_hang_and_bad_configs_are_errors() {
    let data = std::sync::Arc::new(split_with_labels(vec![0; 64], 8));
    let l = BatchLoader::new(
        std::sync::Arc::clone(&data),
        Normalization::IDENTITY,
        LoaderConfig {
            batch_size: 2,
            ..LoaderConfig::default()
        },
    )
    .unwrap();
    for _ in 0..20 {
        let mut it = l.epoch(0);
        assert_eq!(it.len(), 32);
        it.next().unwrap();
        drop(it); // the prefetch thread must stop
    }
    let bad = |cfg: LoaderConfig, norm: Normalization| {
        BatchLoader::new(std::sync::Arc::clone(&data), norm, cfg).unwrap_err()
    };
    assert!(matches!(
        bad(
            LoaderConfig {
                batch_size: 0,
                ..LoaderConfig::default()
            },
            Normalization::IDENTITY
        ),
        DataError::Config(_)
    ));
    assert!(matches!(
        bad(
            LoaderConfig::default(),
            Normalization {
                mean: 0.0,
                std: 0.0
            }
        ),
        DataError::Config(_)
    ));
    let mut aug = fracture_data::Augment::default();
    aug.rotation.max_degrees = -1.0;
    assert!(matches!(
        bad(
            LoaderConfig {
                augment: Some(aug),
                ..LoaderConfig::default()
            },
            Normalization::IDENTITY
        ),
        DataError::Config(_)
    ));
    let empty = split_with_labels(vec![], 8);
    assert!(BatchLoader::eval(empty, Normalization::IDENTITY, 4).is_err());
}

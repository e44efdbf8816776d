//! Loader throughput at 224 px: augmentation + NCHW assembly of a batch of 32, the same without
//! augmentation (evaluation), and decoding + resizing one file.
//!
//! Run: `cargo bench -p fracture-data --bench loader`. Criterion reports images/s
//! ("thrpt", elements = images). docs/BENCHMARKS.md quotes the figures.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fracture_data::phantom::PhantomConfig;
use fracture_data::{load_resized, Augment, BatchLoader, LoaderConfig, PreprocessConfig, Split};

const SIZE: usize = 224;
const BATCH: usize = 32;

fn loader_benches(c: &mut Criterion) {
    let cfg = PhantomConfig {
        size: SIZE,
        train: 128,
        val: 0,
        test: 0,
        ..PhantomConfig::default()
    };
    let mut folder = cfg.folder().expect("phantoms");
    let norm = folder.normalization().expect("train statistics");
    let train = std::sync::Arc::new(folder.take_split(Split::Train).expect("train split"));

    let mut group = c.benchmark_group("loader");
    group.sample_size(20);
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, augment) in [("augment", Some(Augment::default())), ("eval", None)] {
        let loader = BatchLoader::new(
            std::sync::Arc::clone(&train),
            norm,
            LoaderConfig {
                batch_size: BATCH,
                augment,
                prefetch: false,
                ..LoaderConfig::default()
            },
        )
        .expect("loader");
        let mut epoch = 0;
        group.bench_function(
            BenchmarkId::new(format!("{name}_assemble_{SIZE}px"), format!("b{BATCH}")),
            |b| {
                b.iter(|| {
                    epoch += 1;
                    loader.batch(epoch, 0)
                })
            },
        );
    }
    group.finish();

    // Decode + grayscale + resize of one 768x768 PNG to 224 px.
    let dir = tempfile::tempdir().expect("tempdir");
    let big = fracture_data::phantom::render(768, 1, true);
    let path = dir.path().join("phantom.png");
    image::GrayImage::from_raw(768, 768, big.pixels)
        .expect("buffer")
        .save(&path)
        .expect("write png");
    let pre = PreprocessConfig {
        image_size: SIZE,
        ..PreprocessConfig::default()
    };
    let mut group = c.benchmark_group("decode");
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    group.bench_function("png_768_to_224px", |b| {
        b.iter(|| load_resized(&path, &pre).expect("decode"))
    });
    group.finish();
}

criterion_group!(benches, loader_benches);
criterion_main!(benches);

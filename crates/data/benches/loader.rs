//! Loader throughput at 224 px: augmentation + NCHW assembly of a batch of 32, the same without
//! augmentation (evaluation), and decoding + resizing one file.
//!
//! Run: `cargo bench -p fracture-data --bench loader`. Criterion reports images/s
//! ("thrpt", elements = images). Then `loader_cpu_time` prints the CPU time per image that all
//! threads of the process received (Linux schedstat), which a loaded machine distorts less
//! than wall-clock time. docs/BENCHMARKS.md quotes the figures.

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

/// CPU time received by all threads of this process, in nanoseconds (Linux only).
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(entry.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Prints CPU microseconds per image for augment + assemble and eval assembly at 224 px.
fn loader_cpu_time(_: &mut Criterion) {
    if process_cpu_ns().is_none() {
        println!("loader_cpu_time: skipped (no /proc/self/task/*/schedstat)");
        return;
    }
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
    for (name, augment, batches) in [
        ("augment", Some(Augment::default()), 40),
        ("eval", None, 400),
    ] {
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
        let _warm_up = loader.batch(0, 0);
        let mut runs = Vec::new();
        for run in 0..5 {
            let (cpu0, wall0) = (process_cpu_ns(), std::time::Instant::now());
            for b in 0..batches {
                std::hint::black_box(loader.batch(run * batches + b, 0));
            }
            let cpu = process_cpu_ns().zip(cpu0).map(|(a, b)| a - b).unwrap_or(0);
            let images = (batches * BATCH) as f64;
            runs.push((
                cpu as f64 / 1e3 / images,
                images / wall0.elapsed().as_secs_f64(),
            ));
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (cpu_us, wall_rate) = runs[runs.len() / 2];
        println!(
            "loader_cpu_time/{name}_assemble_{SIZE}px/b{BATCH}: {cpu_us:.0} us CPU per image \
             = {:.0} images per CPU-second (median of 5; wall {wall_rate:.0} images/s, \
             {} rayon threads)",
            1e6 / cpu_us,
            rayon::current_num_threads()
        );
    }
}

criterion_group!(benches, loader_benches, loader_cpu_time);
criterion_main!(benches);

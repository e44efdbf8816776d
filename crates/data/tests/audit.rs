//! The leakage audit on planted copies: every planted copy (exact, lossless re-encode, JPEG at
//! quality 70, resized by 0.7, flipped, rotated by 90 degrees, brightness +20 %) is found, no
//! pair of distinct phantoms (same kind, other seed) is reported; precision and recall are
//! printed. The grouped split keeps planted groups whole and the class mix of each split within
//! 1 percentage point of the whole, and the same seed writes the same manifest. On
//! `../shared/datasets/fracatlas`, no exact copies across splits.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};

use fracture_data::audit::{
    plan_split, write_split, AuditConfig, AuditReport, LinkMode, Scan, SplitFractions,
};
use fracture_data::phantom::render;
use fracture_data::Split;
use fracture_test_support::shared_path;
use image::{imageops, GrayImage, ImageFormat};

/// A phantom of `size` px as an image (seeded; `fractured` picks the kind).
fn phantom(size: usize, seed: u64, fractured: bool) -> GrayImage {
    let p = render(size, seed, fractured);
    GrayImage::from_raw(size as u32, size as u32, p.pixels).unwrap()
}

/// The ways a picture is copied, each written by [`write_copy`].
const COPY_KINDS: [&str; 9] = [
    "exact",
    "png-as-bmp",
    "jpeg70",
    "resize70",
    "flip-h",
    "flip-v",
    "rot90",
    "bright+20",
    "contrast",
];

/// Writes `img` transformed by `kind` to `path` (the extension is chosen here).
fn write_copy(img: &GrayImage, kind: &str, path: &Path) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let png = |im: &GrayImage| {
        let p = path.with_extension("png");
        im.save_with_format(&p, ImageFormat::Png).unwrap();
        p
    };
    match kind {
        "exact" => png(img),
        "png-as-bmp" => {
            let p = path.with_extension("bmp");
            img.save_with_format(&p, ImageFormat::Bmp).unwrap();
            p
        }
        "jpeg70" => {
            let p = path.with_extension("jpg");
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut bytes), 70)
                .encode_image(img)
                .unwrap();
            std::fs::write(&p, bytes).unwrap();
            p
        }
        "resize70" => {
            let (w, h) = img.dimensions();
            let (nw, nh) = (
                (w as f32 * 0.7).round() as u32,
                (h as f32 * 0.7).round() as u32,
            );
            png(&imageops::resize(
                img,
                nw,
                nh,
                imageops::FilterType::Lanczos3,
            ))
        }
        "flip-h" => png(&imageops::flip_horizontal(img)),
        "flip-v" => png(&imageops::flip_vertical(img)),
        "rot90" => png(&imageops::rotate90(img)),
        "bright+20" => png(&GrayImage::from_fn(img.width(), img.height(), |x, y| {
            image::Luma([(img.get_pixel(x, y).0[0] as f32 * 1.2).min(255.0) as u8])
        })),
        "contrast" => png(&GrayImage::from_fn(img.width(), img.height(), |x, y| {
            image::Luma([(img.get_pixel(x, y).0[0] as f32 * 0.6 + 50.0) as u8])
        })),
        other => panic!("unknown copy kind {other}"),
    }
}

/// `root/{train,val,test}/{fractured,not_fractured}`: distinct phantoms everywhere, and for
/// each copy kind one phantom of train copied into test (and a few into val). Returns the
/// planted pairs as relative paths, with their kind.
fn planted_root(root: &Path) -> BTreeSet<(String, String, &'static str)> {
    let size = 160;
    let rel = |p: &Path| p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
    let mut planted = BTreeSet::new();
    let mut seed = 1000;
    for (split, n) in [("train", 14), ("val", 4), ("test", 4)] {
        for class in ["fractured", "not_fractured"] {
            for i in 0..n {
                seed += 1;
                let img = phantom(size, seed, class == "fractured");
                write_copy(
                    &img,
                    "exact",
                    &root.join(split).join(class).join(format!("d{i:02}")),
                );
            }
        }
    }
    // Copies of train images: test gets every kind, val three of them.
    for (k, kind) in COPY_KINDS.iter().enumerate() {
        let class = if k % 2 == 0 {
            "fractured"
        } else {
            "not_fractured"
        };
        let source = root.join("train").join(class).join(format!("d{k:02}.png"));
        let img = image::open(&source).unwrap().to_luma8();
        for split in ["test", "val"] {
            if split == "val" && k >= 3 {
                continue;
            }
            let copy = write_copy(
                &img,
                kind,
                &root.join(split).join(class).join(format!("copy-{kind}")),
            );
            planted.insert((rel(&source), rel(&copy), *kind));
        }
    }
    // A copy under the other label (a label conflict), rotated.
    let source = root.join("train/fractured/d12.png");
    let img = image::open(&source).unwrap().to_luma8();
    let copy = write_copy(
        &img,
        "rot90",
        &root.join("test/not_fractured/conflict-rot90"),
    );
    planted.insert((rel(&source), rel(&copy), "rot90"));
    planted
}

fn found_pairs(scan: &Scan) -> BTreeSet<(String, String)> {
    scan.pairs
        .iter()
        .map(|p| {
            let (a, b) = (
                scan.relative(&scan.files[p.a].file.path),
                scan.relative(&scan.files[p.b].file.path),
            );
            (a.clone().min(b.clone()), a.max(b))
        })
        .collect()
}

#[test]
fn every_planted_copy_is_found_and_no_distinct_pair() {
    let dir = tempfile::tempdir().unwrap();
    let planted = planted_root(dir.path());
    let scan = Scan::dataset(dir.path(), &AuditConfig::default(), &|| {}).unwrap();
    assert!(scan.unreadable.is_empty(), "{:?}", scan.unreadable);
    let found = found_pairs(&scan);
    // Expected: each planted copy with its source, and copies of one source with each other.
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    let mut by_source: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (src, copy, _) in &planted {
        by_source.entry(src).or_default().push(copy);
    }
    for (src, copies) in &by_source {
        let mut all: Vec<&str> = copies.clone();
        all.push(src);
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                expected.insert((a.min(b).to_string(), a.max(b).to_string()));
            }
        }
    }
    let true_pos = found.intersection(&expected).count();
    let precision = true_pos as f64 / found.len().max(1) as f64;
    let recall = true_pos as f64 / expected.len() as f64;
    println!(
        "{} files, {} planted pairs, {} reported: precision {precision:.3}, recall {recall:.3}",
        scan.files.len(),
        expected.len(),
        found.len()
    );
    for (src, copy, kind) in &planted {
        let key = (src.clone().min(copy.clone()), src.clone().max(copy.clone()));
        assert!(
            found.contains(&key),
            "planted {kind} copy {copy} of {src} not found"
        );
    }
    let false_pos: Vec<_> = found.difference(&expected).collect();
    assert!(
        false_pos.is_empty(),
        "distinct pictures reported as copies: {false_pos:?}"
    );
    assert_eq!((precision, recall), (1.0, 1.0));

    // Exact flags: the byte copy and the lossless re-encode are exact, the others are not.
    for p in &scan.pairs {
        let b = scan.relative(&scan.files[p.b].file.path);
        let a = scan.relative(&scan.files[p.a].file.path);
        // A source counts as "exact"; two copies of one kind (even JPEG) are the same pixels.
        let kind = |n: &str| {
            COPY_KINDS
                .iter()
                .find(|k| n.contains(&format!("-{k}.")))
                .map_or("exact", |k| *k)
        };
        let lossless = |k: &str| k == "exact" || k == "png-as-bmp";
        let (ka, kb) = (kind(&a), kind(&b));
        let exact_kind = (lossless(ka) && lossless(kb)) || ka == kb;
        assert_eq!(p.exact, exact_kind, "{a} ~ {b}: {p:?}");
    }

    let report = AuditReport::new(&scan);
    let test_in_train = report.pair("test", "train").unwrap();
    // 9 kinds + the conflict copy; 2 of them exact.
    assert_eq!(
        (test_in_train.exact_files, test_in_train.near_files),
        (2, 10)
    );
    let val_in_train = report.pair("val", "train").unwrap();
    assert_eq!((val_in_train.exact_files, val_in_train.near_files), (2, 3));
    // Train's own files: the three sources copied into both val and test have no copy in train.
    assert_eq!(report.pair("train", "train").unwrap().near_files, 0);
    // val's three copies have their counterparts in test.
    assert_eq!(report.pair("val", "test").unwrap().near_files, 3);
    assert_eq!(
        report.pairs.len(),
        9,
        "one entry per ordered pair of 3 splits"
    );
    let conflicts: Vec<&str> = report
        .label_conflicts
        .iter()
        .map(|c| c.path.as_str())
        .collect();
    assert_eq!(
        conflicts,
        [
            "train/fractured/d12.png",
            "test/not_fractured/conflict-rot90.png"
        ]
    );
    assert!(!report.clean);
    assert!(
        report.verdict[0].starts_with("val is ") && report.verdict[1].starts_with("test is "),
        "{:?}",
        report.verdict
    );
    println!("{report}");
}

#[test]
fn a_clean_split_is_reported_clean() {
    let dir = tempfile::tempdir().unwrap();
    for (split, base) in [("train", 0), ("val", 100), ("test", 200)] {
        for i in 0..6 {
            let img = phantom(128, base + i, i % 2 == 0);
            write_copy(
                &img,
                "exact",
                &dir.path().join(split).join("a").join(format!("{i}")),
            );
        }
    }
    let report =
        AuditReport::new(&Scan::dataset(dir.path(), &AuditConfig::default(), &|| {}).unwrap());
    assert!(report.clean, "{report}");
    assert!(report.pairs.iter().all(|p| p.near_files == 0), "{report}");
    assert!(
        report.verdict[0].starts_with("clean"),
        "{:?}",
        report.verdict
    );
}

/// A folder of class folders with planted groups: `fractured` 150 files and `not_fractured` 350,
/// of which groups of 2 to 4 (a source and its copies); one group is spread over both classes.
/// Returns each planted group (file names relative to the folder).
fn grouped_folder(dir: &Path) -> Vec<Vec<String>> {
    let rel = |p: &Path| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
    let mut groups = Vec::new();
    for (class, n) in [("fractured", 150usize), ("not_fractured", 350)] {
        let mut i = 0;
        let mut seed = if class == "fractured" { 5000 } else { 9000 };
        while i < n {
            seed += 1;
            let img = phantom(96, seed, class == "fractured");
            let base = dir.join(class).join(format!("s{seed}"));
            let src = write_copy(&img, "exact", &base);
            let mut group = vec![rel(&src)];
            // Every 7th picture gets 1 to 3 copies.
            let extra = if seed % 7 == 0 {
                1 + (seed as usize / 7) % 3
            } else {
                0
            };
            for (c, kind) in ["flip-h", "jpeg70", "rot90"]
                .iter()
                .take(extra.min(n - i - 1))
                .enumerate()
            {
                let p = write_copy(
                    &img,
                    kind,
                    &dir.join(class).join(format!("s{seed}-copy{c}")),
                );
                group.push(rel(&p));
            }
            i += group.len();
            groups.push(group);
        }
    }
    // One picture in both classes: must be left out.
    let img = phantom(96, 77, true);
    let a = write_copy(&img, "exact", &dir.join("fractured/both"));
    let b = write_copy(&img, "flip-v", &dir.join("not_fractured/both"));
    groups.push(vec![rel(&a), rel(&b)]);
    groups
}

#[test]
fn split_keeps_groups_whole_stratified_and_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("from");
    let groups = grouped_folder(&from);
    let files = fracture_data::audit::list_class_folder(&from, "all").unwrap();
    let scan = Scan::run(&from, files, &AuditConfig::default(), &|| {}).unwrap();
    let fractions = SplitFractions {
        val: 0.15,
        test: 0.15,
    };
    let plan = plan_split(&scan, fractions, 42).unwrap();
    let split_of: BTreeMap<String, &str> = plan
        .rows
        .iter()
        .map(|r| (scan.relative(&scan.files[r.file].file.path), r.split_name()))
        .collect();
    let planted_copies: usize = groups.iter().filter(|g| g.len() > 1).count();
    assert!(planted_copies >= 20, "only {planted_copies} planted groups");
    for g in &groups {
        let splits: BTreeSet<&str> = g.iter().map(|f| split_of[f]).collect();
        assert_eq!(splits.len(), 1, "group {g:?} spread over {splits:?}");
    }
    assert_eq!(split_of["fractured/both.png"], "excluded");
    assert_eq!(plan.conflicting_groups, 1);
    // Class mix of each split within 1 percentage point of the whole.
    let kept: Vec<_> = plan.rows.iter().filter(|r| r.split.is_some()).collect();
    let frac = |rows: &[&fracture_data::audit::PlanRow]| {
        let f = rows
            .iter()
            .filter(|r| scan.files[r.file].file.class == "fractured")
            .count();
        f as f64 / rows.len() as f64
    };
    let whole = frac(&kept);
    for split in Split::ALL {
        let rows: Vec<_> = kept
            .iter()
            .copied()
            .filter(|r| r.split == Some(split))
            .collect();
        let share = rows.len() as f64 / kept.len() as f64;
        let expected = if split == Split::Train { 0.70 } else { 0.15 };
        println!(
            "{split}: {} files ({:.1} %), fractured {:.2} % (whole {:.2} %)",
            rows.len(),
            100.0 * share,
            100.0 * frac(&rows),
            100.0 * whole
        );
        assert!((share - expected).abs() < 0.01, "{split}: {share}");
        assert!(
            (frac(&rows) - whole).abs() <= 0.01,
            "{split}: class mix {} vs {whole}",
            frac(&rows)
        );
    }
    // The same seed writes the same manifest; another seed another split.
    let manifest = |seed: u64, out: &str| {
        let plan = plan_split(&scan, fractions, seed).unwrap();
        let m = write_split(
            &scan,
            &plan,
            &dir.path().join(out),
            LinkMode::Symlink,
            false,
        )
        .unwrap();
        std::fs::read_to_string(m).unwrap()
    };
    let (a, b, c) = (manifest(42, "a"), manifest(42, "b"), manifest(43, "c"));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.lines().count(), 1 + scan.files.len());
    // Links resolve to the sources.
    let first = a
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|row| !row[0].is_empty())
        .unwrap();
    let linked = std::fs::read(dir.path().join("a").join(first[0])).unwrap();
    assert_eq!(linked, std::fs::read(from.join(first[1])).unwrap());
}

#[test]
fn shared_fracatlas_has_no_exact_copies_across_splits() {
    let Some(root) = shared_path("datasets/fracatlas") else {
        return;
    };
    let started = std::time::Instant::now();
    let scan = Scan::dataset(&root, &AuditConfig::default(), &|| {}).unwrap();
    let report = AuditReport::new(&scan);
    println!(
        "fracatlas: {} files in {:.1} s on {} threads",
        report.files,
        started.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    println!("{report}");
    assert!(report.files > 3000, "{} files", report.files);
    for p in &report.pairs {
        if p.split != p.in_split {
            assert_eq!(
                p.exact_files, 0,
                "{} has exact copies in {}",
                p.split, p.in_split
            );
        }
    }
}

/// How the default thresholds were chosen, checked: copies (JPEG 70, resize 0.7, flip,
/// rotation, brightness, contrast) of every 40th FracAtlas radiograph stay well inside them,
/// and no two distinct radiographs of the shared split (grouped by near-duplicates when it was
/// made) reach them. Prints both margins.
#[test]
fn thresholds_separate_real_copies_from_distinct_radiographs() {
    use fracture_data::audit::{Dihedral, NearSignature};
    use rayon::prelude::*;
    let Some(root) = shared_path("datasets/fracatlas") else {
        return;
    };
    let cfg = AuditConfig::default();
    let files = fracture_data::audit::list_dataset(&root).unwrap();
    let sigs: Vec<NearSignature> = files
        .par_iter()
        .map(|f| NearSignature::of(&image::open(&f.path).unwrap().to_luma8()))
        .collect();
    // Best (smallest distance, largest correlation) of a against b over the 8 transforms.
    let best = |a: &NearSignature, b: &NearSignature| {
        let mut h = 64;
        let mut c = -1f32;
        for (t, ph) in Dihedral::ALL.into_iter().zip(a.phash) {
            h = h.min((ph ^ b.phash[0]).count_ones());
            c = c.max(a.correlation(b, t));
        }
        (h, c)
    };
    let (mut worst_h, mut worst_c) = (0, 1f32);
    let dir = tempfile::tempdir().unwrap();
    for (i, f) in files.iter().enumerate().step_by(40) {
        let img = image::open(&f.path).unwrap().to_luma8();
        for kind in &COPY_KINDS[2..] {
            let p = write_copy(&img, kind, &dir.path().join(format!("{i}-{kind}")));
            let copy = NearSignature::of(&image::open(&p).unwrap().to_luma8());
            let (h, c) = best(&copy, &sigs[i]);
            worst_h = worst_h.max(h);
            worst_c = worst_c.min(c);
        }
    }
    // Distinct pairs: the closest correlation among pairs within twice the Hamming threshold.
    let n = sigs.len();
    let closest = (0..n)
        .into_par_iter()
        .map(|i| {
            (i + 1..n)
                .filter(|&j| {
                    sigs[i]
                        .phash
                        .iter()
                        .map(|p| (p ^ sigs[j].phash[0]).count_ones())
                        .min()
                        .unwrap()
                        <= 2 * cfg.max_hamming
                })
                .map(|j| best(&sigs[i], &sigs[j]).1)
                .fold(-1f32, f32::max)
        })
        .reduce(|| -1f32, f32::max);
    println!(
        "planted copies of {} radiographs: pHash distance <= {worst_h} bits, correlation >= {worst_c:.4}; \
         distinct pairs within {} bits: correlation <= {closest:.4}; thresholds {} bits, {}",
        files.len().div_ceil(40),
        2 * cfg.max_hamming,
        cfg.max_hamming,
        cfg.min_correlation
    );
    assert!(worst_h <= cfg.max_hamming && worst_c >= cfg.min_correlation);
    assert!(closest < cfg.min_correlation);
}

//! DICOM in (issue 19), on the two corpora of `../shared/datasets/dicom-sample` and on
//! synthetic files:
//!
//! - `fracatlas/`: each of the five encodings of six FracAtlas test images (12-bit MONOCHROME2
//!   and MONOCHROME1 with a window, 16-bit RLE, 10-bit implicit VR with a rescale, 8-bit
//!   without a window) decodes to nearly the PNG it was made from (mean absolute difference
//!   per variant printed; bound [`MAX_MAD`]);
//! - `pydicom-test-files/`: every file is decoded or refused with a clear error, within a
//!   time bound per file, never a panic; the expected outcome of each file is listed in
//!   [`EXPECTED`] and the counts are printed;
//! - synthetic files: mutated and truncated bytes never panic (proptest), a phantom folder of
//!   DICOM files without extensions loads like PNGs, a huge header is refused before decoding.
//!
//! The shared corpora are skipped with a message when `../shared` is absent, and required
//! when the `CI` environment variable is set.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fracture_data::dicom::{
    decode_file_any_modality, is_dicom_file, render_monochrome, sop_instance_uid, SyntheticDicom,
    Voi,
};
use fracture_data::phantom::PhantomConfig;
use fracture_data::{
    decode_luma8, decode_luma8_from_memory, BadFileKind, BadFilePolicy, DataError, DecodeLimits,
    ImageFolder, LoadOptions, Split,
};
use fracture_test_support::shared_path;
use proptest::prelude::*;

/// `../shared/datasets/dicom-sample/<sub>`, or `None` (skipped; fails under CI).
fn sample_dir(sub: &str) -> Option<PathBuf> {
    shared_path(&format!("datasets/dicom-sample/{sub}"))
}

fn mad(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .sum::<f64>()
        / a.len() as f64
}

/// Decodes the 30 files and compares them with their PNGs and with each other.
///
/// The files' windows are close to the 0.5-99.5 percentile range of each image, so a correct
/// display stretches the PNG's contrast: the reference is the PNG through the same stretch
/// (`render_monochrome` with `Voi::Percentiles`). The 12-bit variants store a gamma curve of
/// the PNG (a detector's raw response) that a linear window does not undo, so they are
/// checked against each other (MONOCHROME1 against MONOCHROME2) and only loosely against the
/// PNG; the bounds below are the measured figures with a margin.
///
/// Measured (mean absolute difference in 8-bit levels, mean / max over the six images):
///
/// | variant | vs PNG stretched to its 0.5-99.5 % range | vs PNG as is |
/// |---|---|---|
/// | `cr16_rle` | 2.19 / 5.49 | 11.51 / 21.44 |
/// | `dx10_implicit_rescale` | 2.15 / 5.48 | 11.51 / 21.39 |
/// | `dx8_nowindow` | 0.00 / 0.00 | 9.75 / 17.14 |
/// | `dx12_mono2` | 12.59 / 16.35 | 17.86 / 30.92 |
/// | `dx12_mono1` | 9.84 / 12.79 | 16.24 / 27.85 |
///
/// Between variants: RLE and implicit-VR-with-rescale agree within 0.10 levels on every image;
/// MONOCHROME1 and MONOCHROME2 within 0.14 to 8.13 (their windows differ slightly); no-window
/// and RLE within 0.00 to 5.49 (the files' windows are close to, not equal to, the
/// percentile range).
#[test]
fn fracatlas_variants_match_their_pngs() {
    let Some(dir) = sample_dir("fracatlas") else {
        return;
    };
    let pngs = dir.parent().unwrap().parent().unwrap().join("fracatlas");
    let text = std::fs::read_to_string(dir.join("labels.csv")).unwrap();
    let limits = DecodeLimits::default();
    let mut decoded: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    let mut stretched: BTreeMap<String, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let file = dir.join(Path::new(f[0]).file_name().unwrap());
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let (image, variant) = name.trim_end_matches(".dcm").split_once('_').unwrap();
        let png = decode_luma8(&pngs.join(f[2]), &limits).unwrap();
        let dcm = decode_luma8(&file, &limits).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dcm.dimensions(), png.dimensions(), "{name}");
        let values: Vec<f32> = png.as_raw().iter().map(|&v| v as f32).collect();
        let voi = Voi::Percentiles {
            low: 0.5,
            high: 99.5,
        };
        let reference = render_monochrome(&values, &voi, false);
        stretched.insert(image.to_string(), (png.into_raw(), reference));
        decoded.insert((image.to_string(), variant.to_string()), dcm.into_raw());
        let uid = sop_instance_uid(&file)
            .unwrap()
            .expect("a DICOM file has a UID");
        assert!(uid.chars().all(|c| c.is_ascii_digit() || c == '.'), "{uid}");
    }
    assert_eq!(decoded.len(), 30);
    // (variant, bound on the MAD against the stretched PNG)
    let bounds = [
        ("cr16_rle", 6.0),
        ("dx10_implicit_rescale", 6.0),
        ("dx8_nowindow", 0.5),
        ("dx12_mono2", 18.0),
        ("dx12_mono1", 18.0),
    ];
    for (variant, bound) in bounds {
        let (mut raw, mut st) = (Vec::new(), Vec::new());
        for (image, (png, reference)) in &stretched {
            let d = &decoded[&(image.clone(), variant.to_string())];
            raw.push(mad(d, png));
            st.push(mad(d, reference));
        }
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        eprintln!(
            "{variant:>22}: MAD vs stretched PNG mean {:.2} max {:.2}; vs PNG as is mean {:.2} max {:.2}",
            mean(&st),
            max(&st),
            mean(&raw),
            max(&raw)
        );
        assert!(max(&st) <= bound, "{variant}: {st:?}");
    }
    for image in stretched.keys() {
        let get = |v: &str| &decoded[&(image.clone(), v.to_string())];
        let pairs = [
            ("dx12_mono1", "dx12_mono2", 9.0),
            ("dx10_implicit_rescale", "cr16_rle", 0.25),
            ("dx8_nowindow", "cr16_rle", 6.0),
        ];
        for (a, b, bound) in pairs {
            let m = mad(get(a), get(b));
            eprintln!("{image}: {a} vs {b}: MAD {m:.3}");
            assert!(m <= bound, "{image}: {a} vs {b}: {m}");
        }
    }
}

/// The outcome of each file of `pydicom-test-files` that is not "not an image", with why.
/// Measured: 176 files, 75 decoded, 101 refused (77 not an image, 15 corrupt, 8 unsupported,
/// 1 too large).
///
/// Not an image (77): 9 files that are not DICOM at all (READMEs, `.json`, `.dump`, `.icc`,
/// `.gz`); 4 DICOM data sets written without the `DICM` file meta header, which dicom-rs does
/// not open (`no_meta.dcm`, `ExplVR_*NoMeta.dcm`, `rtstruct.dcm`); and 64 objects without
/// pixel data: 7 DICOMDIRs, the 50 CT records of `TINY_ALPHA` (stripped of their pixels), 3
/// structured reports, an RT plan, an ECG waveform, `priv_SQ.dcm` and
/// `empty_charset_LEI.dcm`. Files under `dicomdirtests/<number>/` are small CT/MR images and
/// decode.
const EXPECTED: &[(&str, Outcome)] = &[
    ("693_J2KI.dcm", Outcome::Decoded),
    ("CT_small.dcm", Outcome::Decoded),
    ("ExplVR_BigEnd.dcm", Outcome::Decoded),
    ("GDCMJ2K_TextGBR.dcm", Outcome::Decoded),
    ("J2K_pixelrep_mismatch.dcm", Outcome::Decoded),
    // 12-bit lossy JPEG (process 4): no pure-Rust decoder reads 12-bit DCT JPEG, so it is
    // refused as unsupported, naming the bit depth, before the codec is called.
    ("JPEG-lossy.dcm", Outcome::Unsupported),
    ("JPGExtended.dcm", Outcome::Unsupported),
    // Four codestream bytes overwritten by a delimiter: the J2K header announces a width of
    // 3 722 445 056 px against the header's 256 x 1024, refused as damaged (naming both
    // sizes) before the codec allocates for it.
    ("JPEG2000-embedded-sequence-delimiter.dcm", Outcome::Corrupt),
    ("JPEG2000.dcm", Outcome::Decoded),
    // JPEG-LS: no pure-Rust codec (CharLS is C).
    ("JPEGLSNearLossless_08.dcm", Outcome::Unsupported),
    ("JPEGLSNearLossless_16.dcm", Outcome::Unsupported),
    ("MR_small_jpeg_ls_lossless.dcm", Outcome::Unsupported),
    ("SC_rgb_jls_lossy_line.dcm", Outcome::Unsupported),
    ("SC_rgb_jls_lossy_sample.dcm", Outcome::Unsupported),
    ("MR_small.dcm", Outcome::Decoded),
    ("MR_small_RLE.dcm", Outcome::Decoded),
    ("MR_small_bigendian.dcm", Outcome::Decoded),
    ("MR_small_expb.dcm", Outcome::Decoded),
    ("MR_small_implicit.dcm", Outcome::Decoded),
    ("MR_small_jp2klossless.dcm", Outcome::Decoded),
    ("MR_small_padded.dcm", Outcome::Decoded),
    ("MR_truncated.dcm", Outcome::Corrupt),
    ("SC_jpeg_no_color_transform.dcm", Outcome::Decoded),
    ("SC_jpeg_no_color_transform_2.dcm", Outcome::Decoded),
    ("SC_rgb_dcmtk_+eb+cr.dcm", Outcome::Decoded),
    ("SC_rgb_dcmtk_+eb+cy+n1.dcm", Outcome::Decoded),
    ("SC_rgb_dcmtk_+eb+cy+n2.dcm", Outcome::Decoded),
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", Outcome::Decoded),
    ("SC_rgb_dcmtk_+eb+cy+s2.dcm", Outcome::Decoded),
    ("SC_rgb_dcmtk_+eb+cy+s4.dcm", Outcome::Decoded),
    ("SC_rgb_gdcm_KY.dcm", Outcome::Decoded),
    // Its meta says explicit VR but the data set is implicit VR: a length check catches the
    // text "ORIGINAL" read as a length (dicom-rs alone also fails on it).
    ("SC_rgb_jpeg.dcm", Outcome::Corrupt),
    ("SC_rgb_jpeg_app14_dcmd.dcm", Outcome::Decoded),
    ("SC_rgb_jpeg_dcmd.dcm", Outcome::Decoded),
    ("SC_rgb_jpeg_dcmtk.dcm", Outcome::Decoded),
    ("SC_rgb_jpeg_gdcm.dcm", Outcome::Decoded),
    ("SC_rgb_jpeg_lossy_gdcm.dcm", Outcome::Decoded),
    ("SC_rgb_rle.dcm", Outcome::Decoded),
    ("SC_rgb_rle_16bit.dcm", Outcome::Decoded),
    ("SC_rgb_rle_16bit_2frame.dcm", Outcome::Decoded),
    ("SC_rgb_rle_2frame.dcm", Outcome::Decoded),
    // dicom-rs's RLE decoder fails on 32-bit segments (4 per sample).
    ("SC_rgb_rle_32bit.dcm", Outcome::Corrupt),
    ("SC_rgb_rle_32bit_2frame.dcm", Outcome::Corrupt),
    ("rtdose_rle.dcm", Outcome::Corrupt),
    ("rtdose_rle_1frame.dcm", Outcome::Corrupt),
    ("SC_rgb_small_odd.dcm", Outcome::Decoded),
    ("SC_rgb_small_odd_big_endian.dcm", Outcome::Decoded),
    ("SC_rgb_small_odd_jpeg.dcm", Outcome::Decoded),
    ("SC_ybr_full_422_uncompressed.dcm", Outcome::Decoded),
    // An undefined-length UN element read as 3.7 GB: refused before dicom-parser allocates.
    ("UN_sequence.dcm", Outcome::Corrupt),
    // Number of Frames holds a value dicom-pixeldata cannot convert.
    ("badVR.dcm", Outcome::Corrupt),
    ("dicomdirtests/DICOMDIR-nooffset", Outcome::Corrupt),
    ("examples_jpeg2k.dcm", Outcome::Decoded),
    ("examples_overlay.dcm", Outcome::Decoded),
    // PALETTE COLOR: not a radiograph's photometric interpretation.
    ("examples_palette.dcm", Outcome::Unsupported),
    ("examples_rgb_color.dcm", Outcome::Decoded),
    ("examples_ybr_color.dcm", Outcome::Decoded),
    ("image_dfl.dcm", Outcome::Decoded),
    // 1-bit segmentation masks.
    ("liver_1frame.dcm", Outcome::Unsupported),
    ("liver_expb_1frame.dcm", Outcome::Unsupported),
    ("meta_missing_tsyntax.dcm", Outcome::Corrupt),
    ("nested_priv_SQ.dcm", Outcome::Corrupt),
    ("no_meta_group_length.dcm", Outcome::Corrupt),
    ("rtdose.dcm", Outcome::Decoded),
    ("rtdose_1frame.dcm", Outcome::Decoded),
    ("rtdose_expb.dcm", Outcome::Decoded),
    ("rtdose_expb_1frame.dcm", Outcome::Decoded),
    ("rtplan_truncated.dcm", Outcome::Corrupt),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Decoded,
    NotAnImage,
    Unsupported,
    Corrupt,
    TooLarge,
    Other,
}

fn outcome(r: &Result<image::GrayImage, DataError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Decoded,
        Err(DataError::NotAnImage { .. } | DataError::UnknownFormat { .. }) => Outcome::NotAnImage,
        Err(DataError::Unsupported { .. }) => Outcome::Unsupported,
        Err(DataError::Corrupt { .. }) => Outcome::Corrupt,
        Err(DataError::TooLarge { .. }) => Outcome::TooLarge,
        Err(_) => Outcome::Other,
    }
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Decodes `path` on another thread: `None` if it took longer than `bound`; a panic fails.
fn decode_bounded(path: &Path, bound: Duration) -> Option<Result<image::GrayImage, DataError>> {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        // Every modality, to check the encodings (the modality check has its own test).
        let r = if is_dicom_file(&p) {
            decode_file_any_modality(&p, &DecodeLimits::default())
        } else {
            decode_luma8(&p, &DecodeLimits::default())
        };
        let _ = tx.send(r);
    });
    match rx.recv_timeout(bound) {
        Ok(r) => Some(r),
        Err(mpsc::RecvTimeoutError::Timeout) => None,
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("{}: the decoder panicked", path.display())
        }
    }
}

#[test]
fn pydicom_files_decode_or_are_refused_clearly() {
    let Some(dir) = sample_dir("pydicom-test-files") else {
        return;
    };
    let mut files = Vec::new();
    all_files(&dir, &mut files);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut mismatches = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(&dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let start = Instant::now();
        let r = decode_bounded(path, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{rel}: no answer within 20 s"));
        let got = outcome(&r);
        let line = match &r {
            Ok(img) => format!("decoded {}x{}", img.width(), img.height()),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(&*path.to_string_lossy()), "{msg}");
                assert!(BadFileKind::of(e).is_some(), "{rel}: {msg}");
                format!("refused: {msg}")
            }
        };
        eprintln!("{rel} ({} ms): {line}", start.elapsed().as_millis());
        *counts.entry(format!("{got:?}")).or_default() += 1;
        let numbered = rel
            .strip_prefix("dicomdirtests/")
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
        let default = if numbered {
            Outcome::Decoded
        } else {
            Outcome::NotAnImage
        };
        let expected = EXPECTED
            .iter()
            .find(|(name, _)| *name == rel)
            .map_or(default, |(_, o)| *o);
        if got != expected {
            mismatches.push(format!(
                "{rel}: expected {expected:?}, got {got:?} ({line})"
            ));
        }
    }
    eprintln!("{} files: {counts:?}", files.len());
    assert_eq!(files.len(), 176);
    assert_eq!(counts.get("Decoded"), Some(&75));
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Issue 29/31: a DICOM object that is not a projection radiograph is refused by the loader
/// every command uses, naming its modality; the damaged and 12-bit files say what they are.
#[test]
fn only_projection_radiographs_are_read_and_refusals_say_why() {
    let Some(dir) = sample_dir("pydicom-test-files") else {
        return;
    };
    let limits = DecodeLimits::default();
    for (file, needle) in [
        (
            "CT_small.dcm",
            "modality CT (computed tomography) is not a projection radiograph",
        ),
        ("MR_small.dcm", "modality MR (magnetic resonance)"),
        ("JPGExtended.dcm", "modality NM (nuclear medicine)"),
        ("rtdose.dcm", "modality RTDOSE"),
    ] {
        let e = decode_luma8(&dir.join(file), &limits).unwrap_err();
        assert!(matches!(e, DataError::Unsupported { .. }), "{file}: {e}");
        assert!(e.to_string().contains(needle), "{file}: {e}");
    }
    for (file, needle) in [
        ("JPGExtended.dcm", "12-bit extended JPEG"),
        ("JPEG-lossy.dcm", "12-bit extended JPEG"),
        (
            "JPEG2000-embedded-sequence-delimiter.dcm",
            "announces 3722445056x1024 px but the header (Rows/Columns) says 256x1024 px",
        ),
    ] {
        let e = decode_file_any_modality(&dir.join(file), &limits).unwrap_err();
        assert!(e.to_string().contains(needle), "{file}: {e}");
        // The 12-bit JPEGs are whole, only unsupported; the JPEG 2000 file is damaged (its
        // codestream disagrees with its header) and says so as corrupt data.
        let damaged = file.starts_with("JPEG2000");
        assert_eq!(e.to_string().contains("corrupt"), damaged, "{file}: {e}");
    }
    // The radiographs of the sample (DX and CR) are read.
    let Some(fa) = sample_dir("fracatlas") else {
        return;
    };
    let mut n = 0;
    for e in std::fs::read_dir(fa).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "dcm") {
            decode_luma8(&p, &limits).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert_eq!(n, 30);
}

fn phantom_dicom(seed: u32) -> Vec<u8> {
    let gray = common::noisy_gray(24, 16, seed);
    SyntheticDicom::from_luma8(gray.as_raw(), 24, 16, "1.2.3.4.5").to_bytes()
}

#[test]
fn synthetic_files_follow_the_pipeline() {
    let limits = DecodeLimits::default();
    let p = Path::new("mem");
    // MONOCHROME1 with the same stored values inverts the picture.
    let gray = common::noisy_gray(24, 16, 3);
    let mut dcm = SyntheticDicom::from_luma8(gray.as_raw(), 24, 16, "1.2");
    let mono2 = decode_luma8_from_memory(&dcm.to_bytes(), p, &limits).unwrap();
    assert_eq!(mono2.as_raw(), gray.as_raw());
    dcm.monochrome1 = true;
    let mono1 = decode_luma8_from_memory(&dcm.to_bytes(), p, &limits).unwrap();
    assert!(mono1
        .as_raw()
        .iter()
        .zip(gray.as_raw())
        .all(|(&a, &b)| a == 255 - b));
    // A rescale with the window in modality units gives the same picture.
    dcm.monochrome1 = false;
    dcm.rescale = Some((2.0, -1024.0));
    dcm.window = Some((2.0 * 2048.0 - 1024.0 - 0.5, 2.0 * 4096.0 - 1.0));
    let rescaled = decode_luma8_from_memory(&dcm.to_bytes(), p, &limits).unwrap();
    let mad: u32 = rescaled
        .as_raw()
        .iter()
        .zip(gray.as_raw())
        .map(|(&a, &b)| (a as i32 - b as i32).unsigned_abs())
        .max()
        .unwrap();
    assert!(mad <= 1, "{mad}");
    // No preamble: `DICM` at byte 0.
    let bytes = phantom_dicom(1);
    let img = decode_luma8_from_memory(&bytes[128..], p, &limits).unwrap();
    assert_eq!(img.dimensions(), (24, 16));
}

#[test]
fn huge_header_is_refused_before_decoding() {
    let mut dcm = SyntheticDicom::from_luma8(&[0; 4], 2, 2, "1.2");
    dcm.width = 60_000;
    dcm.height = 60_000; // pixel data still holds 4 values
    let err = decode_luma8_from_memory(
        &dcm.to_bytes(),
        "bomb.dcm".as_ref(),
        &DecodeLimits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, DataError::TooLarge { width: 60_000, .. }),
        "{err}"
    );
    let small = DecodeLimits {
        max_width: 100,
        max_height: 100,
        max_alloc: 1 << 20,
    };
    let err = decode_luma8_from_memory(&phantom_dicom(2), "a.dcm".as_ref(), &small).unwrap();
    assert_eq!(err.dimensions(), (24, 16));
    let tiny = DecodeLimits {
        max_alloc: 100,
        ..small
    };
    let err = decode_luma8_from_memory(&phantom_dicom(2), "a.dcm".as_ref(), &tiny).unwrap_err();
    assert!(matches!(err, DataError::TooLarge { .. }), "{err}");
}

#[test]
fn a_folder_of_extensionless_dicom_files_loads_like_pngs() {
    let root = tempfile::tempdir().unwrap();
    let cfg = PhantomConfig {
        size: 32,
        train: 8,
        val: 4,
        test: 0,
        ..Default::default()
    };
    let expected = cfg.folder().unwrap();
    for split in [Split::Train, Split::Val] {
        let data = expected.split(split).unwrap();
        for i in 0..data.len() {
            let class = &data.classes()[data.labels()[i]];
            let dir = root.path().join(split.dir_name()).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            let uid = format!("1.2.826.0.1.{}.{i}", split as usize);
            let bytes = SyntheticDicom::from_luma8(data.image(i), 32, 32, &uid).to_bytes();
            // Half with `.dcm`, half without an extension, as archives export them.
            let name = if i % 2 == 0 {
                format!("IM{i:04}")
            } else {
                format!("IM{i:04}.dcm")
            };
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    // An RT-plan-like object (no pixel data) is a bad file under the policy.
    let mut plan = phantom_dicom(0);
    let pixel_tag = [0xE0, 0x7F, 0x10, 0x00];
    let at = plan.windows(4).rposition(|w| w == pixel_tag).unwrap();
    plan.truncate(at);
    std::fs::write(root.path().join("train/fractured/PLAN"), &plan).unwrap();

    let opts = LoadOptions::new(32).with_policy(BadFilePolicy::Skip);
    let data = ImageFolder::load(root.path(), &opts).unwrap();
    assert_eq!(data.summary().loaded, 12);
    assert_eq!(data.summary().skipped.len(), 1);
    assert_eq!(data.summary().skipped[0].kind, BadFileKind::UnknownFormat);
    assert!(data.summary().skipped[0].reason.contains("not an image"));
    assert_eq!(
        data.train().unwrap().images(),
        expected.train().unwrap().images()
    );
    let err = ImageFolder::load(root.path(), &LoadOptions::new(32)).unwrap_err();
    assert!(matches!(err, DataError::NotAnImage { .. }), "{err}");
}

thread_local! {
    static PANICS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Panics seen on this thread so far, including those that `fracture_data` contains and turns
/// into errors: a hook counts them, so the property test sees dicom-rs's own behaviour.
fn contained_panics() -> usize {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            default(info);
        }));
    });
    PANICS.with(|p| p.get())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Mutated and truncated DICOM bytes give an image or an error, never a panic, and never
    /// an image beyond the limits.
    #[test]
    fn mutated_dicom_never_panics(
        seed in 0u32..1000,
        flips in proptest::collection::vec((0usize..2000, any::<u8>()), 0..12),
        cut in proptest::option::of(0usize..2000),
    ) {
        let mut bytes = phantom_dicom(seed);
        let n = bytes.len();
        for (at, v) in flips {
            // Keep the magic most of the time, so that the DICOM reader is what is exercised.
            let i = 132 + at % (n - 132);
            bytes[i] = v;
        }
        if let Some(c) = cut {
            bytes.truncate(132 + c % (n - 132));
        }
        let limits = DecodeLimits { max_width: 256, max_height: 256, max_alloc: 4 << 20 };
        let before = contained_panics();
        let r = std::panic::catch_unwind(|| {
            decode_luma8_from_memory(&bytes, "fuzz.dcm".as_ref(), &limits)
        });
        let r = r.expect("no panic");
        // Not even one contained inside the decoder (see `count_panics`).
        prop_assert_eq!(contained_panics(), before);
        if let Ok(img) = r {
            prop_assert!(img.width() <= 256 && img.height() <= 256);
        }
    }
}

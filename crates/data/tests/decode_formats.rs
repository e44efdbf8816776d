//! Decoding by content: every supported format and colour type becomes one luminance channel,
//! lying extensions do not matter, and every bad-file case gives a clear error naming the path.

mod common;

use common::{encode, noisy_gray, png_header_claiming};
use fracture_data::{decode_luma8, load_resized, DataError, DecodeLimits, PreprocessConfig};
use image::{DynamicImage, ImageFormat};

/// BT.601 luminance of (100, 150, 200): 0.299*100 + 0.587*150 + 0.114*200 = 140.75.
const RGB: [u8; 3] = [100, 150, 200];
const LUMA: i32 = 141;

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn rgb_image() -> DynamicImage {
    DynamicImage::ImageRgb8(image::RgbImage::from_pixel(20, 10, image::Rgb(RGB)))
}

#[test]
fn every_format_and_colour_type_decodes_to_luminance_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
        20,
        10,
        image::Rgba([RGB[0], RGB[1], RGB[2], 255]),
    ));
    let gray16 = DynamicImage::ImageLuma16(image::ImageBuffer::from_pixel(
        20,
        10,
        image::Luma([141u16 * 257]),
    ));
    let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(20, 10, image::Luma([141])));
    // (file name with a possibly lying extension, bytes, tolerance)
    let cases: Vec<(&str, Vec<u8>, i32)> = vec![
        (
            "rgb_png_named.jpg",
            encode(&rgb_image(), ImageFormat::Png),
            0,
        ),
        ("rgba.png", encode(&rgba, ImageFormat::Png), 0),
        ("gray16.png", encode(&gray16, ImageFormat::Png), 0),
        ("gray.jpeg", encode(&gray, ImageFormat::Jpeg), 2),
        ("rgb.jpg", encode(&rgb_image(), ImageFormat::Jpeg), 3),
        // GIF is palette-based: the palette quantises the colour slightly.
        ("gif_named.jpg", encode(&rgba, ImageFormat::Gif), 6),
        ("bitmap.bmp", encode(&rgb_image(), ImageFormat::Bmp), 0),
        ("scan.tif", encode(&rgb_image(), ImageFormat::Tiff), 0),
        ("lossless.webp", encode(&rgba, ImageFormat::WebP), 0),
        ("no_extension", encode(&gray, ImageFormat::Png), 0),
    ];
    for (name, bytes, tol) in cases {
        let path = write(dir.path(), name, &bytes);
        let img =
            decode_luma8(&path, &DecodeLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(img.dimensions(), (20, 10), "{name}");
        for p in img.pixels() {
            let v = p.0[0] as i32;
            assert!(
                (v - LUMA).abs() <= tol,
                "{name}: pixel {v}, expected {LUMA}±{tol}"
            );
        }
    }
}

#[test]
fn transparent_pixels_become_black() {
    let dir = tempfile::tempdir().unwrap();
    let img = DynamicImage::ImageRgba8(image::RgbaImage::from_fn(4, 1, |x, _| {
        image::Rgba([255, 255, 255, [255, 128, 0, 255][x as usize]])
    }));
    let path = write(dir.path(), "alpha.png", &encode(&img, ImageFormat::Png));
    let gray = decode_luma8(&path, &DecodeLimits::default()).unwrap();
    assert_eq!(gray.as_raw(), &vec![255, 128, 0, 255]);
}

fn assert_corrupt(err: DataError, path: &std::path::Path) {
    assert!(matches!(err, DataError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn truncated_png_is_corrupt_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let full = encode(
        &DynamicImage::ImageLuma8(noisy_gray(64, 64, 1)),
        ImageFormat::Png,
    );
    let path = write(dir.path(), "cut.png", &full[..full.len() / 2]);
    assert_corrupt(
        decode_luma8(&path, &DecodeLimits::default()).unwrap_err(),
        &path,
    );
}

#[test]
fn truncated_jpeg_is_corrupt_even_though_lenient_decoders_pad_it() {
    let dir = tempfile::tempdir().unwrap();
    let full = encode(
        &DynamicImage::ImageLuma8(noisy_gray(64, 64, 2)),
        ImageFormat::Jpeg,
    );
    let path = write(dir.path(), "cut.jpg", &full[..full.len() * 3 / 5]);
    let err = decode_luma8(&path, &DecodeLimits::default()).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert_corrupt(err, &path);
    // The intact file decodes.
    let ok = write(dir.path(), "ok.jpg", &full);
    assert!(decode_luma8(&ok, &DecodeLimits::default()).is_ok());
}

#[test]
fn garbage_behind_a_png_signature_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    bytes.extend((0..200u32).map(|i| (i * 37 % 256) as u8));
    let path = write(dir.path(), "garbage.png", &bytes);
    assert_corrupt(
        decode_luma8(&path, &DecodeLimits::default()).unwrap_err(),
        &path,
    );
}

#[test]
fn text_and_empty_files_are_not_images() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("notes.jpg", &b"hello, not a picture"[..]),
        ("empty.png", &b""[..]),
    ] {
        let path = write(dir.path(), name, bytes);
        let err = decode_luma8(&path, &DecodeLimits::default()).unwrap_err();
        assert!(
            matches!(err, DataError::UnknownFormat { .. }),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn missing_and_broken_link_files_are_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.png");
    let err = decode_luma8(&missing, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.png"));
    #[cfg(unix)]
    {
        let link = dir.path().join("link.png");
        std::os::unix::fs::symlink(dir.path().join("nowhere.png"), &link).unwrap();
        let err = decode_luma8(&link, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("link.png"));
    }
}

#[cfg(unix)]
#[test]
fn permission_denied_is_unreadable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "secret.png",
        &encode(&rgb_image(), ImageFormat::Png),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&path).is_ok() {
        eprintln!("skipped: running as root, file permissions do not stop reads");
        return;
    }
    let err = decode_luma8(&path, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("secret.png"));
}

#[test]
fn decompression_bomb_header_is_rejected_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bomb.png",
        &png_header_claiming(100_000, 100_000),
    );
    let err = decode_luma8(&path, &DecodeLimits::default()).unwrap_err();
    match &err {
        DataError::TooLarge { width, height, .. } => {
            assert_eq!((*width, *height), (100_000, 100_000))
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("bomb.png"));
}

#[test]
fn size_and_memory_limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "big.png",
        &encode(&rgb_image(), ImageFormat::Png),
    );
    let small = DecodeLimits {
        max_width: 16,
        ..DecodeLimits::default()
    };
    let err = decode_luma8(&path, &small).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TooLarge {
                width: 20,
                height: 10,
                ..
            }
        ),
        "{err:?}"
    );
    // Within the dimension limits but above the decoder's memory budget.
    let big = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
        600,
        600,
        image::Rgba([1, 2, 3, 255]),
    ));
    let path = write(dir.path(), "wide.png", &encode(&big, ImageFormat::Png));
    let tight = DecodeLimits {
        max_alloc: 100_000,
        ..DecodeLimits::default()
    };
    let err = decode_luma8(&path, &tight).unwrap_err();
    assert!(matches!(err, DataError::TooLarge { .. }), "{err:?}");
    assert!(decode_luma8(&path, &DecodeLimits::default()).is_ok());
}

#[test]
fn load_resized_gives_square_images_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "tall.png",
        &encode(&rgb_image(), ImageFormat::Png),
    );
    for mode in [
        fracture_data::ResizeMode::Letterbox,
        fracture_data::ResizeMode::Stretch,
    ] {
        let cfg = PreprocessConfig {
            image_size: 10,
            resize_mode: mode,
            ..PreprocessConfig::default()
        };
        let px = load_resized(&path, &cfg).unwrap();
        assert_eq!(px.len(), 100);
        let content = px.iter().filter(|&&v| (v as i32 - LUMA).abs() <= 1).count();
        let expected = match mode {
            // 20x10 -> 10x5 centred: half the rows are padding.
            fracture_data::ResizeMode::Letterbox => 50,
            fracture_data::ResizeMode::Stretch => 100,
        };
        assert_eq!(content, expected, "{mode:?}");
    }
    let err = load_resized(
        &path,
        &PreprocessConfig {
            image_size: 0,
            ..PreprocessConfig::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, DataError::Config(_)));
}

//! Fuzz-style properties of the image reader (issue 18): mutated, truncated and random bytes
//! in every supported format never panic, never allocate far beyond the [`DecodeLimits`] and
//! finish in bounded time. Modest case counts keep CI fast; the allocation count covers the
//! test's own thread (decoding here is single-threaded).

use std::io::Cursor;
use std::path::Path;
use std::time::Duration;

use fracture_data::{decode_luma8_from_memory, DecodeLimits};
use fracture_test_support::alloc::{measure, Counting};
use image::ImageFormat;
use proptest::prelude::*;

/// Counts this thread's live heap bytes, so that a property can bound what one call holds.
#[global_allocator]
static ALLOC: Counting = Counting;

const LIMITS: DecodeLimits = DecodeLimits {
    max_width: 1024,
    max_height: 1024,
    max_alloc: 8 << 20,
};

/// Peak bytes one decode may hold: the decoder's limit, plus the conversion of the largest
/// accepted image to RGBA and luminance, plus slack for the input and bookkeeping. Not
/// asserted for TIFF: its decoder bounds each buffer by the limit, not their sum (a mutated
/// TIFF of 1,362 bytes held 16 and 24 MiB at once under an 8 MiB limit; the case is in
/// `fuzz_decode.proptest-regressions`; docs/RELIABILITY.md, known limits).
const MAX_PEAK: usize = (8 << 20) + 5 * 1024 * 1024 + (2 << 20);

/// A small gradient image in each supported format.
fn seeds() -> &'static [(ImageFormat, Vec<u8>)] {
    static SEEDS: std::sync::OnceLock<Vec<(ImageFormat, Vec<u8>)>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let img =
            image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([x as u8 * 9, y as u8 * 13, 77]));
        [
            ImageFormat::Png,
            ImageFormat::Jpeg,
            ImageFormat::Gif,
            ImageFormat::Bmp,
            ImageFormat::Tiff,
            ImageFormat::WebP,
        ]
        .into_iter()
        .map(|f| {
            let mut bytes = Vec::new();
            let dynimg = image::DynamicImage::ImageRgb8(img.clone());
            let dynimg = if f == ImageFormat::Gif || f == ImageFormat::WebP {
                image::DynamicImage::ImageRgba8(dynimg.to_rgba8())
            } else {
                dynimg
            };
            dynimg.write_to(&mut Cursor::new(&mut bytes), f).unwrap();
            (f, bytes)
        })
        .collect()
    })
}

/// Decodes `bytes` and checks the promises: no panic (a panic fails the property), the result
/// within the limits, bounded time and, with `bound_peak`, bounded memory.
fn check(bytes: &[u8], bound_peak: bool) -> Result<(), TestCaseError> {
    let (result, peak, elapsed) =
        measure(|| decode_luma8_from_memory(bytes, Path::new("fuzz"), &LIMITS));
    if let Ok(img) = &result {
        prop_assert!(img.width() <= LIMITS.max_width && img.height() <= LIMITS.max_height);
        prop_assert!(img.width() > 0 && img.height() > 0);
    }
    prop_assert!(
        !bound_peak || peak <= MAX_PEAK,
        "decoding {} bytes held {peak} bytes at once",
        bytes.len()
    );
    prop_assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    Ok(())
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

#[test]
fn the_seeds_decode() {
    for (f, bytes) in seeds() {
        let (img, peak, _) =
            measure(|| decode_luma8_from_memory(bytes, Path::new("seed"), &LIMITS));
        let img = img.unwrap_or_else(|e| panic!("{f:?}: {e}"));
        // The counter sees the decoder's allocations (at least the output image).
        assert!(peak >= 24 * 16, "{f:?}: peak {peak}");
        assert_eq!(img.dimensions(), (24, 16), "{f:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Byte flips anywhere, then an optional cut, in each format.
    #[test]
    fn mutated_and_truncated_images(
        which in 0usize..6,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut bytes = seeds()[which].1.clone();
        for (pos, v) in flips {
            let i = pos % bytes.len();
            bytes[i] = v;
        }
        if let Some(c) = cut {
            bytes.truncate(c % (bytes.len() + 1));
        }
        check(&bytes, seeds()[which].0 != ImageFormat::Tiff)?;
    }

    /// Random bytes behind each format's magic number (so that the decoders, not the sniffing,
    /// see them).
    #[test]
    fn random_bytes_behind_a_magic_number(
        which in 0usize..6,
        keep in 2usize..40,
        tail in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let seed = &seeds()[which].1;
        let mut bytes = seed[..keep.min(seed.len())].to_vec();
        bytes.extend_from_slice(&tail);
        check(&bytes, seeds()[which].0 != ImageFormat::Tiff)?;
    }

    /// A PNG whose header announces any size (with a valid checksum), up to 4 billion px a side.
    #[test]
    fn png_headers_announcing_any_size(w in any::<u32>(), h in any::<u32>(), depth in prop::sample::select(vec![1u8, 2, 4, 8, 16]), color in prop::sample::select(vec![0u8, 2, 3, 4, 6])) {
        let mut bytes = seeds()[0].1.clone();
        // IHDR data starts at 16: width, height, bit depth, colour type.
        bytes[16..20].copy_from_slice(&w.to_be_bytes());
        bytes[20..24].copy_from_slice(&h.to_be_bytes());
        bytes[24] = depth;
        bytes[25] = color;
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        check(&bytes, true)?;
    }

    /// Anything at all.
    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        check(&bytes, true)?;
    }
}

//! Helpers shared by the integration tests: tiny image files and dataset layouts.
#![allow(dead_code)]

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat};

/// Encodes `img` in `format` and returns the bytes.
pub fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format)
        .expect("encode test image");
    out
}

/// A deterministic noisy gray image (noise keeps compressed files large enough to truncate).
pub fn noisy_gray(w: u32, h: u32, seed: u32) -> image::GrayImage {
    image::GrayImage::from_fn(w, h, |x, y| {
        let v = (x.wrapping_mul(73) ^ y.wrapping_mul(151) ^ seed.wrapping_mul(2654435761)) % 251;
        image::Luma([v as u8])
    })
}

/// Writes a uniform gray PNG of `w` x `h` with value `v`.
pub fn write_png(path: &Path, w: u32, h: u32, v: u8) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    image::GrayImage::from_pixel(w, h, image::Luma([v]))
        .save_with_format(path, ImageFormat::Png)
        .unwrap();
}

/// Builds `<root>/<split>/<class>/<i>.png` with `n` images per class, value `value(split, class, i)`.
pub fn make_layout(
    root: &Path,
    splits: &[&str],
    classes: &[&str],
    n: usize,
    value: impl Fn(&str, &str, usize) -> u8,
) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for split in splits {
        for class in classes {
            for i in 0..n {
                let p = root.join(split).join(class).join(format!("{i:03}.png"));
                write_png(&p, 12, 9, value(split, class, i));
                paths.push(p);
            }
        }
    }
    paths
}

/// CRC-32 (IEEE) of PNG chunks.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
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

/// A tiny PNG file whose header announces `width` x `height` pixels (a decompression bomb shape).
pub fn png_header_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit gray, deflate, no filter, no interlace
    chunk(b"IHDR", &ihdr);
    // A zlib stream of a few zero bytes: far too little data for the announced size.
    chunk(
        b"IDAT",
        &[0x78, 0x9C, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    );
    chunk(b"IEND", &[]);
    out
}

//! Decoding image files by content into one 8-bit luminance channel.
//!
//! The format is taken from the bytes, never from the extension (real datasets hold PNG and GIF
//! data in files named `.jpg`). PNG, JPEG, GIF (first frame), BMP, TIFF and WebP are read through
//! the `image` crate; gray, gray+alpha, RGB, RGBA, palette and 16-bit images all become one
//! luminance channel with the ITU-R BT.601 weights (`0.299 R + 0.587 G + 0.114 B`, as PIL's
//! `convert("L")`), and transparent pixels are composited over black (the empty background of a
//! radiograph).
//!
//! DICOM files (the `DICM` magic at byte 128, or at byte 0 without the preamble) go through
//! [`crate::dicom`] and its display pipeline (modality LUT, VOI window, MONOCHROME1 inversion)
//! under the same limits.
//!
//! Protection against decompression bombs: the header's dimensions are checked against
//! [`DecodeLimits`] before any pixel is decoded, and the decoder itself runs with the same limits
//! (including a cap on its allocations). Files are read with a bound: only regular files are
//! opened (a FIFO, device or socket would block or never end), the format is sniffed from the
//! first bytes before the rest is read, and no more than [`DecodeLimits::max_alloc`] bytes are
//! read at all ([`DataError::FileTooLarge`]). JPEGs must end with the end-of-image marker: a file cut
//! short is reported as corrupt rather than silently padded with grey.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use serde::{Deserialize, Serialize};

pub use image::GrayImage;

use crate::error::{DataError, Result};

/// Size limits applied to every decoded file.
///
/// ```
/// use fracture_data::DecodeLimits;
/// let limits = DecodeLimits { max_width: 4096, max_height: 4096, ..DecodeLimits::default() };
/// assert_eq!(limits.max_alloc, DecodeLimits::default().max_alloc);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeLimits {
    /// Largest accepted width in pixels (default 10 000).
    pub max_width: u32,
    /// Largest accepted height in pixels (default 10 000).
    pub max_height: u32,
    /// Largest memory the decoder may allocate, in bytes (default 512 MiB).
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_width: 10_000,
            max_height: 10_000,
            max_alloc: 512 * 1024 * 1024,
        }
    }
}

impl DecodeLimits {
    /// The stricter of `self` and `other`, field by field: limits read from a file can only
    /// tighten the built-in ones, never raise them.
    ///
    /// ```
    /// use fracture_data::DecodeLimits;
    /// let raised = DecodeLimits { max_width: 1_000_000, max_height: 100, max_alloc: u64::MAX };
    /// let t = DecodeLimits::default().tightened_by(&raised);
    /// assert_eq!((t.max_width, t.max_height), (10_000, 100));
    /// assert_eq!(t.max_alloc, DecodeLimits::default().max_alloc);
    /// ```
    pub fn tightened_by(&self, other: &DecodeLimits) -> DecodeLimits {
        DecodeLimits {
            max_width: self.max_width.min(other.max_width),
            max_height: self.max_height.min(other.max_height),
            max_alloc: self.max_alloc.min(other.max_alloc),
        }
    }

    fn to_image_limits(self) -> Limits {
        let mut limits = Limits::default();
        limits.max_image_width = Some(self.max_width);
        limits.max_image_height = Some(self.max_height);
        limits.max_alloc = Some(self.max_alloc);
        limits
    }

    fn too_large(&self, path: &Path, width: u32, height: u32) -> DataError {
        DataError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            max_width: self.max_width,
            max_height: self.max_height,
            max_alloc: self.max_alloc,
        }
    }
}

/// Reads `path` and decodes it by content into an 8-bit luminance image.
///
/// Errors: [`DataError::Io`] if the file cannot be read, [`DataError::UnknownFormat`] if the
/// content is not an image, [`DataError::NotAnImage`] for a DICOM object without pixel data,
/// [`DataError::Unsupported`] for a DICOM compression without a built-in codec, [`DataError::TooLarge`] above `limits`, [`DataError::Corrupt`] for
/// damaged or truncated data. Every error names `path`.
///
/// ```
/// use fracture_data::{decode_luma8, DecodeLimits};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("photo.jpg"); // a PNG behind a lying extension
/// image::RgbImage::from_pixel(3, 2, image::Rgb([255, 0, 0])).save_with_format(&path, image::ImageFormat::Png).unwrap();
/// let gray = decode_luma8(&path, &DecodeLimits::default()).unwrap();
/// assert_eq!(gray.dimensions(), (3, 2));
/// assert_eq!(gray.get_pixel(0, 0).0[0], 76); // 0.299 * 255
/// ```
pub fn decode_luma8(path: &Path, limits: &DecodeLimits) -> Result<GrayImage> {
    let bytes = read_image_bytes(path, limits)?;
    decode_luma8_from_memory(&bytes, path, limits)
}

/// Bytes sniffed before the rest of a file is read: enough for DICOM's `DICM` magic, which
/// follows a 128-byte preamble.
const SNIFF_BYTES: usize = 132;

/// Reads an image file with a bound: regular files only, the format sniffed from the first
/// 132 bytes before anything else is read, at most `limits.max_alloc` bytes in all.
///
/// ```
/// use fracture_data::{decode::read_image_bytes, DataError, DecodeLimits};
/// let dir = tempfile::tempdir().unwrap();
/// let zeros = dir.path().join("zeros.png");
/// std::fs::write(&zeros, vec![0u8; 4096]).unwrap();
/// let err = read_image_bytes(&zeros, &DecodeLimits::default()).unwrap_err();
/// assert!(matches!(err, DataError::UnknownFormat { .. }));
/// let err = read_image_bytes(dir.path(), &DecodeLimits::default()).unwrap_err();
/// assert!(err.to_string().contains("not a regular file"));
/// ```
pub fn read_image_bytes(path: &Path, limits: &DecodeLimits) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Checked before opening: opening a FIFO for reading blocks until a writer appears.
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a folder, FIFO, device or socket); only image files are read",
        )));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let cap = limits.max_alloc;
    let mut bytes = Vec::with_capacity(SNIFF_BYTES);
    let mut reader = file.take(cap.saturating_add(1));
    (&mut reader)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if !crate::dicom::is_dicom(&bytes) {
        guess_format(&bytes, path)?;
    }
    if meta.len() > cap {
        return Err(DataError::FileTooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            max: cap,
        });
    }
    reader.read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > cap {
        return Err(DataError::FileTooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            max: cap,
        });
    }
    Ok(bytes)
}

/// Decodes image bytes by content into an 8-bit luminance image; `path` only names the source
/// in errors.
///
/// ```
/// use fracture_data::{decode_luma8_from_memory, DecodeLimits};
/// let mut png = Vec::new();
/// image::GrayImage::from_pixel(4, 4, image::Luma([200])).write_to(
///     &mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
/// let img = decode_luma8_from_memory(&png, "mem.png".as_ref(), &DecodeLimits::default()).unwrap();
/// assert_eq!(img.get_pixel(3, 3).0[0], 200);
/// ```
pub fn decode_luma8_from_memory(
    bytes: &[u8],
    path: &Path,
    limits: &DecodeLimits,
) -> Result<GrayImage> {
    if crate::dicom::is_dicom(bytes) {
        return crate::dicom::decode_dicom(bytes, path, limits);
    }
    let format = guess_format(bytes, path)?;
    let format_name = format!("{format:?}").to_uppercase();
    let corrupt = |reason: String| DataError::Corrupt {
        path: path.to_path_buf(),
        format: format_name.clone(),
        reason: plain_decoder_message(&reason),
    };

    // Header-only look at the dimensions, before anything is allocated for pixels.
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| map_image_error(e, path, limits, (0, 0), &corrupt))?;
    if width > limits.max_width || height > limits.max_height {
        return Err(limits.too_large(path, width, height));
    }
    if width == 0 || height == 0 {
        return Err(corrupt(format!("image has zero size {width}x{height}")));
    }
    if format == ImageFormat::Jpeg && !jpeg_has_end_marker(bytes) {
        return Err(corrupt(
            "no end-of-image marker (FFD9): the file is truncated".to_string(),
        ));
    }

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits.to_image_limits());
    let image = reader
        .decode()
        .map_err(|e| map_image_error(e, path, limits, (width, height), &corrupt))?;
    Ok(to_luma8(image))
}

/// A decoder's message without the Rust values some decoders print into it: the PNG
/// decoder writes a chunk as `ChunkType { type: IDAT, critical: true, ... }`, which becomes
/// `IDAT`.
///
/// ```
/// # use fracture_data::decode::plain_decoder_message;
/// let m = "CRC error: expected 0x1 have 0x2 while decoding ChunkType { type: IDAT, critical: true, private: false, reserved: false, safecopy: false } chunk.";
/// assert_eq!(plain_decoder_message(m), "CRC error: expected 0x1 have 0x2 while decoding IDAT chunk.");
/// ```
#[doc(hidden)]
pub fn plain_decoder_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("ChunkType {") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let Some(end) = after.find('}') else {
            out.push_str(after);
            return out;
        };
        let inner = &after["ChunkType {".len()..end];
        let name = inner
            .split(',')
            .find_map(|f| f.trim().strip_prefix("type:"))
            .map(str::trim)
            .unwrap_or("a");
        out.push_str(name);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn guess_format(bytes: &[u8], path: &Path) -> Result<ImageFormat> {
    let format = image::guess_format(bytes).map_err(|_| DataError::UnknownFormat {
        path: path.to_path_buf(),
    })?;
    match format {
        ImageFormat::Png
        | ImageFormat::Jpeg
        | ImageFormat::Gif
        | ImageFormat::Bmp
        | ImageFormat::Tiff
        | ImageFormat::WebP => Ok(format),
        _ => Err(DataError::UnknownFormat {
            path: path.to_path_buf(),
        }),
    }
}

fn map_image_error(
    err: image::ImageError,
    path: &Path,
    limits: &DecodeLimits,
    (width, height): (u32, u32),
    corrupt: &dyn Fn(String) -> DataError,
) -> DataError {
    match err {
        image::ImageError::Limits(_) => limits.too_large(path, width, height),
        image::ImageError::IoError(e) => corrupt(e.to_string()),
        other => corrupt(other.to_string()),
    }
}

/// True if the JPEG stream ends with the EOI marker, allowing trailing padding bytes
/// (zeros, `0xFF` fill or whitespace) after it, as some writers append.
fn jpeg_has_end_marker(bytes: &[u8]) -> bool {
    let mut end = bytes.len();
    // Allow up to 4 KiB of trailing padding.
    let floor = end.saturating_sub(4096);
    while end > floor && matches!(bytes[end - 1], 0x00 | b'\n' | b'\r' | b' ') {
        end -= 1;
    }
    end >= 2 && bytes[end - 2] == 0xFF && bytes[end - 1] == 0xD9
}

/// Converts any decoded image to 8-bit luminance (BT.601 weights, alpha composited over black).
fn to_luma8(image: DynamicImage) -> GrayImage {
    match image {
        DynamicImage::ImageLuma8(gray) => gray,
        other => {
            let rgba = other.into_rgba8();
            let (w, h) = rgba.dimensions();
            let pixels = rgba
                .pixels()
                .map(|p| {
                    let [r, g, b, a] = p.0;
                    let y = (299 * r as u32 + 587 * g as u32 + 114 * b as u32 + 500) / 1000;
                    ((y * a as u32 + 127) / 255) as u8
                })
                .collect();
            GrayImage::from_raw(w, h, pixels).expect("buffer length equals width * height")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_marker_check_accepts_padding_and_rejects_cut_files() {
        assert!(jpeg_has_end_marker(&[0xFF, 0xD8, 1, 2, 0xFF, 0xD9]));
        assert!(jpeg_has_end_marker(&[
            0xFF, 0xD8, 1, 0xFF, 0xD9, 0, 0, b'\n'
        ]));
        assert!(!jpeg_has_end_marker(&[0xFF, 0xD8, 1, 2, 3]));
        assert!(!jpeg_has_end_marker(&[0xD9]));
    }

    #[test]
    fn luma_weights_and_alpha() {
        let rgba = image::RgbaImage::from_vec(
            3,
            1,
            vec![255, 255, 255, 255, 0, 255, 0, 255, 200, 200, 200, 0],
        )
        .unwrap();
        let gray = to_luma8(DynamicImage::ImageRgba8(rgba));
        assert_eq!(gray.as_raw(), &vec![255, 150, 0]);
    }
}

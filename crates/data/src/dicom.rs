//! DICOM in: radiographs as hospital archives (PACS) send them.
//!
//! A DICOM file is recognised by its content: the `DICM` magic at byte 128 (after the
//! preamble), or at byte 0 (a file written without the preamble). The extension does not
//! matter: archives export `.dcm` files and extension-less ones alike. Reading the file and
//! running the codecs is dicom-rs's job (`dicom-object`, `dicom-pixeldata` with the pure-Rust
//! codecs for 8-bit JPEG baseline/extended, lossless JPEG, RLE, deflate and JPEG 2000; 12-bit
//! extended JPEG is refused as unsupported); everything after
//! the raw stored sample values is done here, so that each step is ours and tested.
//!
//! # The display pipeline
//!
//! For a monochrome image, in the order of the standard (PS3.4 N.2, "grayscale pipeline"):
//!
//! 1. **Stored values** of the first frame, masked to *Bits Stored* and sign-extended when
//!    *Pixel Representation* is 1.
//! 2. **Modality LUT**: `v = slope * stored + intercept` (*Rescale Slope/Intercept*, default
//!    1 and 0), giving values in the modality's units (a CT's Hounsfield units, a DX's display
//!    values).
//! 3. **VOI LUT**, to `[0, 1]`: the first *Window Center/Width* pair if there are several (the
//!    one the modality recommends), with the *VOI LUT Function* (`LINEAR`, the default, as
//!    specified in PS3.3 C.11.2.1.2; `LINEAR_EXACT`; `SIGMOID`); otherwise the first table of
//!    the *VOI LUT Sequence*; otherwise, when the file gives no window, the image's own range,
//!    robust to outliers: the 0.5th to 99.5th percentile of the modality values (a few hot or
//!    dead detector pixels, or a burnt-in marker, would otherwise squeeze the anatomy into a
//!    few grey levels).
//! 4. **MONOCHROME1** images (higher = darker, as many CR/DX systems write) are inverted
//!    (`1 - y`), so that bone is bright as in MONOCHROME2 and in every PNG the model was
//!    trained on.
//! 5. **8-bit luminance**: `round(255 * y)`, the model's input.
//!
//! Steps 1-4 run in `f32`/`f64` on the full bit depth: a 12- or 16-bit image is quantised to
//! 8 bits once, after the window, so that the window's contrast is not lost to an early
//! 8-bit cut.
//!
//! Colour images (RGB, and YBR which the codecs give as RGB) become luminance with the same
//! BT.601 weights as the other formats ([`crate::decode`]); native `YBR_FULL`/`YBR_FULL_422`
//! give their Y channel. Multi-frame objects give their first frame, with a warning on
//! standard error.
//!
//! # What is refused, and how
//!
//! - Objects without pixel data (RT plans, structured reports, waveforms, DICOMDIR, ...):
//!   [`DataError::NotAnImage`], a "not an image" bad file under the folder's
//!   [`BadFilePolicy`](crate::BadFilePolicy).
//! - Objects whose *Modality* is not a projection radiograph (CT, MR, US, NM, PT, XA, MG, ...;
//!   see [`RADIOGRAPH_MODALITIES`]): [`DataError::Unsupported`] naming the modality. A missing
//!   Modality is accepted.
//! - Compression without a built-in pure-Rust codec (JPEG-LS, JPEG XL, 12-bit extended JPEG,
//!   ...), and photometric interpretations a radiograph never uses (`PALETTE COLOR`):
//!   [`DataError::Unsupported`], naming the transfer syntax.
//! - Damaged files (truncated, bad element lengths, pixel data shorter than the header says):
//!   [`DataError::Corrupt`] with format `DICOM`.
//! - Larger than [`DecodeLimits`]: [`DataError::TooLarge`]. The file, *Rows*/*Columns*, the
//!   size of one decoded frame and, for JPEG and JPEG 2000, the size announced by the
//!   compressed stream itself are all checked before any pixel is decoded.
//!
//! A codec that panics on malformed data is contained and reported as corrupt.
//!
//! # Privacy
//!
//! Nothing from the header but the pixel data, the few attributes of the pipeline above and,
//! through [`sop_instance_uid`], the SOP Instance UID (a UID, checked to be digits and dots)
//! ever leaves this module: no names, IDs or dates.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use dicom_object::mem::InMemElement;
use dicom_object::{DefaultDicomObject, OpenFileOptions, Tag};
use dicom_pixeldata::{
    PhotometricInterpretation, PixelDecoder, PixelRepresentation, PlanarConfiguration,
    VoiLutFunction,
};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use image::GrayImage;

use crate::decode::DecodeLimits;
use crate::error::{DataError, Result};

const SOP_CLASS_UID: Tag = Tag(0x0008, 0x0016);
const SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x0018);
const MODALITY: Tag = Tag(0x0008, 0x0060);
const SAMPLES_PER_PIXEL: Tag = Tag(0x0028, 0x0002);
const PHOTOMETRIC_INTERPRETATION: Tag = Tag(0x0028, 0x0004);
const NUMBER_OF_FRAMES: Tag = Tag(0x0028, 0x0008);
const ROWS: Tag = Tag(0x0028, 0x0010);
const COLUMNS: Tag = Tag(0x0028, 0x0011);
const BITS_ALLOCATED: Tag = Tag(0x0028, 0x0100);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

/// True if `bytes` start like a DICOM file: `DICM` at byte 128 (after the preamble) or at
/// byte 0 (no preamble).
///
/// ```
/// use fracture_data::dicom::is_dicom;
/// let mut file = vec![0u8; 128];
/// file.extend_from_slice(b"DICM");
/// assert!(is_dicom(&file));
/// assert!(is_dicom(b"DICM\x02\x00\x00\x00"));
/// assert!(!is_dicom(b"\x89PNG\r\n\x1a\n"));
/// ```
pub fn is_dicom(bytes: &[u8]) -> bool {
    magic_offset(bytes).is_some()
}

/// True if the file at `path` starts like a DICOM file (see [`is_dicom`]); reads at most
/// 132 bytes. For folder walks that must pick extension-less DICOM files out of a folder.
///
/// ```
/// use fracture_data::dicom::{is_dicom_file, SyntheticDicom};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("IM0001");
/// std::fs::write(&path, SyntheticDicom::from_luma8(&[9], 1, 1, "1.2").to_bytes()).unwrap();
/// assert!(is_dicom_file(&path));
/// assert!(!is_dicom_file(&dir.path().join("missing")));
/// ```
pub fn is_dicom_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = Vec::with_capacity(132);
    std::fs::File::open(path)
        .and_then(|f| f.take(132).read_to_end(&mut head))
        .is_ok()
        && is_dicom(&head)
}

fn magic_offset(bytes: &[u8]) -> Option<usize> {
    if bytes.get(128..132) == Some(b"DICM") {
        Some(128)
    } else if bytes.get(0..4) == Some(b"DICM") {
        Some(0)
    } else {
        None
    }
}

/// The SOP Instance UID of a DICOM file, to match a result back to the archive, or `None`
/// if the file is not DICOM (a PNG, say). Only the UID is read out of the header, and only
/// if it is a well-formed UID (at most 64 digits and dots), so no other text of the header
/// can leak through it.
///
/// ```
/// use fracture_data::dicom::sop_instance_uid;
/// let dir = tempfile::tempdir().unwrap();
/// let png = dir.path().join("a.png");
/// image::GrayImage::new(2, 2).save(&png).unwrap();
/// assert_eq!(sop_instance_uid(&png).unwrap(), None);
/// ```
pub fn sop_instance_uid(path: &Path) -> Result<Option<String>> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    sop_instance_uid_from_memory(&bytes, path)
}

/// [`sop_instance_uid`] of a file already read into memory (`path` only names it in errors),
/// so that a caller that decodes the bytes does not read the file twice.
///
/// ```
/// use fracture_data::dicom::{sop_instance_uid_from_memory, SyntheticDicom};
/// let bytes = SyntheticDicom::from_luma8(&[9], 1, 1, "1.2.3").to_bytes();
/// assert_eq!(sop_instance_uid_from_memory(&bytes, "IM1".as_ref()).unwrap().as_deref(), Some("1.2.3"));
/// assert_eq!(sop_instance_uid_from_memory(b"\x89PNG", "a.png".as_ref()).unwrap(), None);
/// ```
pub fn sop_instance_uid_from_memory(bytes: &[u8], path: &Path) -> Result<Option<String>> {
    let Some(offset) = magic_offset(bytes) else {
        return Ok(None);
    };
    let obj = guarded(path, || {
        OpenFileOptions::new()
            .read_until(PIXEL_DATA)
            .from_reader(&bytes[offset..])
            .map_err(|e| corrupt(path, e.to_string()))
    })?;
    let from_dataset = string_of(&obj, SOP_INSTANCE_UID);
    let uid = from_dataset
        .unwrap_or_else(|| obj.meta().media_storage_sop_instance_uid.clone())
        .trim_end_matches(['\0', ' '])
        .to_string();
    let well_formed =
        !uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    Ok(well_formed.then_some(uid))
}

/// Decodes a DICOM file's first frame through the display pipeline (see the module docs)
/// into 8-bit luminance. Called by [`crate::decode_luma8_from_memory`] when the bytes are
/// DICOM; `path` only names the source in errors.
pub(crate) fn decode_dicom(bytes: &[u8], path: &Path, limits: &DecodeLimits) -> Result<GrayImage> {
    decode_checked(bytes, path, limits, true)
}

/// Decodes a DICOM file's first frame as [`crate::decode_luma8`] does, but whatever its
/// Modality: for tools and tests that look at the pixel encodings of CT, MR or nuclear
/// medicine objects, which a fracture classifier refuses (see [`check_modality`]).
///
/// ```
/// use fracture_data::dicom::{decode_file_any_modality, SyntheticDicom};
/// use fracture_data::DecodeLimits;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("a.dcm");
/// std::fs::write(&path, SyntheticDicom::from_luma8(&[9, 200], 2, 1, "1.2").to_bytes()).unwrap();
/// let img = decode_file_any_modality(&path, &DecodeLimits::default()).unwrap();
/// assert_eq!(img.dimensions(), (2, 1));
/// ```
pub fn decode_file_any_modality(path: &Path, limits: &DecodeLimits) -> Result<GrayImage> {
    let bytes = crate::decode::read_image_bytes(path, limits)?;
    decode_checked(&bytes, path, limits, false)
}

fn decode_checked(
    bytes: &[u8],
    path: &Path,
    limits: &DecodeLimits,
    radiographs_only: bool,
) -> Result<GrayImage> {
    if bytes.len() as u64 > limits.max_alloc {
        return Err(too_large(path, limits, 0, 0));
    }
    let offset = magic_offset(bytes).unwrap_or(0);
    guarded(path, || {
        check_lengths(&bytes[offset..]).map_err(|reason| corrupt(path, reason))?;
        let obj = OpenFileOptions::new()
            .from_reader(&bytes[offset..])
            .map_err(|e| corrupt(path, e.to_string()))?;
        if radiographs_only && element(&obj, PIXEL_DATA).is_some() {
            check_modality(string_of(&obj, MODALITY).as_deref(), path)?;
        }
        decode_object(&obj, path, limits)
    })
}

/// Modalities (0008,0060) of projection radiographs, the images a fracture classifier is made
/// for: CR (computed radiography), DX (digital radiography), RG (radiographic imaging,
/// film/screen), DR (digital radiography's retired code), PX (panoramic X-ray), IO
/// (intra-oral radiography), RF (radiofluoroscopy, e.g. an orthopaedic C-arm) and OT ("other",
/// as scanned films and secondary captures are often marked, which says no more than a
/// missing Modality). Everything else is refused: cross-sectional images (CT, MR, PT, NM,
/// US), X-ray angiography and mammography (no bone to judge), and the rest.
pub const RADIOGRAPH_MODALITIES: [&str; 8] = ["CR", "DX", "RG", "DR", "PX", "IO", "RF", "OT"];

/// Refuses a DICOM object whose Modality is not a projection radiograph
/// ([`RADIOGRAPH_MODALITIES`]); a missing Modality is accepted. The reason names the
/// modality.
///
/// ```
/// use std::path::Path;
/// use fracture_data::dicom::check_modality;
/// assert!(check_modality(Some("DX"), Path::new("a.dcm")).is_ok());
/// assert!(check_modality(None, Path::new("a.dcm")).is_ok());
/// let e = check_modality(Some("CT"), Path::new("a.dcm")).unwrap_err().to_string();
/// assert!(e.contains("modality CT (computed tomography)"), "{e}");
/// ```
pub fn check_modality(modality: Option<&str>, path: &Path) -> Result<()> {
    let Some(m) = modality else {
        return Ok(());
    };
    let m = m.trim();
    if RADIOGRAPH_MODALITIES.contains(&m) {
        return Ok(());
    }
    let shown: String = m
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(16)
        .collect();
    let name = match shown.as_str() {
        "CT" => " (computed tomography)",
        "MR" => " (magnetic resonance)",
        "US" => " (ultrasound)",
        "NM" => " (nuclear medicine)",
        "PT" => " (positron emission tomography)",
        "XA" => " (X-ray angiography)",
        "MG" => " (mammography)",
        "RTDOSE" => " (radiotherapy dose)",
        "RTIMAGE" => " (radiotherapy image)",
        "SEG" => " (segmentation)",
        "ES" => " (endoscopy)",
        "SM" => " (slide microscopy)",
        "OP" => " (ophthalmic photography)",
        "XC" => " (external camera photography)",
        "BMD" => " (bone densitometry)",
        _ => "",
    };
    Err(DataError::Unsupported {
        path: path.to_path_buf(),
        reason: format!(
            "modality {shown}{name} is not a projection radiograph; fracture classifies X-ray \
             radiographs (modality CR, DX, RG, DR, PX, IO, RF or OT)"
        ),
    })
}

/// Refuses a file any of whose elements, items or meta elements claims more bytes than the
/// whole file holds, before dicom-rs reads it: dicom-parser allocates and zero-fills a value's
/// declared length before reading it, so a 700-byte file declaring a 4 GB element would take
/// 4 GB of memory (pydicom's `UN_sequence.dcm` took 3.6 GB and 20 s). `bytes` start at `DICM`.
///
/// This is a bounds check on lengths, not a parser: the file meta group (always explicit VR
/// little endian) is walked element by element, the data set by dicom-parser's own token
/// reader, stopping at the first header that announces too much. Deflated data sets are
/// inflated by dicom-object and are bounded by the file only through the decode limits.
fn check_lengths(bytes: &[u8]) -> std::result::Result<(), String> {
    let total = bytes.len();
    let too_long = |what: String, len: u64| {
        Err(format!(
            "{what} claims {len} bytes but the whole file holds {total}: a damaged length"
        ))
    };
    // File meta group: DICM, then (0002,xxxx) elements in explicit VR little endian.
    let mut i = 4;
    while i + 8 <= total && bytes[i..i + 2] == [0x02, 0x00] {
        let elem = u16::from_le_bytes([bytes[i + 2], bytes[i + 3]]);
        let long_form = matches!(
            &bytes[i + 4..i + 6],
            b"OB"
                | b"OW"
                | b"OF"
                | b"OD"
                | b"OL"
                | b"OV"
                | b"SQ"
                | b"UC"
                | b"UN"
                | b"UR"
                | b"UT"
                | b"SV"
                | b"UV"
        );
        let (header, len) = if long_form {
            let Some(l) = bytes.get(i + 8..i + 12) else {
                break;
            };
            (12, u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as u64)
        } else {
            (8, u16::from_le_bytes([bytes[i + 6], bytes[i + 7]]) as u64)
        };
        if len as usize > total {
            return too_long(format!("file meta element (0002,{elem:04X})"), len);
        }
        i += header + len as usize;
    }
    // Data set: dicom-parser's tokens give each header before its value is read.
    let mut rest = bytes;
    let Ok(meta) = dicom_object::FileMetaTable::from_reader(&mut rest) else {
        return Ok(()); // the real read reports it
    };
    let Some(ts) = TransferSyntaxRegistry.get(meta.transfer_syntax()) else {
        return Ok(());
    };
    if ts.uid() == "1.2.840.10008.1.2.1.99" || ts.uid() == "1.2.840.10008.1.2.4.95" {
        return Ok(());
    }
    let Ok(reader) = dicom_parser::dataset::read::DataSetReader::new_with_ts(rest, ts) else {
        return Ok(());
    };
    for token in reader {
        use dicom_parser::dataset::DataToken;
        let (what, len) = match token {
            Ok(DataToken::ElementHeader(h)) => (format!("element {}", h.tag), h.len.get()),
            Ok(DataToken::SequenceStart { tag, len }) => (format!("sequence {tag}"), len.get()),
            Ok(DataToken::ItemStart { len }) => ("an item".to_string(), len.get()),
            Ok(_) => continue,
            Err(_) => break, // the real read reports it
        };
        if let Some(len) = len {
            if len as usize > total {
                return too_long(what, len as u64);
            }
        }
    }
    Ok(())
}

/// Runs `f`, turning a panic inside dicom-rs or a codec into a [`DataError::Corrupt`].
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(corrupt(
            path,
            "the DICOM reader or codec failed on malformed data".into(),
        ))
    })
}

fn corrupt(path: &Path, reason: String) -> DataError {
    DataError::Corrupt {
        path: path.to_path_buf(),
        format: "DICOM".into(),
        reason,
    }
}

fn too_large(path: &Path, limits: &DecodeLimits, width: u32, height: u32) -> DataError {
    DataError::TooLarge {
        path: path.to_path_buf(),
        width,
        height,
        max_width: limits.max_width,
        max_height: limits.max_height,
        max_alloc: limits.max_alloc,
    }
}

fn element(obj: &DefaultDicomObject, tag: Tag) -> Option<&InMemElement> {
    obj.element_opt(tag).ok().flatten()
}

fn string_of(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let s = element(obj, tag)?.to_str().ok()?;
    let s = s.trim_matches(['\0', ' ']);
    (!s.is_empty()).then(|| s.to_string())
}

fn int_of(obj: &DefaultDicomObject, tag: Tag) -> Option<u64> {
    element(obj, tag)?.to_int::<u64>().ok()
}

/// A short description of what a DICOM object without pixel data is, from its SOP Class
/// UID and Modality (neither is patient data).
fn object_kind(obj: &DefaultDicomObject) -> String {
    let class = string_of(obj, SOP_CLASS_UID)
        .unwrap_or_else(|| obj.meta().media_storage_sop_class_uid.clone());
    let class = class.trim_end_matches(['\0', ' ']);
    let kind = match class {
        "1.2.840.10008.1.3.10" => "a DICOMDIR (media directory)",
        c if c.starts_with("1.2.840.10008.5.1.4.1.1.481.") => "a radiotherapy object",
        c if c.starts_with("1.2.840.10008.5.1.4.1.1.88.") => "a structured report",
        c if c.starts_with("1.2.840.10008.5.1.4.1.1.9.") => "a waveform",
        c if c.starts_with("1.2.840.10008.5.1.4.1.1.104.") => "an encapsulated document",
        _ => "an object",
    };
    let modality = string_of(obj, MODALITY)
        .filter(|m| m.len() <= 16 && m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .map(|m| format!(", modality {m}"))
        .unwrap_or_default();
    format!("{kind} (SOP class {class}{modality})")
}

fn decode_object(
    obj: &DefaultDicomObject,
    path: &Path,
    limits: &DecodeLimits,
) -> Result<GrayImage> {
    let Some(pixel_data) = element(obj, PIXEL_DATA) else {
        return Err(DataError::NotAnImage {
            path: path.to_path_buf(),
            reason: format!("DICOM {} without pixel data", object_kind(obj)),
        });
    };

    // The transfer syntax must have a codec built in.
    let ts_uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_string();
    let Some(ts) = TransferSyntaxRegistry.get(&ts_uid) else {
        return Err(DataError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("unknown transfer syntax {ts_uid}"),
        });
    };
    if !ts.can_decode_all() {
        return Err(DataError::Unsupported {
            path: path.to_path_buf(),
            reason: format!(
                "transfer syntax {} ({ts_uid}): no pure-Rust decoder for this compression is \
                 built in (supported: uncompressed, deflate, RLE, 8-bit JPEG baseline/extended, \
                 lossless JPEG, JPEG 2000)",
                ts.name()
            ),
        });
    }

    // Limits, before any pixel is decoded.
    let rows = int_of(obj, ROWS).unwrap_or(0);
    let cols = int_of(obj, COLUMNS).unwrap_or(0);
    let (w, h) = (
        u32::try_from(cols).unwrap_or(u32::MAX),
        u32::try_from(rows).unwrap_or(u32::MAX),
    );
    if w > limits.max_width || h > limits.max_height {
        return Err(too_large(path, limits, w, h));
    }
    if w == 0 || h == 0 {
        return Err(corrupt(
            path,
            format!("image has zero size {w}x{h} (Rows/Columns)"),
        ));
    }
    let spp = int_of(obj, SAMPLES_PER_PIXEL).unwrap_or(1).max(1);
    let bytes_per_sample = int_of(obj, BITS_ALLOCATED).unwrap_or(8).div_ceil(8).max(1);
    let frame_bytes = (w as u64) * (h as u64) * spp.min(4) * bytes_per_sample.min(8);
    // The decoded frame, plus the f32 working copy and the percentile copy of the pipeline.
    if frame_bytes + 8 * (w as u64) * (h as u64) > limits.max_alloc {
        return Err(too_large(path, limits, w, h));
    }
    if let Some(fragments) = pixel_data.value().fragments() {
        if let Some(cs) = fragments.first().and_then(|f| codestream_size(f)) {
            let (cw, ch) = (cs.width, cs.height);
            let bytes = (cw as u64) * (ch as u64) * 4 * 2;
            if cw > limits.max_width || ch > limits.max_height || bytes > limits.max_alloc {
                // A codestream far larger than the header's own Rows/Columns is damaged, not
                // a huge image: say so with both sizes.
                if (cw, ch) != (w, h) {
                    return Err(corrupt(
                        path,
                        format!(
                            "the compressed stream announces {cw}x{ch} px but the header \
                             (Rows/Columns) says {w}x{h} px"
                        ),
                    ));
                }
                return Err(too_large(path, limits, cw, ch));
            }
            if let Some(bits) = cs.jpeg_lossy_precision.filter(|&b| b != 8) {
                return Err(DataError::Unsupported {
                    path: path.to_path_buf(),
                    reason: format!(
                        "{bits}-bit extended JPEG (transfer syntax {} ({ts_uid})): the built-in \
                         decoder reads 8-bit lossy JPEG, lossless JPEG and JPEG 2000 only",
                        ts.name()
                    ),
                });
            }
        }
    }

    let frames = int_of(obj, NUMBER_OF_FRAMES).unwrap_or(1);
    if frames > 1 {
        eprintln!(
            "warning: {}: multi-frame DICOM ({frames} frames): using the first frame",
            path.display()
        );
    }

    let pi = string_of(obj, PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    if pi == "YBR_FULL_422" && !ts.is_encapsulated_pixel_data() {
        // Native 4:2:2 stores Y1 Y2 Cb Cr per pair of pixels; dicom-pixeldata's frame size
        // does not account for it. The luminance is the Y samples.
        return native_ybr422_luma(pixel_data, w, h, bytes_per_sample, path);
    }

    let decoded = obj
        .decode_pixel_data_frame(0)
        .map_err(|e| corrupt(path, format!("{} pixel data: {e}", ts.name())))?;
    let frame = Frame {
        width: w,
        height: h,
        samples_per_pixel: decoded.samples_per_pixel(),
        bits_allocated: decoded.bits_allocated(),
        bits_stored: decoded.bits_stored(),
        high_bit: decoded.high_bit(),
        signed: decoded.pixel_representation() == PixelRepresentation::Signed,
        planar: decoded.planar_configuration() == PlanarConfiguration::PixelFirst,
        data: decoded.data(),
    };
    match decoded.photometric_interpretation() {
        PhotometricInterpretation::Monochrome1 | PhotometricInterpretation::Monochrome2 => {
            let monochrome1 =
                *decoded.photometric_interpretation() == PhotometricInterpretation::Monochrome1;
            let stored = frame.monochrome_samples(path)?;
            let rescale = decoded
                .rescale()
                .ok()
                .and_then(|r| r.first().copied())
                .map(|r| ModalityLut {
                    slope: r.slope,
                    intercept: r.intercept,
                })
                .unwrap_or_default();
            if !(rescale.slope.is_finite() && rescale.intercept.is_finite()) {
                return Err(corrupt(
                    path,
                    "Rescale Slope/Intercept is not finite".into(),
                ));
            }
            let values = rescale.apply(&stored);
            let function = match decoded
                .voi_lut_function()
                .ok()
                .flatten()
                .and_then(|f| f.first())
            {
                Some(VoiLutFunction::LinearExact) => WindowFunction::LinearExact,
                Some(VoiLutFunction::Sigmoid) => WindowFunction::Sigmoid,
                _ => WindowFunction::Linear,
            };
            let window = decoded
                .window()
                .ok()
                .flatten()
                .and_then(|w| w.first().copied())
                .filter(|w| w.center.is_finite() && w.width.is_finite() && w.width > 0.0);
            let voi = if let Some(wl) = window {
                Voi::Window {
                    center: wl.center,
                    width: wl.width,
                    function,
                }
            } else if let Some(lut) = decoded
                .voi_lut_sequence()
                .ok()
                .flatten()
                .and_then(|s| s.first())
                .filter(|l| !l.data.is_empty())
            {
                Voi::Table {
                    first: lut.min_pixel_value as f64,
                    bits: lut.bits_stored.clamp(1, 16),
                    data: lut.data.clone(),
                }
            } else {
                Voi::Percentiles {
                    low: 0.5,
                    high: 99.5,
                }
            };
            let pixels = render_monochrome(&values, &voi, monochrome1);
            Ok(GrayImage::from_raw(w, h, pixels).expect("one value per pixel"))
        }
        PhotometricInterpretation::Rgb
        | PhotometricInterpretation::YbrFull
        | PhotometricInterpretation::YbrFull422
        | PhotometricInterpretation::YbrIct
        | PhotometricInterpretation::YbrRct
        | PhotometricInterpretation::YbrPartial420
            if frame.samples_per_pixel == 3 =>
        {
            let ybr = matches!(
                decoded.photometric_interpretation(),
                PhotometricInterpretation::YbrFull
            );
            frame.colour_luma(ybr, path)
        }
        other => Err(DataError::Unsupported {
            path: path.to_path_buf(),
            reason: format!(
                "photometric interpretation {other} with {} sample(s) per pixel (radiographs \
                 are MONOCHROME1/2; colour must be RGB or YBR)",
                frame.samples_per_pixel
            ),
        }),
    }
}

/// What a compressed frame's own header announces.
struct Codestream {
    width: u32,
    height: u32,
    /// For a lossy (DCT) JPEG, the sample precision of its SOF marker (8 or 12 bits).
    jpeg_lossy_precision: Option<u8>,
}

/// Width and height announced by a JPEG (SOF marker) or JPEG 2000 (SIZ marker) codestream,
/// so that a small DICOM header cannot hide a huge compressed image; for lossy JPEG also the
/// sample precision.
fn codestream_size(stream: &[u8]) -> Option<Codestream> {
    let be16 = |i: usize| -> Option<u32> {
        Some(u16::from_be_bytes([*stream.get(i)?, *stream.get(i + 1)?]) as u32)
    };
    let be32 = |i: usize| -> Option<u32> {
        Some(u32::from_be_bytes(stream.get(i..i + 4)?.try_into().ok()?))
    };
    // Raw J2K codestream: SOC (FF4F) then SIZ (FF51): Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz.
    // A JP2 file wraps it in boxes; look for the SOC+SIZ pair in the first bytes.
    let limit = stream.len().min(4096);
    if let Some(i) =
        (0..limit.saturating_sub(4)).find(|&i| stream[i..i + 4] == [0xFF, 0x4F, 0xFF, 0x51])
    {
        let (x, y, xo, yo) = (be32(i + 8)?, be32(i + 12)?, be32(i + 16)?, be32(i + 20)?);
        return Some(Codestream {
            width: x.saturating_sub(xo),
            height: y.saturating_sub(yo),
            jpeg_lossy_precision: None,
        });
    }
    // JPEG: walk the marker segments from SOI to the first SOFn.
    if stream.get(0..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut i = 2;
    while i + 4 <= stream.len() {
        if stream[i] != 0xFF {
            return None;
        }
        let marker = stream[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        let len = be16(i + 2)? as usize;
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let (height, width) = (be16(i + 5)?, be16(i + 7)?);
            // SOF3, 7, 11 and 15 are lossless; the others are DCT (lossy) processes.
            let lossless = matches!(marker, 0xC3 | 0xC7 | 0xCB | 0xCF);
            return Some(Codestream {
                width,
                height,
                jpeg_lossy_precision: (!lossless).then_some(*stream.get(i + 4)?),
            });
        }
        i += 2 + len;
    }
    None
}

fn native_ybr422_luma(
    pixel_data: &InMemElement,
    w: u32,
    h: u32,
    bytes_per_sample: u64,
    path: &Path,
) -> Result<GrayImage> {
    if bytes_per_sample != 1 || !w.is_multiple_of(2) {
        return Err(DataError::Unsupported {
            path: path.to_path_buf(),
            reason: "native YBR_FULL_422 other than 8 bits with an even width".into(),
        });
    }
    let raw: Cow<[u8]> = pixel_data
        .to_bytes()
        .map_err(|e| corrupt(path, e.to_string()))?;
    let n = (w as usize) * (h as usize);
    if raw.len() < 2 * n {
        return Err(corrupt(
            path,
            format!(
                "pixel data holds {} bytes, {w}x{h} YBR_FULL_422 needs {}",
                raw.len(),
                2 * n
            ),
        ));
    }
    let y = (0..n).map(|i| raw[4 * (i / 2) + i % 2]).collect();
    Ok(GrayImage::from_raw(w, h, y).expect("one value per pixel"))
}

/// The first frame's samples as dicom-pixeldata decoded them, before any LUT.
struct Frame<'a> {
    width: u32,
    height: u32,
    samples_per_pixel: u16,
    bits_allocated: u16,
    bits_stored: u16,
    high_bit: u16,
    signed: bool,
    planar: bool,
    data: &'a [u8],
}

impl Frame<'_> {
    fn pixels(&self) -> usize {
        self.width as usize * self.height as usize
    }

    /// Sample `i` (in storage order) as an integer, masked to Bits Stored and sign-extended.
    fn samples(&self, count: usize, path: &Path) -> Result<Vec<i64>> {
        let bytes = match self.bits_allocated {
            8 => 1,
            16 => 2,
            32 => 4,
            other => {
                return Err(DataError::Unsupported {
                    path: path.to_path_buf(),
                    reason: format!("{other} bits allocated per sample (expected 8, 16 or 32)"),
                })
            }
        };
        if self.data.len() < count * bytes {
            return Err(corrupt(
                path,
                format!(
                    "pixel data holds {} bytes, {}x{} x {} sample(s) of {} bits need {}",
                    self.data.len(),
                    self.width,
                    self.height,
                    self.samples_per_pixel,
                    self.bits_allocated,
                    count * bytes
                ),
            ));
        }
        let stored = u32::from(self.bits_stored.clamp(1, self.bits_allocated));
        let shift = (u32::from(self.high_bit) + 1)
            .saturating_sub(stored)
            .min(31);
        let mask: u64 = (1u64 << stored) - 1;
        let signed = self.signed;
        Ok(self.data[..count * bytes]
            .chunks_exact(bytes)
            .map(|c| {
                let raw = match bytes {
                    1 => c[0] as u64,
                    2 => u16::from_ne_bytes([c[0], c[1]]) as u64,
                    _ => u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) as u64,
                };
                let v = (raw >> shift) & mask;
                if signed && (v >> (stored - 1)) & 1 == 1 {
                    v as i64 - (1i64 << stored)
                } else {
                    v as i64
                }
            })
            .collect())
    }

    fn monochrome_samples(&self, path: &Path) -> Result<Vec<i64>> {
        self.samples(self.pixels(), path)
    }

    /// BT.601 luminance of an RGB frame (or the Y of a native YBR_FULL frame), scaled from
    /// Bits Stored to 8 bits.
    fn colour_luma(&self, ybr: bool, path: &Path) -> Result<GrayImage> {
        let n = self.pixels();
        let s = self.samples(3 * n, path)?;
        let max = ((1u64 << u32::from(self.bits_stored.clamp(1, 32))) - 1) as f64;
        // Signed colour samples (rare) are shifted to start at 0.
        let off = if self.signed { (max + 1.0) / 2.0 } else { 0.0 };
        let at = |i: usize, c: usize| -> f64 {
            let k = if self.planar { c * n + i } else { 3 * i + c };
            s[k] as f64 + off
        };
        let px = (0..n)
            .map(|i| {
                let y = if ybr {
                    at(i, 0)
                } else {
                    0.299 * at(i, 0) + 0.587 * at(i, 1) + 0.114 * at(i, 2)
                };
                (255.0 * y / max).round().clamp(0.0, 255.0) as u8
            })
            .collect();
        Ok(GrayImage::from_raw(self.width, self.height, px).expect("one value per pixel"))
    }
}

/// The Modality LUT of the standard as a linear rescale: `slope * stored + intercept`
/// (*Rescale Slope* and *Rescale Intercept*; the default is the identity).
///
/// ```
/// use fracture_data::dicom::ModalityLut;
/// let lut = ModalityLut { slope: 2.0, intercept: -1024.0 };
/// assert_eq!(lut.apply(&[0, 512, 1023]), vec![-1024.0, 0.0, 1022.0]);
/// assert_eq!(ModalityLut::default().apply(&[7]), vec![7.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModalityLut {
    /// Rescale Slope (0028,1053).
    pub slope: f64,
    /// Rescale Intercept (0028,1052).
    pub intercept: f64,
}

impl Default for ModalityLut {
    fn default() -> Self {
        ModalityLut {
            slope: 1.0,
            intercept: 0.0,
        }
    }
}

impl ModalityLut {
    /// Applies the rescale to stored values, keeping full precision (`f32` holds every 16-bit
    /// value with an integer slope and intercept exactly).
    pub fn apply(&self, stored: &[i64]) -> Vec<f32> {
        stored
            .iter()
            .map(|&v| (self.slope * v as f64 + self.intercept) as f32)
            .collect()
    }
}

/// The shape of a window (*VOI LUT Function*, 0028,1056).
///
/// ```
/// use fracture_data::dicom::WindowFunction;
/// assert_eq!(WindowFunction::default(), WindowFunction::Linear);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WindowFunction {
    /// `LINEAR`, the default: PS3.3 C.11.2.1.2.1, with its half-pixel offsets.
    #[default]
    Linear,
    /// `LINEAR_EXACT`: `(x - center) / width + 0.5`, clamped.
    LinearExact,
    /// `SIGMOID`: `1 / (1 + exp(-4 (x - center) / width))`.
    Sigmoid,
}

/// The VOI LUT step: how modality values map to `[0, 1]`.
///
/// ```
/// use fracture_data::dicom::{Voi, WindowFunction};
/// let w = Voi::Window { center: 100.0, width: 200.0, function: WindowFunction::Linear };
/// assert_eq!(w.map(-1000.0), 0.0);
/// assert_eq!(w.map(1000.0), 1.0);
/// assert!((w.map(100.0) - 0.5).abs() < 0.01);
/// let t = Voi::Table { first: 10.0, bits: 8, data: vec![0, 255] };
/// assert_eq!((t.map(0.0), t.map(11.0)), (0.0, 1.0));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Voi {
    /// A window (*Window Center* / *Window Width*, in modality units).
    Window {
        /// Window Center (0028,1050).
        center: f64,
        /// Window Width (0028,1051), positive.
        width: f64,
        /// VOI LUT Function (0028,1056).
        function: WindowFunction,
    },
    /// A table of the *VOI LUT Sequence*: values at or below `first` take the first entry,
    /// values past the end the last; entries range over `0..2^bits`.
    Table {
        /// The first modality value mapped (the LUT descriptor's second value).
        first: f64,
        /// Bits per entry (the LUT descriptor's third value).
        bits: u8,
        /// The entries.
        data: Vec<u16>,
    },
    /// The image's own range between two percentiles of its modality values
    /// (resolved by [`render_monochrome`]; [`Voi::map`] treats it as the identity).
    Percentiles {
        /// Lower percentile, e.g. 0.5.
        low: f64,
        /// Upper percentile, e.g. 99.5.
        high: f64,
    },
}

impl Voi {
    /// Maps one modality value to `[0, 1]`.
    pub fn map(&self, x: f64) -> f64 {
        match self {
            Voi::Window {
                center,
                width,
                function,
            } => {
                let (c, w) = (*center, *width);
                let y = match function {
                    WindowFunction::Linear => {
                        if w <= 1.0 {
                            // The standard requires width >= 1; a width of 1 is a threshold.
                            if x < c - 0.5 {
                                0.0
                            } else {
                                1.0
                            }
                        } else {
                            (x - (c - 0.5)) / (w - 1.0) + 0.5
                        }
                    }
                    WindowFunction::LinearExact => (x - c) / w + 0.5,
                    WindowFunction::Sigmoid => 1.0 / (1.0 + (-4.0 * (x - c) / w).exp()),
                };
                y.clamp(0.0, 1.0)
            }
            Voi::Table { data, .. } if data.is_empty() => x.clamp(0.0, 1.0),
            Voi::Table { first, bits, data } => {
                let i = (x - first).round().clamp(0.0, (data.len() - 1) as f64) as usize;
                let top = ((1u32 << (*bits).clamp(1, 16)) - 1) as f64;
                (data[i] as f64 / top).clamp(0.0, 1.0)
            }
            Voi::Percentiles { .. } => x.clamp(0.0, 1.0),
        }
    }
}

/// The rest of the display pipeline on modality values: VOI LUT to `[0, 1]` (with
/// [`Voi::Percentiles`] resolved to a linear window over that range of `values`), then
/// MONOCHROME1 inversion, then 8-bit luminance. See the module docs for the whole pipeline.
///
/// ```
/// use fracture_data::dicom::{render_monochrome, Voi};
/// let values = [0.0, 1000.0, 2000.0, 4095.0];
/// let full = Voi::Percentiles { low: 0.0, high: 100.0 };
/// assert_eq!(render_monochrome(&values, &full, false), vec![0, 62, 125, 255]);
/// // MONOCHROME1: higher stored values are darker.
/// assert_eq!(render_monochrome(&values, &full, true), vec![255, 193, 130, 0]);
/// ```
pub fn render_monochrome(values: &[f32], voi: &Voi, monochrome1: bool) -> Vec<u8> {
    let to_u8 = |y: f64| {
        let y = if monochrome1 { 1.0 - y } else { y };
        (255.0 * y).round().clamp(0.0, 255.0) as u8
    };
    if let Voi::Percentiles { low, high } = voi {
        let (lo, hi) = percentile_range(values, *low, *high);
        let span = (hi - lo) as f64;
        return values
            .iter()
            .map(|&v| {
                let y = if span > 0.0 {
                    ((v - lo) as f64 / span).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                to_u8(y)
            })
            .collect();
    }
    values.iter().map(|&v| to_u8(voi.map(v as f64))).collect()
}

/// The `low` and `high` percentiles (0-100) of `values`, nearest rank; falls back to the
/// full range when the two coincide (an image with few distinct values).
fn percentile_range(values: &[f32], low: f64, high: f64) -> (f32, f32) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mut v = values.to_vec();
    let n = v.len();
    let rank = |p: f64| ((p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64).round() as usize;
    let (_, lo, _) = v.select_nth_unstable_by(rank(low), f32::total_cmp);
    let lo = *lo;
    let (_, hi, _) = v.select_nth_unstable_by(rank(high), f32::total_cmp);
    let hi = *hi;
    if hi > lo {
        return (lo, hi);
    }
    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (min, max)
}

/// A minimal, valid DICOM file (explicit VR little endian, a DX image "for presentation",
/// 16 bits allocated) written from scratch: synthetic data for tests and demos, such as
/// phantoms stored the way an archive would send them. It carries no patient module at all.
///
/// ```
/// use fracture_data::dicom::{sop_instance_uid, SyntheticDicom};
/// use fracture_data::{decode_luma8_from_memory, DecodeLimits};
/// let gray = [0u8, 64, 128, 255];
/// let dcm = SyntheticDicom::from_luma8(&gray, 2, 2, "1.2.3.4");
/// let bytes = dcm.to_bytes();
/// let back = decode_luma8_from_memory(&bytes, "x.dcm".as_ref(), &DecodeLimits::default()).unwrap();
/// assert_eq!(back.as_raw(), &gray); // 12 bits, full-range window: the round trip is exact
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("x"), &bytes).unwrap();
/// assert_eq!(sop_instance_uid(&dir.path().join("x")).unwrap().as_deref(), Some("1.2.3.4"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticDicom {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
    /// Bits Stored (1-16); High Bit is `bits_stored - 1`, unsigned.
    pub bits_stored: u16,
    /// `width * height` stored values, row-major.
    pub pixels: Vec<u16>,
    /// MONOCHROME1 (higher = darker) instead of MONOCHROME2.
    pub monochrome1: bool,
    /// Window Center and Width, if any.
    pub window: Option<(f64, f64)>,
    /// Rescale Slope and Intercept, if any.
    pub rescale: Option<(f64, f64)>,
    /// SOP Instance UID (digits and dots, at most 64 characters).
    pub sop_instance_uid: String,
}

impl SyntheticDicom {
    /// A 12-bit MONOCHROME2 image of 8-bit luminance (`v * 4095 / 255`) with a window over
    /// the full range, which [`crate::decode_luma8`] turns back into exactly `gray`.
    pub fn from_luma8(gray: &[u8], width: u16, height: u16, sop_instance_uid: &str) -> Self {
        SyntheticDicom {
            width,
            height,
            bits_stored: 12,
            pixels: gray
                .iter()
                .map(|&v| (v as u32 * 4095 / 255) as u16)
                .collect(),
            monochrome1: false,
            window: Some((2048.0, 4096.0)),
            rescale: None,
            sop_instance_uid: sop_instance_uid.to_string(),
        }
    }

    /// The file's bytes: preamble, `DICM`, file meta group, data set.
    pub fn to_bytes(&self) -> Vec<u8> {
        const DX: &str = "1.2.840.10008.5.1.4.1.1.1.1";
        fn el(out: &mut Vec<u8>, group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) {
            let pad = if vr == b"UI" || vr == b"OB" { 0 } else { b' ' };
            let mut v = value.to_vec();
            if v.len() % 2 == 1 {
                v.push(pad);
            }
            out.extend_from_slice(&group.to_le_bytes());
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(vr);
            if matches!(vr, b"OB" | b"OW") {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            } else {
                out.extend_from_slice(&(v.len() as u16).to_le_bytes());
            }
            out.extend_from_slice(&v);
        }
        let us = |v: u16| v.to_le_bytes();
        let uid = self.sop_instance_uid.as_bytes();

        let mut meta = Vec::new();
        el(&mut meta, 0x0002, 0x0001, b"OB", &[0, 1]);
        el(&mut meta, 0x0002, 0x0002, b"UI", DX.as_bytes());
        el(&mut meta, 0x0002, 0x0003, b"UI", uid);
        el(&mut meta, 0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1");
        el(
            &mut meta,
            0x0002,
            0x0012,
            b"UI",
            b"1.2.826.0.1.3680043.10.1",
        );
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        el(
            &mut out,
            0x0002,
            0x0000,
            b"UL",
            &(meta.len() as u32).to_le_bytes(),
        );
        out.extend_from_slice(&meta);

        el(&mut out, 0x0008, 0x0016, b"UI", DX.as_bytes());
        el(&mut out, 0x0008, 0x0018, b"UI", uid);
        el(&mut out, 0x0008, 0x0060, b"CS", b"DX");
        el(&mut out, 0x0028, 0x0002, b"US", &us(1));
        let pi: &[u8] = if self.monochrome1 {
            b"MONOCHROME1"
        } else {
            b"MONOCHROME2"
        };
        el(&mut out, 0x0028, 0x0004, b"CS", pi);
        el(&mut out, 0x0028, 0x0010, b"US", &us(self.height));
        el(&mut out, 0x0028, 0x0011, b"US", &us(self.width));
        el(&mut out, 0x0028, 0x0100, b"US", &us(16));
        el(&mut out, 0x0028, 0x0101, b"US", &us(self.bits_stored));
        el(
            &mut out,
            0x0028,
            0x0102,
            b"US",
            &us(self.bits_stored.saturating_sub(1)),
        );
        el(&mut out, 0x0028, 0x0103, b"US", &us(0));
        if let Some((center, width)) = self.window {
            el(
                &mut out,
                0x0028,
                0x1050,
                b"DS",
                center.to_string().as_bytes(),
            );
            el(
                &mut out,
                0x0028,
                0x1051,
                b"DS",
                width.to_string().as_bytes(),
            );
        }
        if let Some((slope, intercept)) = self.rescale {
            el(
                &mut out,
                0x0028,
                0x1052,
                b"DS",
                intercept.to_string().as_bytes(),
            );
            el(
                &mut out,
                0x0028,
                0x1053,
                b"DS",
                slope.to_string().as_bytes(),
            );
        }
        let pixels: Vec<u8> = self.pixels.iter().flat_map(|p| p.to_le_bytes()).collect();
        el(&mut out, 0x7FE0, 0x0010, b"OW", &pixels);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_window_follows_the_standard() {
        // PS3.3 C.11.2.1.2.1: center 2048, width 4096 maps 0 -> 0, 4095 -> 1.
        let w = Voi::Window {
            center: 2048.0,
            width: 4096.0,
            function: WindowFunction::Linear,
        };
        assert_eq!(w.map(0.0), (0.0 - 2047.5) / 4095.0 + 0.5);
        assert!((w.map(4095.0) - 1.0).abs() < 1e-9);
        assert_eq!(w.map(-5.0), 0.0);
        assert_eq!(w.map(1e9), 1.0);
    }

    #[test]
    fn window_keeps_more_than_8_bits() {
        // A narrow window over 12-bit data: 16 stored levels must give 16 output levels,
        // which an early 8-bit cut (4096 -> 256 levels) would merge into one.
        let values: Vec<f32> = (2000..2016).map(|v| v as f32).collect();
        let voi = Voi::Window {
            center: 2008.0,
            width: 16.0,
            function: WindowFunction::Linear,
        };
        let out = render_monochrome(&values, &voi, false);
        let mut distinct = out.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), 16, "{out:?}");
    }

    #[test]
    fn percentiles_ignore_outliers() {
        let mut values: Vec<f32> = (0..1000).map(|i| (i % 100) as f32).collect();
        values[0] = 60_000.0; // one hot pixel
        let out = render_monochrome(
            &values,
            &Voi::Percentiles {
                low: 0.5,
                high: 99.5,
            },
            false,
        );
        assert_eq!(out[99], 255);
        assert_eq!(out[1], 3); // 1 of 0..99: not squeezed to 0 by the outlier
        assert_eq!(
            render_monochrome(
                &[5.0; 4],
                &Voi::Percentiles {
                    low: 0.5,
                    high: 99.5
                },
                false
            ),
            vec![0; 4]
        );
    }

    #[test]
    fn sigmoid_and_linear_exact() {
        let s = Voi::Window {
            center: 0.0,
            width: 10.0,
            function: WindowFunction::Sigmoid,
        };
        assert!((s.map(0.0) - 0.5).abs() < 1e-12);
        let e = Voi::Window {
            center: 0.0,
            width: 10.0,
            function: WindowFunction::LinearExact,
        };
        assert_eq!(e.map(2.5), 0.75);
    }

    #[test]
    fn samples_mask_and_sign_extend() {
        let data = [0xFF, 0xFF, 0x00, 0x08, 0xFF, 0x07];
        let mut f = Frame {
            width: 3,
            height: 1,
            samples_per_pixel: 1,
            bits_allocated: 16,
            bits_stored: 12,
            high_bit: 11,
            signed: false,
            planar: false,
            data: &data,
        };
        let p = Path::new("x");
        assert_eq!(f.samples(3, p).unwrap(), vec![4095, 2048, 2047]);
        f.signed = true;
        assert_eq!(f.samples(3, p).unwrap(), vec![-1, -2048, 2047]);
        assert!(f.samples(4, p).is_err());
    }

    #[test]
    fn codestream_sizes() {
        // JPEG: SOI, APP0 (len 4), SOF0 with height 0x0102 and width 0x0304.
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0, 0, 0xFF, 0xC0, 0x00, 0x0B, 8, 0x01, 0x02, 0x03,
            0x04, 1,
        ];
        let wh = |s: &[u8]| codestream_size(s).map(|c| (c.width, c.height));
        assert_eq!(wh(&jpeg), Some((0x0304, 0x0102)));
        assert_eq!(
            codestream_size(&jpeg).unwrap().jpeg_lossy_precision,
            Some(8)
        );
        let mut j2k = vec![0xFF, 0x4F, 0xFF, 0x51, 0, 41, 0, 0];
        j2k.extend_from_slice(&70_000u32.to_be_bytes());
        j2k.extend_from_slice(&50u32.to_be_bytes());
        j2k.extend_from_slice(&[0; 8]);
        assert_eq!(wh(&j2k), Some((70_000, 50)));
        assert!(codestream_size(b"nothing").is_none());
    }
}

"""fracture-nn's preprocessing in numpy, for scoring a model exported to ONNX (`fracture export`).

One module, imported by every Python scorer of this repository (`scripts/onnx_predict.py`,
`scripts/ray_predict.py`), so that they all feed the graph the same tensor as `fracture predict`
does. The steps are fracture-nn's (crates/data/src/decode.rs, resize.rs, normalize.rs, and
dicom.rs for DICOM), reproduced operation for operation so that the probabilities match:
  1. decode; 8-bit gray images as they are, others to BT.601 luma with integer weights,
     y = (299 R + 587 G + 114 B + 500) // 1000, alpha composited over black: (y A + 127) // 255;
     DICOM (only through `decode_luma8_bytes`, and only where pydicom is installed) through the
     display pipeline: stored values, Rescale Slope/Intercept, the first VOI window (LINEAR,
     LINEAR_EXACT, SIGMOID) or VOI LUT table, else the 0.5th-99.5th percentile range,
     MONOCHROME1 inverted, round(255 y);
  2. resize to S x S (S, the resize mode and the normalisation come from the ONNX metadata):
     letterbox (the longest side to S, black padding, centred) or stretch, with fracture-nn's
     separable triangle filter in float32 (horizontal pass, then vertical, rounded half away
     from zero). Pillow's own resize is a different filter and is not used;
  3. x = (p / 255 - mean) * (1 / std) in float32.
The graph (p_fractured: softmax, the positive class, test-time flip averaging if the model uses
it) does the rest.

Needs numpy and Pillow; pydicom (optional) for DICOM.
"""

import io
import json
import math
import warnings

import numpy as np
from PIL import Image

F32 = np.float32

# Metadata keys that `fracture export` writes and scoring needs.
REQUIRED_METADATA = ("image_size", "resize_mode", "normalization_mean", "normalization_std",
                     "class_names", "positive_class", "threshold")

# Largest width and height decoded, as fracture-nn's DecodeLimits (decode.rs).
MAX_SIDE = 10_000


class MetadataError(ValueError):
    """The ONNX file lacks metadata that `fracture export` writes."""


def to_luma8(img):
    """8-bit luminance as fracture-nn's decode.rs: gray 8-bit as is, else BT.601 over black."""
    if img.mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit gray: the image crate scales to 8 bits (v * 255 / 65535, rounded).
        v = np.asarray(img).astype(np.uint32)
        return ((v * 255 + 32767) // 65535).astype(np.uint8)
    rgba = np.asarray(img.convert("RGBA"), dtype=np.uint32)
    r, g, b, a = rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3]
    y = (299 * r + 587 * g + 114 * b + 500) // 1000
    return ((y * a + 127) // 255).astype(np.uint8)


def round_half_away(x):
    """Rust's f64::round for x >= 0 (Python's round() rounds half to even)."""
    r = math.floor(x)
    return r + 1 if x - r >= 0.5 else r


def taps(in_len, out_len):
    """Start index and float32 weights of each output sample (resize.rs `taps`)."""
    ratio = in_len / out_len
    support = max(ratio, 1.0)
    starts, weights = [], []
    for o in range(out_len):
        centre = (o + 0.5) * ratio
        lo = min(int(max(math.floor(centre - support), 0.0)), in_len - 1)
        hi = min(max(int(math.ceil(centre + support)), lo + 1), in_len)
        w = [F32(max(1.0 - abs((i + 0.5 - centre) / support), 0.0)) for i in range(lo, hi)]
        total = F32(0.0)
        for v in w:
            total = F32(total + v)
        if total > 0:
            w = [F32(v / total) for v in w]
        else:
            w = [F32(1.0)] + [F32(0.0)] * (len(w) - 1)
        starts.append(lo)
        weights.append(w)
    n = max(len(w) for w in weights)
    idx = np.zeros((out_len, n), dtype=np.int64)
    wts = np.zeros((out_len, n), dtype=F32)
    for o, (lo, w) in enumerate(zip(starts, weights)):
        idx[o, : len(w)] = np.arange(lo, lo + len(w))
        idx[o, len(w):] = lo  # weight 0: adds exactly nothing
        wts[o, : len(w)] = w
    return idx, wts


def resample(src, nw, nh):
    """resize.rs `resample`: triangle filter, float32, horizontal then vertical, in the same
    order of operations (so the same roundings)."""
    h, w = src.shape
    if (w, h) == (nw, nh):
        return src.copy()
    hidx, hw = taps(w, nw)
    vidx, vw = taps(h, nh)
    s = src.astype(F32)
    tmp = np.zeros((h, nw), dtype=F32)
    for j in range(hidx.shape[1]):
        tmp += s[:, hidx[:, j]] * hw[:, j][None, :]
    acc = np.zeros((nh, nw), dtype=F32)
    for j in range(vidx.shape[1]):
        acc += vw[:, j][:, None] * tmp[vidx[:, j], :]
    fl = np.floor(acc)
    rounded = fl + (acc - fl >= F32(0.5))
    return np.clip(rounded, 0, 255).astype(np.uint8)


def resize_square(gray, size, mode):
    """resize.rs `resize_square`: letterbox (centred, black) or stretch to size x size."""
    h, w = gray.shape
    if w == size and h == size:
        return gray.copy()
    if mode == "Stretch":
        return resample(gray, size, size)
    scale = size / max(w, h)
    nw = min(max(round_half_away(w * scale), 1), size)
    nh = min(max(round_half_away(h * scale), 1), size)
    scaled = resample(gray, nw, nh)
    out = np.zeros((size, size), dtype=np.uint8)
    x0, y0 = (size - nw) // 2, (size - nh) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = scaled
    return out


def preprocess_gray(gray, meta):
    """(normalised float32 [1, S, S], warning or None) for one 8-bit luminance image."""
    pixels = resize_square(gray, meta["size"], meta["resize_mode"])
    warning = None
    if (pixels == pixels.flat[0]).all():
        warning = f"degenerate input: every pixel is {int(pixels.flat[0])}, so the label means nothing"
    x = (pixels.astype(F32) / F32(255.0) - meta["mean"]) * (F32(1.0) / meta["std"])
    return x[None, :, :], warning


def preprocess(path, meta):
    """(normalised float32 [1, S, S], warning or None) for one image file that Pillow reads."""
    with Image.open(path) as img:
        img.load()
        gray = to_luma8(img)
    return preprocess_gray(gray, meta)


def read_meta(session):
    """Size, resize mode, normalisation, class names, positive class and threshold from the
    metadata of an onnxruntime session of a `fracture export` file; MetadataError if absent."""
    m = session.get_modelmeta().custom_metadata_map
    missing = [k for k in REQUIRED_METADATA if k not in m]
    if missing:
        raise MetadataError(f"the model's metadata lacks {missing}: not a file written by `fracture export`")
    return {
        "size": int(m["image_size"]),
        "resize_mode": m["resize_mode"],
        "mean": F32(m["normalization_mean"]),
        "std": F32(m["normalization_std"]),
        "classes": json.loads(m["class_names"]),
        "positive": int(m["positive_class"]),
        "threshold": float(m["threshold"]),
    }


# ---------------------------------------------------------------------------------------------
# Bytes in (object stores, Ray Data): format by content, size limits, DICOM through pydicom.

def is_dicom(data):
    """`DICM` at byte 128 (after the preamble) or at byte 0 (no preamble), as dicom.rs."""
    return data[128:132] == b"DICM" or data[:4] == b"DICM"


def jpeg_has_end_marker(data):
    """decode.rs: a JPEG must end with FFD9 (up to 4 KiB of 0, LF, CR or space after it), or
    it was cut short; Pillow would pad the missing rows with grey instead."""
    end = len(data)
    floor = max(end - 4096, 0)
    while end > floor and data[end - 1] in (0x00, 0x0A, 0x0D, 0x20):
        end -= 1
    return end >= 2 and data[end - 2] == 0xFF and data[end - 1] == 0xD9


# Formats decode.rs accepts (image::guess_format), by Pillow's name.
PILLOW_FORMATS = {"PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"}


def decode_luma8_bytes(data):
    """8-bit luminance of an image file's bytes, format by content: PNG, JPEG, GIF, BMP, TIFF,
    WebP through Pillow, DICOM through pydicom. Raises ValueError (or the decoder's own error)
    with the reason for a file that cannot be read."""
    if len(data) == 0:
        raise ValueError("empty file")
    if is_dicom(data):
        return decode_dicom(data)
    try:
        img = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        raise ValueError("unknown or unsupported image format") from None
    with img:
        if img.format not in PILLOW_FORMATS:
            raise ValueError(f"unsupported image format {img.format}")
        w, h = img.size
        if w > MAX_SIDE or h > MAX_SIDE:
            raise ValueError(f"image of {w}x{h} pixels is larger than {MAX_SIDE}x{MAX_SIDE}")
        if w == 0 or h == 0:
            raise ValueError(f"image has zero size {w}x{h}")
        if img.format == "JPEG" and not jpeg_has_end_marker(data):
            raise ValueError("corrupt JPEG: no end-of-image marker (FFD9): the file is truncated")
        try:
            img.load()
        except OSError as e:
            raise ValueError(f"corrupt {img.format}: {e}") from None
        return to_luma8(img)


def preprocess_bytes(data, meta):
    """(normalised float32 [1, S, S], warning or None) for one image file's bytes (see
    `decode_luma8_bytes`)."""
    return preprocess_gray(decode_luma8_bytes(data), meta)


def _pydicom():
    try:
        import pydicom  # noqa: PLC0415 (optional dependency)
        import pydicom.pixels  # noqa: F401,PLC0415
    except ImportError:
        raise ValueError("DICOM file, but pydicom is not installed (pip install pydicom), "
                         "so it cannot be read here; `fracture predict` reads it") from None
    return pydicom


def _dicom_dataset(data):
    pydicom = _pydicom()
    if data[:4] == b"DICM":  # written without the 128-byte preamble
        data = b"\0" * 128 + data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(io.BytesIO(data))
    except Exception as e:  # pydicom raises many kinds on damaged files
        raise ValueError(f"corrupt DICOM: {e}") from None


def dicom_sop_instance_uid(data):
    """The SOP Instance UID of DICOM bytes if well formed (digits and dots, at most 64), else
    None, as dicom.rs `sop_instance_uid`: only the UID leaves the header."""
    ds = _dicom_dataset(data)
    uid = ds.get("SOPInstanceUID") or getattr(getattr(ds, "file_meta", None),
                                               "MediaStorageSOPInstanceUID", "")
    uid = str(uid or "").rstrip("\0 ")
    ok = 0 < len(uid) <= 64 and all(c.isdigit() or c == "." for c in uid)
    return uid if ok else None


def decode_dicom(data):
    """8-bit luminance of DICOM bytes through dicom.rs's display pipeline (first frame)."""
    ds = _dicom_dataset(data)
    pydicom = _pydicom()
    if "PixelData" not in ds:
        kind = str(getattr(ds, "SOPClassUID", "unknown SOP class"))
        raise ValueError(f"not an image: DICOM object without pixel data ({kind})")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows > MAX_SIDE or cols > MAX_SIDE:
        raise ValueError(f"image of {cols}x{rows} pixels is larger than {MAX_SIDE}x{MAX_SIDE}")
    if rows == 0 or cols == 0:
        raise ValueError(f"corrupt DICOM: image has zero size {cols}x{rows} (Rows/Columns)")
    pi = str(ds.get("PhotometricInterpretation", "")).strip()
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    compressed = bool(getattr(ts, "is_compressed", False))
    # As dicom.rs: native YBR gives its Y channel (raw, no conversion); a compressed colour
    # image is converted to RGB by its codec.
    raw = not (compressed and pi.startswith("YBR"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about padding, odd VRs...
            frame = pydicom.pixels.pixel_array(ds, index=0, raw=raw)
    except Exception as e:
        name = getattr(ts, "name", ts)
        raise ValueError(f"DICOM pixel data ({name}) cannot be decoded here: {e}") from None
    bits_alloc = int(ds.get("BitsAllocated", 8) or 8)
    bits_stored = max(1, min(int(ds.get("BitsStored", bits_alloc) or bits_alloc), bits_alloc))
    high_bit = ds.get("HighBit")
    high_bit = bits_stored - 1 if high_bit is None else int(high_bit)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if bits_alloc not in (8, 16, 32):
        raise ValueError(f"{bits_alloc} bits allocated per sample (expected 8, 16 or 32)")
    stored = _stored_values(frame, bits_alloc, bits_stored, high_bit, signed)
    if pi in ("MONOCHROME1", "MONOCHROME2") and spp == 1:
        return _render_monochrome(ds, stored, pi == "MONOCHROME1")
    if spp == 3 and (pi == "RGB" or pi.startswith("YBR")):
        top = float((1 << bits_stored) - 1)
        s = stored.astype(np.float64) + ((top + 1.0) / 2.0 if signed else 0.0)
        if raw and pi.startswith("YBR"):
            y = s[..., 0]
        else:
            y = 0.299 * s[..., 0] + 0.587 * s[..., 1] + 0.114 * s[..., 2]
        return np.clip(_round_half_away(255.0 * y / top), 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported DICOM: photometric interpretation {pi} with {spp} sample(s) per "
                     "pixel (radiographs are MONOCHROME1/2; colour must be RGB or YBR)")


def _round_half_away(a):
    """Elementwise f64::round (half away from zero)."""
    return np.sign(a) * np.floor(np.abs(a) + 0.5)


def _stored_values(frame, bits_alloc, bits_stored, high_bit, signed):
    """Samples masked to Bits Stored (after High Bit's shift) and sign-extended, int64."""
    # The samples as unsigned words of Bits Allocated (a decoder may already have
    # sign-extended them into a wider or signed array).
    raw = np.asarray(frame).astype(np.int64) & ((1 << bits_alloc) - 1)
    shift = min(max(high_bit + 1 - bits_stored, 0), 31)
    v = (raw >> shift) & ((1 << bits_stored) - 1)
    if signed:
        v = np.where((v >> (bits_stored - 1)) & 1 == 1, v - (1 << bits_stored), v)
    return v


def _first(ds, keyword):
    """The first value of a possibly multi-valued element, or None."""
    v = ds.get(keyword)
    if v is None or v == "":
        return None
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return v[0] if len(v) else None
    return v


def _render_monochrome(ds, stored, monochrome1):
    """dicom.rs: modality LUT, VOI (window, table or percentiles), MONOCHROME1, round(255 y)."""
    slope = _first(ds, "RescaleSlope")
    intercept = _first(ds, "RescaleIntercept")
    slope = 1.0 if slope is None else float(slope)
    intercept = 0.0 if intercept is None else float(intercept)
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        raise ValueError("corrupt DICOM: Rescale Slope/Intercept is not finite")
    values = (slope * stored.astype(np.float64) + intercept).astype(np.float32)

    def to_u8(y):
        if monochrome1:
            y = 1.0 - y
        return np.clip(_round_half_away(255.0 * y), 0, 255).astype(np.uint8)

    c, w = _first(ds, "WindowCenter"), _first(ds, "WindowWidth")
    c = None if c is None else float(c)
    w = None if w is None else float(w)
    if c is not None and w is not None and math.isfinite(c) and math.isfinite(w) and w > 0:
        x = values.astype(np.float64)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip()
        if function == "LINEAR_EXACT":
            y = (x - c) / w + 0.5
        elif function == "SIGMOID":
            y = 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
        elif w <= 1.0:
            y = np.where(x < c - 0.5, 0.0, 1.0)
        else:
            y = (x - (c - 0.5)) / (w - 1.0) + 0.5
        return to_u8(np.clip(y, 0.0, 1.0))
    seq = ds.get("VOILUTSequence")
    if seq and "LUTData" in seq[0] and "LUTDescriptor" in seq[0]:
        item = seq[0]
        desc = item.LUTDescriptor
        data = np.asarray(item.LUTData, dtype=np.float64).ravel()
        if data.size:
            first, bits = float(desc[1]), max(1, min(int(desc[2]), 16))
            i = np.clip(_round_half_away(values.astype(np.float64) - first), 0, data.size - 1).astype(np.int64)
            return to_u8(np.clip(data[i] / float((1 << bits) - 1), 0.0, 1.0))
    # No window: the 0.5th to 99.5th percentile of the image, nearest rank.
    flat = values.ravel()
    n = flat.size
    rank = lambda p: int(round_half_away(p / 100.0 * (n - 1)))  # noqa: E731
    part = np.partition(flat, (rank(0.5), rank(99.5)))
    lo, hi = part[rank(0.5)], part[rank(99.5)]
    if not hi > lo:
        lo, hi = flat.min(), flat.max()
    span = float(np.float32(hi - lo))
    if span > 0:
        y = np.clip((values - np.float32(lo)).astype(np.float64) / span, 0.0, 1.0)
    else:
        y = np.zeros(values.shape)
    return to_u8(y)

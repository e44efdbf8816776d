"""fracture-nn's preprocessing in numpy, for scoring a model exported to ONNX (`fracture export`).

One module, imported by every Python scorer of this repository (`scripts/onnx_predict.py`,
`scripts/ray_predict.py`), so that they all feed the graph the same tensor as `fracture predict`
does. The steps are fracture-nn's (crates/data/src/decode.rs, resize.rs, normalize.rs),
reproduced operation for operation so that the probabilities match:
  1. decode; 8-bit gray images as they are, others to BT.601 luma with integer weights,
     y = (299 R + 587 G + 114 B + 500) // 1000, alpha composited over black: (y A + 127) // 255;
  2. resize to S x S (S, the resize mode and the normalisation come from the ONNX metadata):
     letterbox (the longest side to S, black padding, centred) or stretch, with fracture-nn's
     separable triangle filter in float32 (horizontal pass, then vertical, rounded half away
     from zero). Pillow's own resize is a different filter and is not used;
  3. x = (p / 255 - mean) * (1 / std) in float32.
The graph (p_fractured: softmax, the positive class, test-time flip averaging if the model uses
it) does the rest.

Needs numpy and Pillow.
"""

import json
import math

import numpy as np
from PIL import Image

F32 = np.float32

# Metadata keys that `fracture export` writes and scoring needs.
REQUIRED_METADATA = ("image_size", "resize_mode", "normalization_mean", "normalization_std",
                     "class_names", "positive_class", "threshold")


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

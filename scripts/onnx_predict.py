#!/usr/bin/env python3
"""Score radiographs with a fracture-nn model exported to ONNX (`fracture export`), on ONNX Runtime.

    python3 scripts/onnx_predict.py MODEL.onnx IMAGE_OR_FOLDER... [--batch 16] [--threads 2] [--time]

Needs onnxruntime, numpy and Pillow (`pip install onnxruntime numpy pillow`). Prints one JSON
object per image, as `fracture predict --json` does: {"path", "p_fractured", "label"} (plus
"warning" for an image whose pixels are all equal) or {"path", "error"}. Folders are searched
recursively in sorted order for the extensions `fracture predict` takes (DICOM excepted: this
script reads what Pillow reads).

The preprocessing is fracture-nn's (crates/data/src/decode.rs, resize.rs, normalize.rs),
reproduced operation for operation so that the probabilities match `fracture predict`'s: BT.601
integer luma, fracture-nn's own triangle-filter resize in float32 (letterbox or stretch, from the
ONNX metadata), (p / 255 - mean) * (1 / std). It lives in scripts/fracture_preprocess.py (whose
docstring gives each step), shared with scripts/ray_predict.py; keep the two files together.
The graph (p_fractured: softmax, the positive class, test-time flip averaging if the model uses
it) does the rest. --time prints images per second on stderr (decode + preprocessing +
inference, wall clock, after a one-batch warm-up).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

import onnxruntime as ort

# The preprocessing lives in one module shared with scripts/ray_predict.py; its names are
# re-exported here for code that imported them from this script.
from fracture_preprocess import (  # noqa: F401
    F32, MetadataError, preprocess, preprocess_gray, read_meta, resample, resize_square,
    round_half_away, taps, to_luma8,
)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


def collect(paths):
    """Files given, and image files under folders (sorted, recursive), as `fracture predict`."""
    out, seen = [], set()

    def add(p):
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)

    def walk(d):
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            if os.path.isdir(p):
                walk(p)
            elif os.path.isfile(p) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                add(p)

    for p in paths:
        walk(p) if os.path.isdir(p) else add(p)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="the .onnx file written by `fracture export`")
    ap.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    ap.add_argument("--batch", type=int, default=16, help="images per ONNX Runtime call (default 16)")
    ap.add_argument("--threshold", type=float, help="threshold on P(fractured) (default: the model's)")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (default: all cores)")
    ap.add_argument("--time", action="store_true", help="print images per second on stderr")
    ap.add_argument("--json", action="store_true", help="accepted for symmetry with `fracture predict`; output is always JSON lines")
    a = ap.parse_args()
    if a.batch < 1:
        sys.exit("error: --batch must be at least 1")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    session = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    try:
        meta = read_meta(session)
    except MetadataError as e:
        sys.exit(f"error: {e}")
    threshold = meta["threshold"] if a.threshold is None else a.threshold
    pos, classes = meta["positive"], meta["classes"]
    other = classes[1 - pos]
    files = collect(a.images)
    if not files:
        sys.exit("error: no image files found")

    failed = 0
    start = None
    done = 0
    for b0 in range(0, len(files), a.batch):
        chunk = files[b0 : b0 + a.batch]
        ok, xs, results = [], [], {}
        for p in chunk:
            try:
                x, warn = preprocess(p, meta)
                ok.append((p, warn))
                xs.append(x)
            except Exception as e:  # a bad file is a line, not the end of the run
                results[p] = {"path": p, "error": f"{p}: {e}"}
        if xs:
            probs = session.run(["p_fractured"], {"image": np.stack(xs)})[0]
            for (p, warn), prob in zip(ok, probs):
                v = float(prob)
                line = {"path": p, "p_fractured": v, "label": classes[pos] if v >= threshold else other}
                if warn:
                    line["warning"] = warn
                results[p] = line
        for p in chunk:
            failed += "error" in results[p]
            print(json.dumps(results[p]))
        if start is None:  # the first batch warms up (session, allocations) and is not timed
            start = time.perf_counter()
        else:
            done += len(chunk)
    if a.time and done:
        secs = time.perf_counter() - start
        print(f"onnxruntime {ort.__version__}: {done} images in {secs:.2f} s = {done / secs:.2f} images/s "
              f"(batch {a.batch}, after a warm-up batch of {min(a.batch, len(files))})", file=sys.stderr)
    if failed:
        print(f"error: {failed} file(s) could not be classified", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

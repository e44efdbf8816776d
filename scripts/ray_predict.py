#!/usr/bin/env python3
"""Score an archive of radiographs on Ray Data with a fracture-nn model exported to ONNX.

    python3 scripts/ray_predict.py MODEL.onnx INPUT_URI OUTPUT_DIR [--batch 16] [--concurrency 2]
        [--num-cpus 1] [--format jsonl|parquet] [--threshold T] [--address ADDR] [--local-cpus N]

MODEL.onnx is a file written by `fracture export`. INPUT_URI is an image file or a folder,
searched recursively for the extensions `fracture predict` takes (png jpg jpeg gif bmp tif tiff
webp dcm), either a local path or a URI that pyarrow opens (s3://bucket/xrays/, gs://...).
OUTPUT_DIR (local or URI) receives one row per image with the fields of `fracture predict
--json`: {"path", "p_fractured", "label", "typicality"} plus "warning" and "sop_instance_uid"
(DICOM) when they apply, or {"path", "error"} for a file that cannot be read. "typicality" is
`fracture predict`'s record: {"score", "typical"} from the graph's `typicality` output (and the
`typicality_q99` of the model's metadata; an atypical image gets its warning), or
{"score": null, "typical": null, "note"} saying why it cannot judge. "path" is the absolute local path,
or the URI, of the image. JSON lines by default (files `*.jsonl`, one object per line, fields
that do not apply left out, keys sorted, as `fracture predict --json`); with --format parquet,
Parquet files with one column per field (null where it does not apply; typicality a struct).

The pipeline is Ray Data's: the files are listed by the driver, then `read_binary_files` ->
`map_batches` with a pool of --concurrency actors (a class: each builds one ONNX Runtime session
with --num-cpus intra-op threads, once) -> a JSON-lines datasink or `write_parquet`. The model's
bytes travel to the actors through Ray's object store, so the workers of a cluster need no copy
of the file. Each actor decodes and preprocesses its images with scripts/fracture_preprocess.py
(the module scripts/onnx_predict.py uses too: the same tensor as `fracture predict`), shipped to
the workers as the job's working_dir. DICOM files are read through pydicom where it is installed
on the workers (uncompressed and RLE out of the box; other compressions need pydicom's plugins),
and are error rows otherwise. A file that cannot be decoded (truncated, not an image, empty) is
an error row; it never stops the job. (A file that cannot even be opened, permission denied,
fails Ray's read task and so the job, as in any Ray Data pipeline; the rows written stay.)

Re-running on the same OUTPUT_DIR skips the files it already holds a row for (scored or failed),
as `fracture predict --out F --resume` does: only new files are read, and each run adds its own
files to OUTPUT_DIR. Ray writes a block's rows as soon as the block is scored, so a killed run
(Ctrl-C, SIGTERM, even SIGKILL) keeps what it wrote, and a re-run goes on from there; a
JSON-lines file cut short by the kill loses its torn last line (that image is scored again).
After a SIGKILL of this script, the local Ray processes it started may outlive it: `ray stop`
ends them.

At the end it prints on stderr the images scored and failed in this run, its rate (images per
second from the start of the Ray Data job to the last row written; Ray's own start-up is given
apart) and the rows OUTPUT_DIR holds. Exit status: 0 if every file listed has a scored row, 1 if
some have error rows (from this run or an earlier one) or got no row, 2 on bad arguments or a
model that is not a `fracture export` file, 3 if Ray could not be started or reached (any
other failure is a Python traceback).

The graph's outputs are found by name: `p_fractured` (required, one value per image), and
`typicality` if present (one score per image); any other output (logits, fracture_map...) is
not computed.

Ray: without --address (or RAY_ADDRESS), a local Ray instance is started with --local-cpus CPUs
(default: all). With --address auto or ray://host:10001 the job runs on that cluster; the images
must then be readable from the workers (object-store URIs), and so must OUTPUT_DIR. Ray's usage
statistics report is turned off (RAY_USAGE_STATS_ENABLED=0) unless the environment sets it.

Needs ray[data] (Ray 2.x), onnxruntime, numpy, Pillow, pyarrow; pydicom for DICOM.
"""

import argparse
import json
import logging
import os
import sys
import time
import unicodedata

import numpy as np

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPTS)
import fracture_preprocess as fp  # noqa: E402

EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".dcm")
FORMATS = {"jsonl": ".jsonl", "parquet": ".parquet"}


class UsageError(Exception):
    """Bad arguments or model: exit status 2 with this message."""


def escape_path(p):
    """`fracture predict`'s escape_path: backslash, tab, newline, CR and other control
    characters escaped, so that the key a path is recognised by is the same."""
    out = []
    for c in p:
        if c == "\\":
            out.append("\\\\")
        elif c == "\t":
            out.append("\\t")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif unicodedata.category(c) == "Cc":
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# The model: checked in the driver before Ray starts.

def inspect_model(model_bytes, threshold):
    """The scoring settings of an exported model, or UsageError saying what is wrong."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise UsageError(f"ONNX Runtime cannot load the model: {e}") from None
    try:
        meta = fp.read_meta(session)
    except fp.MetadataError as e:
        raise UsageError(str(e)) from None
    outputs = [o.name for o in session.get_outputs()]
    if "p_fractured" not in outputs:
        raise UsageError(f"the model has no output named p_fractured (its outputs: {outputs}): "
                         "not a file written by `fracture export`")
    inputs = [i.name for i in session.get_inputs()]
    if inputs != ["image"]:
        raise UsageError(f"the model's inputs are {inputs}, expected one named image")
    return {
        "meta": meta,
        "outputs": ["p_fractured"] + (["typicality"] if "typicality" in outputs else []),
        "threshold": meta["threshold"] if threshold is None else threshold,
        "typicality": typicality_settings(session, "typicality" in outputs),
    }


# `fracture predict`'s words (src/typicality.rs): the note of a model without a typicality bank,
# and the warning of an atypical image.
NO_BANK_NOTE = ("this model file has no typicality reference (written before it existed): "
                "it cannot judge")
ATYPICAL_WARNING = ("this image is unlike the radiographs the model learned from: its "
                    "probability means little")


def typicality_settings(session, has_output):
    """The q99 score above which an image is atypical (the metadata's `typicality_q99`, else
    the model description that `fracture export` stores as `fracture_nn`), and the note for
    rows that cannot be judged."""
    m = session.get_modelmeta().custom_metadata_map
    bank, q99 = None, None
    try:
        bank = (json.loads(m.get("fracture_nn", "{}")).get("model") or {}).get("typicality")
        q99 = float(m["typicality_q99"]) if "typicality_q99" in m else \
            None if bank is None else float(bank["q99"])
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    if q99 is not None and bank is None:
        bank = {"q99": q99}
    if not has_output:
        note = NO_BANK_NOTE if bank is None else \
            "this ONNX graph has no typicality output (exported without it): it cannot judge"
    elif q99 is None:
        note = "the model's metadata has no typicality threshold (q99): the score cannot be judged"
    else:
        note = None
    return {"q99": q99, "note": note}


# ---------------------------------------------------------------------------------------------
# The files: listed by the driver (local or object store), so that done ones are never read.

def filesystem_of(uri):
    """(pyarrow filesystem, path inside it, prefix that makes a path back into a URI)."""
    from pyarrow import fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri), ""
    if uri.startswith("file://"):
        return pafs.LocalFileSystem(), os.path.abspath(uri[len("file://"):]), ""
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    except Exception as e:
        raise UsageError(f"{uri}: cannot open this URI: {e}") from None
    return filesystem, path, uri.split("://", 1)[0] + "://"


def list_images(uri):
    """(filesystem, sorted image paths inside it, URI prefix) for a file or a folder."""
    from pyarrow import fs as pafs

    filesystem, root, prefix = filesystem_of(uri)
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise UsageError(f"{uri}: no such file or folder")
    if info.type == pafs.FileType.File:
        return filesystem, [root], prefix
    selector = pafs.FileSelector(root, recursive=True)
    paths = sorted(
        f.path for f in filesystem.get_file_info(selector)
        if f.type == pafs.FileType.File and os.path.splitext(f.path)[1].lower() in EXTENSIONS
    )
    return filesystem, paths, prefix


# ---------------------------------------------------------------------------------------------
# What OUTPUT_DIR already holds.

def read_done(out_uri, fmt):
    """{path key: True if scored, False if failed} of the rows already in OUTPUT_DIR.

    A torn last line of a local JSON-lines file (a killed run) is cut off, as `fracture predict
    --resume` does, and its image is scored again. A line that is not a result, a Parquet file
    that cannot be read, or results of the other format are errors: the folder is not resumed."""
    from pyarrow import fs as pafs

    filesystem, root, _ = filesystem_of(out_uri)
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        return {}
    if info.type != pafs.FileType.Directory:
        raise UsageError(f"{out_uri}: OUTPUT_DIR is a file, not a folder")
    files = [f for f in filesystem.get_file_info(pafs.FileSelector(root))
             if f.type == pafs.FileType.File]
    other = [f.base_name for f in files
             if any(f.base_name.endswith(ext) for k, ext in FORMATS.items() if k != fmt)]
    if other:
        raise UsageError(f"{out_uri} holds results in another format ({other[0]}...): "
                         f"pass the --format they were written with, or choose another OUTPUT_DIR")
    done = {}
    for f in sorted(files, key=lambda f: f.path):
        if not f.base_name.endswith(FORMATS[fmt]) or f.base_name.startswith("."):
            continue
        if fmt == "parquet":
            read_parquet_done(filesystem, f.path, done)
        else:
            read_jsonl_done(filesystem, f.path, done, local=isinstance(filesystem, pafs.LocalFileSystem))
    return done


def read_jsonl_done(filesystem, path, done, local):
    with filesystem.open_input_stream(path) as s:
        data = s.read()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            key = row["path"]
            if not isinstance(key, str):
                raise TypeError
        except (ValueError, TypeError, KeyError):
            raise UsageError(f"{path}: line {number} is not a result row ({line[:80]!r}); this folder "
                             "holds files not written by ray_predict.py, so it is not resumed") from None
        done[key] = "error" not in row
    if torn:
        if local:
            os.truncate(path, len(data) - len(torn))
            print(f"warning: {path}: removed a torn last line ({len(torn)} bytes, left by a killed "
                  "run); its image is scored again", file=sys.stderr)
        else:
            print(f"warning: {path}: ignoring a torn last line ({len(torn)} bytes); its image is "
                  "scored again", file=sys.stderr)


def read_parquet_done(filesystem, path, done):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, filesystem=filesystem, columns=["path", "error"])
    except Exception as e:
        raise UsageError(f"{path}: cannot read it ({e}); if a killed run left it cut short, "
                         "delete it and run again (its images are scored again)") from None
    for key, err in zip(table.column("path").to_pylist(), table.column("error").to_pylist()):
        done[key] = err is None


# ---------------------------------------------------------------------------------------------
# The actors.

def row_schema():
    """The columns of a row: the fields of `fracture predict --json`."""
    import pyarrow as pa

    typicality = pa.struct([("score", pa.float64()), ("typical", pa.bool_()), ("note", pa.string())])
    return pa.schema([("path", pa.string()), ("p_fractured", pa.float64()), ("label", pa.string()),
                      ("typicality", typicality), ("sop_instance_uid", pa.string()),
                      ("warning", pa.string()), ("error", pa.string())])


def typicality_record(score, settings):
    """`fracture predict`'s typicality record for one image (score None: no output)."""
    t = settings["typicality"]
    if score is None:
        return {"score": None, "typical": None, "note": t["note"]}
    if t["q99"] is None:
        return {"score": score, "typical": None, "note": t["note"]}
    # As TypicalityConfig::judge, in float32.
    return {"score": score, "typical": bool(np.float32(score) <= np.float32(t["q99"]))}


class Scorer:
    """Ray Data UDF: one ONNX Runtime session per actor, built once; a batch of
    {"bytes", "path"} rows in, a pyarrow table of result rows out. A file that cannot be read
    is an error row."""

    def __init__(self, model_bytes, settings, threads, prefix):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        self.meta = settings["meta"]
        self.outputs = settings["outputs"]
        self.threshold = settings["threshold"]
        classes, pos = self.meta["classes"], self.meta["positive"]
        self.positive, self.negative = classes[pos], classes[1 - pos]
        self.prefix = prefix
        self.settings = settings
        self.schema = row_schema()

    def __call__(self, batch):
        import pyarrow as pa

        rows, xs, scored = [], [], []
        for data, path in zip(batch["bytes"], batch["path"]):
            key = escape_path(self.prefix + str(path))
            row = dict.fromkeys(self.schema.names)
            row["path"] = key
            try:
                data = bytes(data)
                x, row["warning"] = fp.preprocess_bytes(data, self.meta)
                if fp.is_dicom(data):
                    row["sop_instance_uid"] = fp.dicom_sop_instance_uid(data)
                xs.append(x)
                scored.append(row)
            except Exception as e:  # a bad file is a row, never the end of the job
                row["error"] = f"{key}: {e}" if str(e) else f"{key}: {type(e).__name__}"
            rows.append(row)
        if xs:
            out = self.session.run(self.outputs, {"image": np.stack(xs)})
            probs = np.asarray(out[0], dtype=np.float64).reshape(len(xs), -1)[:, 0]
            typ = (np.asarray(out[1], dtype=np.float64).reshape(len(xs), -1)[:, 0]
                   if len(out) > 1 else None)
            for i, row in enumerate(scored):
                p = float(probs[i])
                row["p_fractured"] = p
                row["label"] = self.positive if p >= self.threshold else self.negative
                t = typicality_record(None if typ is None else float(typ[i]), self.settings)
                row["typicality"] = t
                if row["warning"] is None and t["typical"] is False:
                    row["warning"] = ATYPICAL_WARNING
        return pa.Table.from_pylist(rows, schema=self.schema)


def jsonl_sink(out_uri):
    """A Ray datasink writing each block as JSON lines, as `fracture predict --json` writes
    them (null fields left out, keys sorted, compact, floats written in full)."""
    from ray.data.datasource import BlockBasedFileDatasink

    class JsonLines(BlockBasedFileDatasink):
        def __init__(self, path):
            super().__init__(path, file_format="jsonl")

        def write_block_to_file(self, block, file):
            lines = []
            for row in block.to_arrow().to_pylist():
                row = {k: v for k, v in row.items() if v is not None}
                if "typicality" in row and row["typicality"].get("note") is None:
                    row["typicality"].pop("note", None)  # a judged record has none
                lines.append(json.dumps(row, separators=(",", ":"), sort_keys=True))
            file.write(("\n".join(lines) + "\n").encode() if lines else b"")

    return JsonLines(out_uri)


# ---------------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring (head -60 scripts/ray_predict.py) for details.")
    ap.add_argument("model", help="the .onnx file written by `fracture export`")
    ap.add_argument("input", help="an image, or a folder searched recursively (local path or URI)")
    ap.add_argument("output", help="folder for the result files (local path or URI); re-runs skip what it holds")
    ap.add_argument("--batch", type=int, default=16, help="images per ONNX Runtime call (default 16)")
    ap.add_argument("--concurrency", type=int, default=2, help="scoring actors (default 2)")
    ap.add_argument("--num-cpus", type=float, default=1.0,
                    help="CPUs reserved per actor, also its ONNX Runtime threads (default 1)")
    ap.add_argument("--format", choices=sorted(FORMATS), default="jsonl", help="output format (default jsonl)")
    ap.add_argument("--threshold", type=float, help="threshold on P(fractured) (default: the model's)")
    ap.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    ap.add_argument("--local-cpus", type=int, help="CPUs of the local Ray instance (default: all cores)")
    ap.add_argument("--quiet", action="store_true", help="no Ray progress bars")
    a = ap.parse_args(argv)
    for name, v, least in (("--batch", a.batch, 1), ("--concurrency", a.concurrency, 1)):
        if v < least:
            ap.error(f"{name} must be at least {least}, got {v}")
    if not a.num_cpus > 0:
        ap.error(f"--num-cpus must be positive, got {a.num_cpus}")
    if a.local_cpus is not None and a.local_cpus < 1:
        ap.error(f"--local-cpus must be at least 1, got {a.local_cpus}")
    if a.threshold is not None and not 0.0 <= a.threshold <= 1.0:
        ap.error(f"--threshold must be within [0, 1], got {a.threshold}")
    return a


def run(a):
    try:
        with open(a.model, "rb") as f:
            model_bytes = f.read()
    except OSError as e:
        raise UsageError(f"{a.model}: {e.strerror}") from None
    settings = inspect_model(model_bytes, a.threshold)
    out_uri = a.output if "://" in a.output else os.path.abspath(a.output)
    done = read_done(out_uri, a.format)
    filesystem, paths, prefix = list_images(a.input)
    if not paths:
        raise UsageError(f"{a.input}: no image files ({' '.join(EXTENSIONS)}) found")
    keys = [escape_path(prefix + p) for p in paths]
    todo = [p for p, k in zip(paths, keys) if k not in done]
    skipped_failed = sum(1 for k in keys if done.get(k) is False)
    if len(todo) < len(paths):
        print(f"ray_predict: skipping {len(paths) - len(todo)} of {len(paths)} file(s) already in "
              f"{out_uri} ({skipped_failed} of them failed)", file=sys.stderr)
    timing = score(a, model_bytes, settings, filesystem, todo, prefix, out_uri) if todo else None
    after = read_done(out_uri, a.format)
    new = [k for p, k in zip(paths, keys) if k not in done]
    scored = sum(1 for k in new if after.get(k) is True)
    failed = sum(1 for k in new if after.get(k) is False)
    missing = [k for k in new if k not in after]
    rate = ""
    if timing:
        n, (init_secs, job_secs) = scored + failed, timing
        rate = (f" ({n} images in {job_secs:.1f} s = {n / job_secs:.2f} images/s, after "
                f"{init_secs:.1f} s of Ray start-up)")
    print(f"ray_predict: {scored} scored, {failed} failed this run{rate}; {out_uri} holds "
          f"{len(after)} rows", file=sys.stderr)
    if missing:
        print(f"error: {len(missing)} file(s) listed got no row (deleted during the run?), "
              f"e.g. {missing[0]}; run again to score them", file=sys.stderr)
    if failed + skipped_failed + len(missing):
        print(f"error: {failed + skipped_failed} file(s) could not be classified (error rows in "
              f"{out_uri})", file=sys.stderr)
        return 1
    return 0


class RayStartError(Exception):
    """Ray could not be started or reached: exit status 3 with this message."""


def start_ray(ray, init):
    """ray.init, tried twice: a local instance whose raylet does not register within Ray's 30 s
    (a machine loaded by other work) is shut down and started once more."""
    for attempt in (1, 2):
        try:
            ray.init(**init)
            return
        except Exception as e:  # Ray raises a bare Exception for a start-up timeout
            ray.shutdown()
            if attempt == 2 or "address" in init:
                where = f"reach the Ray cluster at {init['address']}" if "address" in init else \
                    "start a local Ray instance"
                load = os.getloadavg()[0]
                hint = "" if "address" in init else (
                    f" (load average {load:.1f} on {os.cpu_count()} cores: Ray's processes must "
                    "register within 30 s; run when the machine is less loaded)")
                raise RayStartError(f"could not {where}: {e}{hint}") from None
            print(f"warning: Ray did not start ({e}); trying once more", file=sys.stderr)


def score(a, model_bytes, settings, filesystem, todo, prefix, out_uri):
    import ray

    # No usage report leaves the machine (Ray sends one by default): archives are hospital data.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    init = {"runtime_env": {"working_dir": SCRIPTS}}
    if a.quiet:
        init.update(log_to_driver=False, logging_level=logging.WARNING)
        logging.getLogger("ray").setLevel(logging.WARNING)
    address = a.address or os.environ.get("RAY_ADDRESS")
    if address:
        init["address"] = address
    else:
        init["include_dashboard"] = False  # a local instance for this job only
        if a.local_cpus:
            init["num_cpus"] = a.local_cpus
    start = time.perf_counter()
    start_ray(ray, init)
    started = time.perf_counter()
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = not a.quiet
        # Reading bytes and writing rows are I/O: their tasks reserve no CPU, so that the
        # actors can hold every CPU (a read task waiting for a CPU that the actors hold,
        # while the actors wait for its blocks, would be a deadlock).
        ds = ray.data.read_binary_files(todo, include_paths=True, filesystem=filesystem,
                                        ignore_missing_paths=True, num_cpus=0)
        ds = ds.map_batches(
            Scorer,
            fn_constructor_kwargs={"model_bytes": model_bytes, "settings": settings,
                                   "threads": max(1, int(a.num_cpus)), "prefix": prefix},
            batch_size=a.batch, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=a.concurrency), num_cpus=a.num_cpus,
        )
        io = {"num_cpus": 0}
        if a.format == "parquet":
            ds.write_parquet(out_uri, ray_remote_args=io)
        else:
            ds.write_datasink(jsonl_sink(out_uri), ray_remote_args=io)
        return started - start, time.perf_counter() - started
    finally:
        ray.shutdown()


def main(argv=None):
    a = parse_args(argv)
    try:
        sys.exit(run(a))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except RayStartError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()

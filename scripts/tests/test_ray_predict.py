"""scripts/ray_predict.py against `fracture predict --json`, on Ray Data in local mode (2 CPUs).

Run by .ci/run with the venv it makes (target/onnx-venv):

    target/onnx-venv/bin/python -m pytest -q scripts/tests

What it checks, on ~100 FracAtlas test images (`$FRACTURE_RAY_TEST_IMAGES`, default 100: every
k-th file of the sorted test split, so both classes) copied into a temporary folder beside three
broken files made here (a PNG cut in half, random bytes, an empty file) and five DICOM
radiographs of the shared sample (one per encoding, when pydicom is installed):
  - every file gets exactly one row, with the same keys as `fracture predict --json` gives it;
  - every probability equals `fracture predict`'s within 1e-4, with the same label (unless the
    probability is within 1e-4 of the threshold) and the same warning;
  - every broken file has an error row naming it, and no other file has one;
  - a second run on the same output folder, after one new image was added to the input, scores
    that image only: nothing is scored twice, each path keeps one row;
  - Parquet output, and a graph with extra outputs (a `typicality` passed through, a mask
    ignored), on a few images.

Needs: the `fracture` binary (`$FRACTURE_BIN`, else target/release/fracture, else
target/debug/fracture), ray[data], onnxruntime, numpy, Pillow, pyarrow (and onnx for the
extra-outputs test), and ../shared (or `$FRACTURE_SHARED`). A missing piece skips the test with
the reason, except under CI (the `CI` variable set), where it fails.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ray_predict.py"
MODEL = REPO / "models" / "fracatlas.safetensors"
TOL = 1e-4
CI = bool(os.environ.get("CI"))


def require(ok, why):
    """Skip with `why` unless CI is set, where a missing requirement is a failure."""
    if not ok:
        if CI:
            pytest.fail(f"CI is set but {why}", pytrace=False)
        pytest.skip(why)


def importable(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


@pytest.fixture(scope="module")
def shared():
    d = Path(os.environ.get("FRACTURE_SHARED", REPO.parent / "shared"))
    require((d / "datasets" / "fracatlas" / "test").is_dir(),
            f"{d}/datasets/fracatlas/test is missing (../shared beside the repository)")
    return d


@pytest.fixture(scope="module")
def fracture_bin():
    candidates = [os.environ.get("FRACTURE_BIN")] if os.environ.get("FRACTURE_BIN") else [
        REPO / "target" / "release" / "fracture", REPO / "target" / "debug" / "fracture"]
    found = [Path(c) for c in candidates if Path(c).is_file()]
    require(found, f"no fracture binary at {[str(c) for c in candidates]} (cargo build -p fracture-cli)")
    return found[0]


@pytest.fixture(scope="module")
def ray_stack():
    for m in ("ray", "onnxruntime", "numpy", "PIL", "pyarrow"):
        require(importable(m), f"{sys.executable} cannot import {m} (pip install 'ray[data]' "
                "onnxruntime numpy pillow pyarrow)")


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory, fracture_bin):
    out = tmp_path_factory.mktemp("model") / "fracatlas.onnx"
    run([fracture_bin, "export", "--model", MODEL, "--onnx", out], ok=(0,))
    return out


def run(cmd, ok=(0,)):
    """Runs cmd; fails with its output unless its exit status is in `ok`."""
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=REPO)
    assert p.returncode in ok, (f"{cmd[0]} {cmd[1]} exited {p.returncode} (expected {ok})\n"
                                f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-5000:]}")
    return p


def ray_predict(model, inp, out, *extra, ok=(0, 1)):
    """ray_predict.py in local mode on 2 CPUs; a run that scores must end with its summary (a
    Python traceback also exits with 1, the status for files that failed)."""
    p = run([sys.executable, SCRIPT, model, inp, out, "--local-cpus", "2", "--concurrency", "2",
             "--num-cpus", "1", "--batch", "8", "--quiet", *extra], ok=ok)
    if p.returncode in (0, 1):
        assert "failed this run" in p.stderr, p.stderr[-5000:]
    return p


def rows_of(out_dir):
    """Every row of the JSON-lines files of a ray_predict output folder."""
    rows = []
    for f in sorted(Path(out_dir).glob("*.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines()]
    return rows


def predict_rows(fracture_bin, folder):
    """`fracture predict --json` on a folder: path -> row (exit 1 when some files fail)."""
    p = run([fracture_bin, "predict", "--model", MODEL, "--json", "--quiet", folder], ok=(0, 1))
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    return {r["path"]: r for r in rows}


def fracatlas_sample(shared, n):
    """n files spread over the sorted test split (both classes)."""
    files = sorted((shared / "datasets" / "fracatlas" / "test").glob("*/*.png"))
    assert len(files) >= n + 1, f"only {len(files)} FracAtlas test images"
    step = len(files) // (n + 1)
    return files[::step][: n + 1]  # the last one is added before the second run


def make_broken(folder):
    """Three files that cannot be classified; their names."""
    good = next(iter(sorted(folder.glob("*.png"))))
    data = good.read_bytes()
    (folder / "broken_truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "broken_random.png").write_bytes(random.Random(30).randbytes(5000))
    (folder / "broken_empty.png").write_bytes(b"")
    return {"broken_truncated.png", "broken_random.png", "broken_empty.png"}


def dicom_sample(shared):
    """One DICOM file per encoding of the shared sample (5 files), if pydicom is installed."""
    if not importable("pydicom"):
        return []
    d = shared / "datasets" / "dicom-sample" / "fracatlas"
    return sorted(d.glob("IMG0000092_*.dcm"))


def compare(got, want, threshold):
    """Largest |dp| over the scored rows; asserts the rest row by row."""
    worst = 0.0
    for path, w in want.items():
        g = got[path]
        assert set(g) == set(w), f"{path}: ray_predict gives keys {sorted(g)}, fracture predict {sorted(w)}"
        if "error" in w:
            continue
        dp = abs(g["p_fractured"] - w["p_fractured"])
        worst = max(worst, dp)
        assert dp <= TOL, f"{path}: P(fractured) {g['p_fractured']} vs fracture predict {w['p_fractured']}"
        if abs(w["p_fractured"] - threshold) > TOL:
            assert g["label"] == w["label"], f"{path}: label {g['label']} vs {w['label']}"
        assert g.get("warning") == w.get("warning"), path
        assert g.get("sop_instance_uid") == w.get("sop_instance_uid"), path
        gt, wt = g["typicality"], w["typicality"]
        assert set(gt) == set(wt) and gt.get("note") == wt.get("note"), (gt, wt)
        if wt["score"] is None:
            assert gt == wt, (gt, wt)
        else:
            assert abs(gt["score"] - wt["score"]) <= TOL and gt["typical"] == wt["typical"], (gt, wt)
    return worst


def model_threshold(onnx_model):
    import onnxruntime as ort

    s = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    return float(s.get_modelmeta().custom_metadata_map["threshold"])


def test_ray_predict_matches_fracture_predict_and_resumes(tmp_path, shared, fracture_bin, ray_stack,
                                                         onnx_model):
    n = int(os.environ.get("FRACTURE_RAY_TEST_IMAGES", "100"))
    *images, later = fracatlas_sample(shared, n)
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for f in images:
        shutil.copy(f, inp / f"{f.parent.name}_{f.name}")
    broken = make_broken(inp)
    dicoms = dicom_sample(shared)
    for f in dicoms:
        shutil.copy(f, inp / f.name)

    t0 = time.perf_counter()
    want = predict_rows(fracture_bin, inp)
    print(f"\n{fracture_bin} predict: {len(want)} files in {time.perf_counter() - t0:.1f} s")
    listed = {str(p) for p in inp.iterdir()}
    assert set(want) == listed, "fracture predict gives one row per file"
    failed = {Path(p).name for p, r in want.items() if "error" in r}
    assert failed == broken, f"fracture predict fails on {failed}, expected the broken files {broken}"

    first = ray_predict(onnx_model, inp, out)
    assert first.returncode == 1, "exit status 1: some files could not be classified"
    rows = rows_of(out)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)), "one row per file"
    got = {r["path"]: r for r in rows}
    assert set(got) == listed, f"rows for {len(got)} paths, {len(listed)} files listed"
    for path, r in got.items():
        if Path(path).name in broken:
            assert set(r) == {"path", "error"} and path in r["error"], r
        else:
            assert "error" not in r, r
    worst = compare(got, want, model_threshold(onnx_model))
    print(f"{len(images)} FracAtlas images + {len(dicoms)} DICOM + {len(broken)} broken files: "
          f"max |p_ray - p_fracture| = {worst:.2e}")
    print(first.stderr.strip().splitlines()[-2])

    # Second run on the same output folder: only the new image is scored.
    files_before = sorted(p.name for p in out.iterdir())
    new = inp / f"{later.parent.name}_{later.name}"
    shutil.copy(later, new)
    second = ray_predict(onnx_model, inp, out)
    assert second.returncode == 1, "the earlier error rows still count"
    assert f"skipping {len(listed)} of {len(listed) + 1} file(s)" in second.stderr, second.stderr
    rows = rows_of(out)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)), "a second run scores nothing twice"
    assert set(paths) == listed | {str(new)}
    assert all(r == got[r["path"]] for r in rows if r["path"] in got), "earlier rows unchanged"
    added = [p.name for p in out.iterdir() if p.name not in files_before]
    assert len(added) == 1, f"the second run wrote one file: {added}"
    only = rows_of_file(out / added[0])
    assert [r["path"] for r in only] == [str(new)], only
    want_new = predict_rows(fracture_bin, new)[str(new)]
    assert abs(only[0]["p_fractured"] - want_new["p_fractured"]) <= TOL

    # A third run: nothing left to score, nothing written.
    third = ray_predict(onnx_model, inp, out)
    assert "0 scored, 0 failed this run" in third.stderr, third.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(files_before + added)


def rows_of_file(f):
    return [json.loads(line) for line in f.read_text().splitlines()]


def test_parquet_output_and_extra_graph_outputs(tmp_path, shared, fracture_bin, ray_stack, onnx_model):
    """Parquet rows, and the graph's side outputs: `typicality` gives each row fracture
    predict's record (score, judged against the metadata's typicality_q99; an atypical image gets
    its warning); another output (the fracture map, and an extra one placed first) is not
    computed; p_fractured is still found by name."""
    require(importable("onnx"), f"{sys.executable} cannot import onnx (pip install onnx)")
    import onnx
    import pyarrow.parquet as pq
    from onnx import TensorProto, helper

    m = onnx.load(str(onnx_model))
    g = m.graph
    names = [o.name for o in g.output]
    assert "typicality" in names and "fracture_map" in names, names
    assert any(p.key == "typicality_q99" for p in m.metadata_props), "the default model has a bank"
    # A [N, 2] output placed first, so that outputs are not found by position.
    g.node.append(helper.make_node("Identity", ["logits"], ["extra"]))
    g.output.insert(0, helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["N", 2]))
    extended = tmp_path / "extended.onnx"
    onnx.save(m, str(extended))

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for f in fracatlas_sample(shared, 8)[:8]:
        shutil.copy(f, inp / f"{f.parent.name}_{f.name}")
    # Photographs the model must call atypical.
    for name in ("brick.png", "astronaut.png"):
        shutil.copy(shared / "datasets" / "not-radiographs" / name, inp / f"photo_{name}")
    (inp / "broken_empty.png").write_bytes(b"")
    want = predict_rows(fracture_bin, inp)

    p = ray_predict(extended, inp, out, "--format", "parquet")
    assert p.returncode == 1, p.stderr
    files = sorted(out.glob("*.parquet"))
    assert files, f"no parquet file in {list(out.iterdir())}"
    table = pq.read_table(out)
    assert table.column_names == ["path", "p_fractured", "label", "typicality",
                                  "sop_instance_uid", "warning", "error"]
    got = {r["path"]: r for r in table.to_pylist()}
    assert set(got) == set(want)
    judged = set()
    for path, w in want.items():
        r = got[path]
        if "error" in w:
            assert r["error"] and r["p_fractured"] is None and r["typicality"] is None, r
            continue
        assert r["error"] is None
        assert abs(r["p_fractured"] - w["p_fractured"]) <= TOL, (r, w)
        t = r["typicality"]
        assert abs(t["score"] - w["typicality"]["score"]) <= TOL, (r, w)
        assert t["typical"] == w["typicality"]["typical"] and t["note"] is None, (r, w)
        judged.add(t["typical"])
        if not t["typical"]:
            assert "unlike the radiographs the model learned from" in r["warning"], r
    assert judged == {True, False}, "the sample has typical and atypical images"

    # Resume reads Parquet too; results of the other format are refused, naming the option.
    again = ray_predict(extended, inp, out, "--format", "parquet")
    assert "0 scored, 0 failed this run" in again.stderr, again.stderr
    assert len(pq.read_table(out)) == len(want)
    mixed = ray_predict(extended, inp, out, ok=(2,))
    assert "--format" in mixed.stderr, mixed.stderr


def test_bad_arguments_are_clear_errors(tmp_path, ray_stack):
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_bytes(b"not a model")
    p = ray_predict(not_onnx, tmp_path, tmp_path / "out", ok=(2,))
    assert "ONNX Runtime cannot load the model" in p.stderr, p.stderr
    p = run([sys.executable, SCRIPT, not_onnx, tmp_path, tmp_path / "out", "--batch", "0"], ok=(2,))
    assert "--batch must be at least 1" in p.stderr, p.stderr


# ---------------------------------------------------------------------------------------------
# What an output folder already holds (no Ray needed).

@pytest.fixture(scope="module")
def rp():
    require(importable("pyarrow"), f"{sys.executable} cannot import pyarrow")
    sys.path.insert(0, str(REPO / "scripts"))
    import ray_predict

    return ray_predict


def test_resume_cuts_a_torn_line_and_refuses_foreign_files(tmp_path, rp):
    out = tmp_path / "out"
    out.mkdir()
    good = '{"path":"/a.png","p_fractured":0.5,"label":"fractured"}\n{"path":"/b.png","error":"x"}\n'
    (out / "run1_000000.jsonl").write_text(good + '{"path":"/c.pn')
    assert rp.read_done(str(out), "jsonl") == {"/a.png": True, "/b.png": False}
    assert (out / "run1_000000.jsonl").read_text() == good, "the torn line is cut off"

    (out / "notes.jsonl").write_text("hello\n")
    with pytest.raises(rp.UsageError, match="notes.jsonl: line 1 is not a result row"):
        rp.read_done(str(out), "jsonl")
    (out / "notes.jsonl").unlink()

    (out / "x.parquet").write_bytes(b"PAR1 cut short")
    with pytest.raises(rp.UsageError, match="--format"):
        rp.read_done(str(out), "jsonl")
    (out / "run1_000000.jsonl").unlink()
    with pytest.raises(rp.UsageError, match="x.parquet: cannot read it"):
        rp.read_done(str(out), "parquet")
    assert rp.read_done(str(tmp_path / "missing"), "jsonl") == {}


def test_paths_are_escaped_as_fracture_predict_does(rp):
    assert rp.escape_path("/x/a\tb\\c\nd\x01.png") == "/x/a\\tb\\\\c\\nd\\x01.png"
    assert rp.escape_path("/ok/é.png") == "/ok/é.png"

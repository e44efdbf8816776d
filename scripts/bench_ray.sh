#!/usr/bin/env bash
# Ray Data throughput (docs/DEPLOY.md, "Ray Data"): scripts/ray_predict.py in local mode beside
# `fracture predict` and scripts/onnx_predict.py, over the same folder, one after the other.
# Usage: scripts/bench_ray.sh FRACTURE_BIN PYTHON FOLDER [CPUS]
# PYTHON has onnxruntime, numpy, pillow, ray[data] and pyarrow (.ci/run's target/onnx-venv).
set -euo pipefail
bin=$1 py=$2 folder=$3 cpus=${4:-2}
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bin" export --model models/fracatlas.safetensors --onnx "$out/fracatlas.onnx" > /dev/null
n=$(find "$folder" -type f -name '*.png' | wc -l)
echo "images: $n in $folder; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
# timed FILE CMD...: runs CMD with its stdout to FILE, prints the wall-clock seconds.
timed() { local f=$1 s e; shift; s=$(date +%s.%N); "$@" > "$f"; e=$(date +%s.%N); echo "$e - $s" | bc -l | cut -c1-6; }

t=$(timed "$out/rust.jsonl" "$bin" predict --model models/fracatlas.safetensors --json --quiet "$folder" 2> /dev/null)
echo "fracture predict (release, batch 8):   $n images in $t s wall = $(echo "$n / $t" | bc -l | cut -c1-5) images/s"

t=$(timed "$out/ort.jsonl" "$py" scripts/onnx_predict.py "$out/fracatlas.onnx" "$folder" --batch 16 \
  --threads "$cpus" --time 2> "$out/ort.err")
echo "onnx_predict.py (batch 16, $cpus threads): $n images in $t s wall = $(echo "$n / $t" | bc -l | cut -c1-5) images/s; $(tail -1 "$out/ort.err")"

t=$(timed /dev/null "$py" scripts/ray_predict.py "$out/fracatlas.onnx" "$folder" "$out/ray" --local-cpus "$cpus" \
  --concurrency "$cpus" --num-cpus 1 --batch 16 --quiet 2> "$out/ray.err")
echo "ray_predict.py ($cpus actors x 1 CPU, batch 16): $n images in $t s wall = $(echo "$n / $t" | bc -l | cut -c1-5) images/s; $(grep '^ray_predict:' "$out/ray.err" | tail -1)"
echo "load average now $(cut -d' ' -f1-3 /proc/loadavg)"

# Same answers: the largest difference in p_fractured between the three.
"$py" - "$out/rust.jsonl" "$out/ort.jsonl" "$out/ray" <<'PY'
import glob, json, sys
# Keyed by class folder and file name (fracture predict and onnx_predict.py print the paths as
# given, ray_predict.py absolute ones).
load = lambda lines: {"/".join(d["path"].split("/")[-2:]): d["p_fractured"] for d in map(json.loads, lines)}
rust = load(open(sys.argv[1]))
ort = load(open(sys.argv[2]))
ray = load(l for f in glob.glob(sys.argv[3] + "/*.jsonl") for l in open(f))
assert rust.keys() == ort.keys() == ray.keys(), (len(rust), len(ort), len(ray))
for name, other in (("onnx_predict", ort), ("ray_predict", ray)):
    print(f"max |p_fracture - p_{name}| over {len(rust)} images: "
          f"{max(abs(rust[k] - other[k]) for k in rust):.2e}")
PY

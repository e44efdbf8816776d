#!/usr/bin/env bash
# Serving throughput (docs/BENCHMARKS.md, "Serving throughput"): `fracture predict` (release)
# beside ONNX Runtime on the exported model, over the same folder, interleaved in one run.
# Usage: scripts/bench_serving.sh FRACTURE_BIN PYTHON FOLDER [ROUNDS]
set -euo pipefail
bin=$1 py=$2 folder=$3 rounds=${4:-2}
cd "$(dirname "$0")/.."
out=$(mktemp -d)
"$bin" export --model models/fracatlas.safetensors --onnx "$out/fracatlas.onnx" > /dev/null
n=$(find "$folder" -type f -name '*.png' | wc -l)
echo "images: $n in $folder; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  s=$(date +%s.%N)
  "$bin" predict --model models/fracatlas.safetensors --json "$folder" > "$out/rust.jsonl"
  e=$(date +%s.%N)
  echo "round $r: fracture predict (release, batch 1, hflip TTA): $(echo "$n / ($e - $s)" | bc -l | cut -c1-6) images/s"
  for b in 1 16; do
    "$py" scripts/onnx_predict.py "$out/fracatlas.onnx" "$folder" --batch "$b" --threads 2 --time > "$out/ort.jsonl" 2> "$out/ort.err"
    echo "round $r: $(tail -1 "$out/ort.err")"
  done
  echo "  load average now $(cut -d' ' -f1-3 /proc/loadavg)"
done
# Same answers: the largest difference in p_fractured between the two runs' last outputs.
"$py" - "$out/rust.jsonl" "$out/ort.jsonl" <<'PY'
import json, sys
a = {d["path"]: d["p_fractured"] for d in map(json.loads, open(sys.argv[1]))}
b = {d["path"]: d["p_fractured"] for d in map(json.loads, open(sys.argv[2]))}
assert a.keys() == b.keys()
print(f"max |p_rust - p_onnxruntime| over {len(a)} images: {max(abs(a[k] - b[k]) for k in a):.2e}")
PY
rm -rf "$out"

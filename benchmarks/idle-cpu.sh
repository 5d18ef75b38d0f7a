#!/usr/bin/env bash
# The CPU an idle pipeline costs: `streamflow up` on the embedded broker, nothing produced; after
# START_S of start-up, each stage's and the broker's CPU over MEASURE_S (from /proc).
#   benchmarks/idle-cpu.sh [--set kafka.fetch_idle_max_wait_ms=0 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
START_S=${START_S:-45}
MEASURE_S=${MEASURE_S:-20}
PORT=${PORT:-19411}
LOG=$(mktemp /tmp/idle-cpu-XXXX.log)
.venv/bin/streamflow up --metrics-port "$PORT" --set name="idle$$" "$@" >"$LOG" 2>&1 &
UP=$!
trap 'kill -INT $UP 2>/dev/null; wait $UP 2>/dev/null || true' EXIT
sleep "$START_S"
if ! kill -0 "$UP" 2>/dev/null; then
    echo "streamflow up exited early:"; cat "$LOG"; exit 1
fi
mapfile -t PIDS < <(pgrep -f "worker --stage|tansu-v")
.venv/bin/python - "$MEASURE_S" "${PIDS[@]}" <<'PY'
import sys, time

from streamflow.bench.systems import proc_cpu_s  # the bench's own /proc reading

seconds, pids = float(sys.argv[1]), [int(p) for p in sys.argv[2:]]
before = {p: proc_cpu_s(p) for p in pids}
time.sleep(seconds)
after = {p: proc_cpu_s(p) for p in pids}
for p in pids:
    cmd = open(f"/proc/{p}/cmdline").read().split("\0")
    name = "broker" if any("tansu" in c for c in cmd) else cmd[cmd.index("--stage") + 1]
    print(f"{name:10s} {(after[p] - before[p]) / seconds * 100:5.1f}% of a core")
PY

"""Time ``streamflow query`` over one day of stored telemetry results (generated, not scored).

    .venv/bin/python benchmarks/query.py --rows 10000000            # generates under /tmp, times
    .venv/bin/python benchmarks/query.py --store /tmp/sf-store --keep

The data is the store step's exact layout (``streamflow/store/__init__.py``): 24 hour folders,
``--partitions`` partitions of the sink topic, files of ``--rows-per-file`` rows named by their
first offset, the store's ``streamflow.*`` footer metadata, zstd and its row-group size. About
0.1 % of the rows are repeats (the same source coordinates at a later sink offset, as an
at-least-once upstream writes them), so the ``results`` view has something to remove; hours
12-23 are scored by model version 1.1.0. Every figure is the wall-clock time of the command as
a user runs it (a fresh process: start-up, DuckDB binding the views, the query).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamflow.store.files import Storage, file_name  # noqa: E402

HOUR_MS = 3_600_000
DAY0_MS = 1_764_547_200_000  # 2025-12-01T00:00:00Z
SCHEMA = json.loads((ROOT / "schemas/scored_result.avsc").read_text())


def arrow_schema() -> pa.Schema:
    ts = pa.timestamp("ms", tz="UTC")
    return pa.schema(
        [
            ("device_id", pa.string()),
            ("timestamp", ts),
            ("score", pa.float64()),
            ("label", pa.string()),
            ("model_name", pa.string()),
            ("model_version", pa.string()),
            ("latency_ms", pa.float64()),
            ("sf_source_topic", pa.string()),
            ("sf_source_partition", pa.int32()),
            ("sf_source_offset", pa.int64()),
            ("kafka_partition", pa.int32()),
            ("kafka_offset", pa.int64()),
            ("kafka_timestamp", ts),
        ]
    )


def generate(store: Path, rows: int, partitions: int, rows_per_file: int, seed: int = 0) -> int:
    """Write ``rows`` results over 24 hours; the number of files written."""
    rng = np.random.default_rng(seed)
    storage = Storage(str(store))
    devices = pa.array([f"device-{i:05d}" for i in range(5000)])
    per_hour_part = rows // (24 * partitions)
    next_source = [0] * partitions  # the raw topic's offsets, per partition
    next_sink = [0] * partitions  # the scored topic's offsets, per partition
    files = 0
    for hour in range(24):
        version = "1.0.0" if hour < 12 else "1.1.0"
        for p in range(partitions):
            n = per_hour_part
            src = np.arange(next_source[p], next_source[p] + n, dtype=np.int64)
            next_source[p] += n
            event = DAY0_MS + hour * HOUR_MS + np.sort(rng.integers(0, HOUR_MS, n))
            repeats = np.sort(rng.choice(n, size=n // 1000, replace=False))  # re-scored upstream
            src = np.concatenate([src, src[repeats]])  # same source record, same event time
            event = np.concatenate([event, event[repeats]])
            n = len(src)
            score = rng.beta(1, 12, n)
            for start in range(0, n, rows_per_file):
                sl = slice(start, min(start + rows_per_file, n))
                m = sl.stop - sl.start
                sink = np.arange(next_sink[p], next_sink[p] + m, dtype=np.int64)
                next_sink[p] += m
                s = score[sl]
                table = pa.table(
                    [
                        pc.take(devices, pa.array(rng.integers(0, len(devices), m))),
                        pa.array(event[sl], pa.timestamp("ms", tz="UTC")),
                        pa.array(s),
                        pa.array(np.where(s >= 0.5, "anomaly", "normal")),
                        pa.array(["telemetry-anomaly"] * m),
                        pa.array([version] * m),
                        pa.array(rng.gamma(2.0, 4.0, m)),
                        pa.array(["telemetry.raw"] * m),
                        pa.array(np.full(m, p, np.int32)),
                        pa.array(src[sl]),
                        pa.array(np.full(m, p, np.int32)),
                        pa.array(sink),
                        pa.array(event[sl] + 20, pa.timestamp("ms", tz="UTC")),
                    ],
                    schema=arrow_schema(),
                )
                meta = {
                    "topic": "telemetry.scored",
                    "partition": str(p),
                    "first_offset": str(int(sink[0])),
                    "last_offset": str(int(sink[-1])),
                    "rows": str(m),
                    "schema": json.dumps(SCHEMA),
                }
                table = table.replace_schema_metadata(
                    {f"streamflow.{k}": v for k, v in meta.items()}
                )
                folder = f"date=2025-12-01/hour={hour:02d}"
                rel = f"results/{folder}/{file_name('telemetry.scored', p, int(sink[0]))}"

                def write(f: object, table: pa.Table = table) -> None:
                    pq.write_table(table, f, compression="zstd", row_group_size=16_384)

                storage.publish(rel, write)
                files += 1
    return files


def timed(argv: list[str]) -> tuple[float, str]:
    """Seconds the command takes as a user runs it, and its output."""
    t = time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--rows-per-file", type=int, default=50_000)
    p.add_argument("--store", default="", help="where to generate (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the generated store")
    p.add_argument("--repeat", type=int, default=3, help="runs per query; the median is shown")
    args = p.parse_args()
    store = Path(args.store or tempfile.mkdtemp(prefix="streamflow-query-bench-"))
    try:
        if not (store / "results").exists():
            t = time.perf_counter()
            files = generate(store, args.rows, args.partitions, args.rows_per_file)
            size = sum(f.stat().st_size for f in store.rglob("*.parquet"))
            print(
                f"generated {args.rows:,} rows (+0.1 % repeats) in {files} files, "
                f"{size / 2**20:.0f} MiB, in {time.perf_counter() - t:.1f} s: {store}"
            )
        exe = [sys.executable, "-m", "streamflow.cli", "query", "--set", f"store.path={store}"]
        cases = {
            "query --summary (24 h)": [*exe, "--summary"],
            "count(*) FROM results_all": [*exe, "SELECT count(*) AS n FROM results_all"],
            "count(*) FROM results": [*exe, "SELECT count(*) AS n FROM results"],
            "one hour of results (pruned)": [
                *exe,
                "SELECT label, count(*) AS n, avg(score) AS mean_score FROM results "
                "WHERE date = '2025-12-01' AND hour = 7 GROUP BY label ORDER BY label",
            ],
            "SELECT 1 (start-up and binding)": [*exe, "SELECT 1 AS one"],
        }
        env_cpus = os.cpu_count()
        print(f"{env_cpus} CPUs; median of {args.repeat} runs, each a fresh process")
        for name, argv in cases.items():
            times = []
            out = ""
            for _ in range(args.repeat):
                s, out = timed(argv)
                times.append(s)
            runs = ", ".join(f"{x:.2f}" for x in times)
            print(f"  {name:<34} {sorted(times)[len(times) // 2]:6.2f} s   ({runs})")
            if name.startswith("query --summary"):
                print("\n".join("    " + line for line in out.splitlines()[:6]) + "\n    ...")
    finally:
        if not args.keep and not args.store:
            shutil.rmtree(store, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

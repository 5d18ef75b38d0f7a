"""``streamflow bench store``: the store step against a plain loop with no framework.

Both land the same results (telemetry results as the inference step writes them, with their
``sf-source-*`` headers) from a backlog on a fresh embedded broker into Parquet in the same
layout, rotating at ``store.flush_size`` rows:

- streamflow: ``worker --stage store`` (faust, its own group), measured until every row is in
  a published file;
- the loop: confluent-kafka consume -> fastavro decode -> pyarrow table -> write a temporary
  file, fsync, rename -> commit, in a process of its own.

Each figure is rows/s from the first row consumed (the process start) to the last file published,
and the process's CPU time per row, both read the same way (``/proc``). Also the store worker's
peak RSS while the backlog waits on the topic.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamflow.bench.systems import proc_cpu_s, proc_peak_rss_mb
from streamflow.broker import EmbeddedBroker, die_with_parent
from streamflow.settings import Settings, with_overrides


@dataclass
class StoreRun:
    system: str
    rows: int
    seconds: float
    cpu_s: float
    peak_rss_mb: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_row(self) -> float:
        return self.cpu_s / self.rows * 1e6 if self.rows else 0.0


def produce_results(settings: Settings, bootstrap: str, topic: str, n: int) -> None:
    """``n`` telemetry results on ``topic``, as the inference step writes them."""
    from confluent_kafka import Producer

    from streamflow.codecs import ResultEncoder
    from streamflow.kafka.config import producer_config

    enc = ResultEncoder.from_file(settings.output.schema, format=settings.output.format)
    p = Producer(producer_config(settings, bootstrap))
    rng = np.random.default_rng(3)
    start_ms = int(time.time() * 1000) - n
    chunk = 10_000
    for lo in range(0, n, chunk):
        k = min(chunk, n - lo)
        scores = rng.random(k)
        values = enc.encode(
            {
                "device_id": [f"rack{i % 5}-node{i % 40}" for i in range(lo, lo + k)],
                "timestamp": list(range(start_ms + lo, start_ms + lo + k)),
                "score": scores.tolist(),
                "label": np.where(scores >= 0.5, "anomaly", "normal").tolist(),
                "model_name": ["telemetry-anomaly"] * k,
                "model_version": ["1.0.0"] * k,
                "latency_ms": (rng.random(k) * 50).tolist(),
            },
            k,
        )
        for i, v in enumerate(values):
            o = lo + i
            headers: list[tuple[str, str | bytes | None]] = [
                ("sf-source-topic", b"bench.raw"), ("sf-source-partition", b"0"),
                ("sf-source-offset", str(o).encode())]  # fmt: skip
            while True:
                try:
                    p.produce(topic, v, key=f"d{o % 200}".encode(), headers=headers)
                    break
                except BufferError:
                    p.poll(0.05)
        p.poll(0)
    p.flush(60)


def stored_rows(root: Path) -> int:
    from streamflow.store.files import Storage

    storage = Storage(str(root))
    return sum(r.rows for r in storage.ranges("results")) if root.exists() else 0


def wait_rows(root: Path, n: int, proc: subprocess.Popen[bytes], timeout_s: float) -> float:
    """Seconds until ``n`` rows are stored (the process started at the start of the wait)."""
    started, deadline = time.monotonic(), time.monotonic() + timeout_s
    peak = 0.0
    while time.monotonic() < deadline and proc.poll() is None:
        peak = max(peak, proc_peak_rss_mb(proc.pid))
        if stored_rows(root) >= n:
            return time.monotonic() - started
        time.sleep(0.1)
    if proc.poll() is not None:
        raise RuntimeError(
            f"the process stopped (exit {proc.returncode}) before {n} rows were stored"
        )
    raise RuntimeError(f"{n} rows not stored in {timeout_s:.0f} s under {root}")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_system(system: str, settings: Settings, argv: list[str], n: int) -> StoreRun:
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="sf-bench-store-") as d:
        from streamflow.kafka.admin import TopicSpec, ensure_topics

        tag = os.urandom(3).hex()
        s = with_overrides(
            settings,
            topics={"scored": f"bench-{tag}.scored", "dlq": f"bench-{tag}.dlq"},
        )
        t = s.topics
        ensure_topics(
            broker.bootstrap,
            [TopicSpec(t.scored, t.partitions), TopicSpec(t.dlq, t.partitions)],
            settings=s,
        )
        produce_results(s, broker.bootstrap, t.scored, n)
        root = Path(d) / "store"
        sets = ["--set", f"topics.scored={t.scored}", "--set", f"topics.dlq={t.dlq}",
                "--set", f"store.path={root}", "--set", f"metrics.port={_free_port()}"]  # fmt: skip
        if system == "streamflow":
            cmd = [sys.executable, "-m", "streamflow.cli", "worker", "--stage", "store",
                   "--bootstrap", broker.bootstrap, *argv, *sets]  # fmt: skip
        else:
            cmd = [sys.executable, "-m", "streamflow.bench.store", broker.bootstrap,
                   s.source, t.scored, str(root), str(s.store.flush_size)]  # fmt: skip
        log = open(Path(d) / "worker.log", "wb")  # noqa: SIM115  (closed below)
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        try:
            seconds = wait_rows(root, n, proc, timeout_s=600)
            cpu, rss = proc_cpu_s(proc.pid), proc_peak_rss_mb(proc.pid)
        except RuntimeError:
            log.flush()
            print((Path(d) / "worker.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            proc.terminate()
            proc.wait(60)
            log.close()
        return StoreRun(system, n, seconds, cpu, rss)


def bench_store(settings: Settings, argv: list[str], *, records: int, repeat: int = 1) -> int:
    runs: dict[str, list[StoreRun]] = {"streamflow": [], "loop": []}
    print(f"store: {records} results per run, on a fresh embedded broker each", flush=True)
    for r in range(repeat):  # interleaved
        for system in runs:
            run = run_system(system, settings, argv, records)
            runs[system].append(run)
            print(
                f"  run {r + 1}/{repeat} {system}: {run.rows_per_s:,.0f} rows/s, "
                f"{run.cpu_us_per_row:.1f} CPU µs/row, peak RSS {run.peak_rss_mb:.0f} MB",
                flush=True,
            )
    med = {k: sorted(v, key=lambda x: x.rows_per_s)[len(v) // 2] for k, v in runs.items()}
    sf, loop = med["streamflow"], med["loop"]
    print("| system | rows/s | CPU µs/row | peak RSS MB |\n|---|---|---|---|")
    for name, x in (("streamflow store step", sf), ("plain loop (limit)", loop)):
        print(f"| {name} | {x.rows_per_s:,.0f} | {x.cpu_us_per_row:.1f} | {x.peak_rss_mb:.0f} |")
    print(
        f"ratio to the loop: throughput {sf.rows_per_s / loop.rows_per_s:.2f}, "
        f"CPU {sf.cpu_us_per_row / max(loop.cpu_us_per_row, 1e-9):.2f}"
    )
    return 0


# ---- the plain loop, in its own process ----------------------------------------------------


def plain_loop(bootstrap: str, pipeline: str, topic: str, root: str, flush_size: int) -> None:
    """consume -> decode -> pyarrow -> temp file, fsync, rename -> commit, until killed."""
    import fastavro
    import pyarrow as pa
    import pyarrow.parquet as pq
    from confluent_kafka import Consumer, TopicPartition

    from streamflow.codecs import _strip_logical_types
    from streamflow.settings.loading import load_settings

    s = load_settings(pipeline)
    raw_schema = json.loads(Path(s.output.schema).read_text())
    parsed = fastavro.parse_schema(_strip_logical_types(raw_schema))
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"loop-{os.getpid()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})  # fmt: skip
    c.subscribe([topic])
    rows: dict[int, list[dict[str, Any]]] = {}
    first: dict[int, int] = {}

    def land(p: int) -> None:
        batch = rows.pop(p)
        _write(root, topic, p, first.pop(p), batch, pa, pq)
        last = batch[-1]["kafka_offset"]
        c.commit(offsets=[TopicPartition(topic, p, last + 1)], asynchronous=False)

    while True:
        for m in c.consume(10_000, timeout=0.5):
            if m.error():
                continue
            p = m.partition() or 0
            rec = fastavro.schemaless_reader(io.BytesIO(m.value() or b""), parsed, None)
            assert isinstance(rec, dict)
            headers = dict(m.headers() or [])
            rec["sf_source_offset"] = int(headers["sf-source-offset"] or b"-1")
            rec["kafka_partition"], rec["kafka_offset"] = p, m.offset()
            rec["kafka_timestamp"] = m.timestamp()[1]
            first.setdefault(p, m.offset() or 0)
            rows.setdefault(p, []).append(rec)
            if len(rows[p]) >= flush_size:
                land(p)
        for p in [p for p in rows if rows[p]]:  # a quiet moment: land what is open
            land(p)


def _write(root: str, topic: str, p: int, first: int, rows: list[Any], pa: Any, pq: Any) -> None:
    from streamflow.store.files import file_name, hour_folder

    table = pa.Table.from_pylist(rows)
    table = table.replace_schema_metadata(
        {
            "streamflow.first_offset": str(first),
            "streamflow.last_offset": str(first + len(rows) - 1),
            "streamflow.rows": str(len(rows)),
        }  # fmt: skip
    )
    folder = Path(root) / "results" / hour_folder(rows[0]["timestamp"])
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / file_name(topic, p, first)
    tmp = folder / f".{final.name}.tmp"
    with open(tmp, "wb") as f:
        pq.write_table(table, f, compression="zstd")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)


if __name__ == "__main__":
    plain_loop(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))

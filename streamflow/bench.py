"""``streamflow bench e2e``: the whole pipeline on a backlog, measured from the outside.

Produces an N-record backlog (synthetic telemetry with its malformed records) to fresh
topics, then starts the stage processes exactly as ``streamflow up`` does and reads the
scored and dead-letter topics until every record is accounted for. Reports throughput
(first to last result), CPU seconds per record and peak RSS of the stage processes, and
writes ``bench-results/<timestamp>.json`` plus a markdown table.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from streamflow.collectors.produce import RawProducer, run_synthetic
from streamflow.demo import LocalPipeline, ResultMonitor
from streamflow.settings import Settings, load_settings

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a live process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


@dataclass
class E2EResult:
    system: str
    records: int
    accounted: int
    scored: int
    dead_lettered: int
    duplicates: int
    seconds: float
    records_per_s: float
    cpu_s: float
    cpu_us_per_record: float
    rss_mb: dict[str, float]


def bench_streamflow_backlog(settings: Settings, argv_settings: list[str], records: int) -> E2EResult:
    from streamflow.broker import EmbeddedBroker, ensure_topics, pipeline_topics

    tag = f"bench{uuid.uuid4().hex[:6]}"
    broker = None if settings.kafka.bootstrap else EmbeddedBroker().start()
    bootstrap = broker.bootstrap if broker else settings.kafka.bootstrap
    overrides = {"name": tag, "topics.raw": f"{tag}.raw", "topics.scored": f"{tag}.scored",
                 "topics.dlq": f"{tag}.dlq", "kafka.bootstrap": bootstrap}
    s = load_settings(settings.source, {**_overrides_from_argv(argv_settings), **overrides})
    pipe = LocalPipeline(s, argv_settings + [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")])
    try:
        ensure_topics(bootstrap, pipeline_topics(s))
        print(f"producing a backlog of {records} records to {s.topics.raw} ...", flush=True)
        raw = RawProducer(s, bootstrap)
        run_synthetic(raw, rate=0, records=records, seed=3)
        monitor = ResultMonitor(s, bootstrap, 0)
        monitor.start()
        pipe.start()
        assert pipe.stages is not None
        pids = {stage: p.pid for stage, p in pipe.stages.procs.items()}
        cpu0 = {st: proc_cpu_s(pid) for st, pid in pids.items()}
        deadline = time.monotonic() + max(120.0, records / 500.0)
        while monitor.tally.accounted < records and time.monotonic() < deadline and not pipe.stages.dead():
            time.sleep(0.05)
        cpu = sum(proc_cpu_s(pid) - cpu0[st] for st, pid in pids.items())
        rss = {st: round(proc_peak_rss_mb(pid), 1) for st, pid in pids.items()}
        monitor.stop()
        t = monitor.tally
        seconds = max(t.last_ts - t.first_ts, 1e-9)
        return E2EResult("streamflow", records, t.accounted, t.scored, t.dead, t.duplicates, round(seconds, 3),
                         round(t.accounted / seconds, 1), round(cpu, 2), round(cpu / max(t.accounted, 1) * 1e6, 1), rss)
    finally:
        pipe.stop()
        if broker:
            broker.stop()


def _overrides_from_argv(argv: list[str]) -> dict[str, str]:
    out = {}
    for i, a in enumerate(argv):
        if a == "--set":
            k, _, v = argv[i + 1].partition("=")
            out[k] = v
    return out


def run_bench(settings: Settings, argv_settings: list[str], *, records: int, what: str = "e2e") -> int:
    result = bench_streamflow_backlog(settings, argv_settings, records)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path("bench-results")
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"{stamp}.json").write_text(json.dumps({"e2e_backlog": [asdict(result)]}, indent=2))
    table = [
        "| system | records | accounted | records/s | CPU µs/record | peak RSS MB (per stage) |",
        "|---|---|---|---|---|---|",
        f"| {result.system} | {result.records} | {result.accounted} | {result.records_per_s:,.0f} | "
        f"{result.cpu_us_per_record:.0f} | {', '.join(f'{k} {v:.0f}' for k, v in result.rss_mb.items())} |",
    ]
    (out_dir / f"{stamp}.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    print(f"results: {out_dir / (stamp + '.json')}")
    ok = result.accounted == result.records
    if not ok:
        print(f"INCORRECT: {result.accounted} of {result.records} records accounted for")
    return 0 if ok else 1

"""``streamflow bench e2e``: streamflow and two baselines, same data, same machine, same run.

Systems: ``streamflow`` (the default topology, three stage processes), ``chained`` (the
chained topology, one process), ``limit`` (a plain confluent-kafka batch loop, consume wait
5 ms; ``limit-<N>ms`` the same loop with a wait of N ms) and ``naive`` (a per-record faust
agent); see ``baselines.py``.

1. Backlog: N synthetic records (with their malformed ones, the same ones every run) are
   produced to a raw topic on a fresh embedded broker per run (the broker slows down as it
   accumulates batches, so a shared one would favour whoever runs first). The system
   consumes it, and a separate consumer reads its result and dead-letter topics until every
   record is accounted for. Reported: records/s (first to last result), CPU µs per record of
   the system's processes and, separately, of the embedded broker (both sampled every 20 ms
   and read between the first and the last result, so start-up is not counted), peak worker
   RSS. ``--repeat`` runs each system several times, interleaved, and reports the median.
   Checked: scored + dead-lettered == produced, and a sample of scores equals a direct ONNX
   Runtime computation on the same raw bytes. Then the record batches the run left per
   partition of each topic are counted (``scan.py``).
2. Latency (``latency.py``): each system on a fresh topic fed at fixed rates. End-to-end
   latency is the result's arrival at the separate consumer minus the raw message's Kafka
   timestamp: whole-run percentiles, per 5-second window, steady CPU per record, batches per
   partition, the per-hop breakdown (``hops.py``) and the stages' own histograms
   (``inprocess.py``).
3. Optional scaling: 1, 2, 4 processes per stage on the backlog, for each streamflow topology.
4. Goals (``goals.py``): issue 13's ratios to the plain loops of the same run, PASS or MISS.

Writes bench-results/<timestamp>.json, .md and .png.
"""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import fastavro
import numpy as np

from streamflow.bench.goals import goal_rows, throughput_reference
from streamflow.bench.latency import batches_line, latency_run, run_topics
from streamflow.bench.report import label
from streamflow.bench.results import Backlog, BenchResult, Latency
from streamflow.bench.scan import scan_topics
from streamflow.bench.systems import (
    TIMED_OUT,
    CpuSampler,
    Run,
    System,
    consume_wait_ms,
    fresh_raw_topic,
    set_overrides,
    wait_accounted,
)
from streamflow.broker import EmbeddedBroker
from streamflow.collectors.produce import RawProducer, run_synthetic
from streamflow.monitor import ResultMonitor
from streamflow.settings import Settings, with_overrides

SYSTEMS = ("streamflow", "chained", "limit", "naive")  # also limit-<N>ms: systems.consume_wait_ms
STREAMFLOW_KINDS = ("streamflow", "chained")  # the default topology (3 stages) and the chained one


def produce_backlog(settings: Settings, bootstrap: str, raw: str, records: int) -> None:
    rp = RawProducer(with_overrides(settings, topics={"raw": raw}), bootstrap)
    run_synthetic(rp, rate=0, records=records, seed=3)


def read_raw(
    bootstrap: str, topic: str, n: int, settings: Settings | None = None
) -> dict[tuple[int, int], bytes]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from streamflow.kafka.config import kafka_config

    c = Consumer(
        kafka_config(settings, bootstrap, logger="streamflow.librdkafka.bench")
        | {"group.id": f"bench-read-{time.time()}", "enable.auto.commit": False}
    )
    md = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
    out: dict[tuple[int, int], bytes] = {}
    deadline = time.monotonic() + 120
    while len(out) < n and time.monotonic() < deadline:
        for m in c.consume(10000, timeout=0.5):
            if not m.error():
                out[(m.partition() or 0, m.offset() or 0)] = m.value() or b""
    c.close()
    return out


def reference_results(settings: Settings, values: list[bytes]) -> list[dict[str, Any]]:
    """The results the pipeline's steps make of ``values`` computed in this process, without
    Kafka: the kind's clean, the after_clean transforms, prepare, the after_normalize
    transforms, the model, the after_model transforms, the declared record (rows refused on the
    way are left out, in order)."""
    from streamflow.inference.kinds import build_encoder, concat_outputs
    from streamflow.inference.session import load_model
    from streamflow.records import BytesColumn, RecordBatch
    from streamflow.stages.transforms import Transform, feature_layout, transform_batch

    s = with_overrides(settings, runtime={"device": "cpu"})
    model = load_model(s)
    kind = model.kind
    assert kind is not None
    folder = str(Path(s.source).resolve().parent)
    at = {
        point: [
            Transform.load(t.function, t.at, t.name, f"transforms[{i}]", folder)
            for i, t in enumerate(s.transforms)
            if t.at == point
        ]
        for point in ("after_clean", "after_normalize", "after_model")
    }
    n = len(values)
    c = kind.clean(values, [None] * n)
    batch = RecordBatch(
        "raw", 0, np.arange(n), np.zeros(n, np.int64), BytesColumn.from_list([None] * n),
        BytesColumn.from_list(list(values)), BytesColumn.from_list([i.encode() for i in c.ids]),
        c.event_ms, c.features, texts=c.texts, columns=c.columns,
    ).select(c.ok)  # fmt: skip
    cleaned = transform_batch(at["after_clean"], batch, feature_layout(s.features, "after_clean"))
    prepared = kind.prepare(cleaned.batch, _NoStage(s.name))
    layout = feature_layout(s.features, "after_normalize")
    parts = [transform_batch(at["after_normalize"], b, layout).batch for b in prepared.batches]
    out: list[bytes] = []
    for b in (p for p in parts if len(p)):
        outputs = concat_outputs([model.run_all(b.features)])
        done = transform_batch(at["after_model"], b, layout, outputs)
        assert done.outputs is not None
        out += kind.results(done.batch, done.outputs, model, np.zeros(len(done.batch)))
    return decode_results(s, out, build_encoder(s, kind.output_fields()).schema)


class _NoStage:
    """Stage labels and instruments for a kind's metrics, on a registry of its own."""

    def __init__(self, pipeline: str) -> None:
        from prometheus_client import CollectorRegistry

        from streamflow.metrics import Metrics

        self.metrics, self.pipeline, self.stage = (
            Metrics.create(CollectorRegistry()),
            pipeline,
            "normalize",
        )


def decode_results(settings: Settings, values: list[bytes], schema: Any) -> list[dict[str, Any]]:
    if settings.output.format == "json":
        return [json.loads(v) for v in values]
    out = []
    for v in values:
        out.append(cast(dict[str, Any], fastavro.schemaless_reader(io.BytesIO(v), schema, None)))
    return out


def check_scores(
    settings: Settings,
    raw: dict[tuple[int, int], bytes],
    results: dict[tuple[int, int], bytes],
    sample: int = 2000,
) -> tuple[int, float]:
    """A sample of results against the same raw bytes scored in this process
    (``reference_results``): the largest difference of any numeric field (inf when a result is
    missing or a non-numeric field differs)."""
    from streamflow.inference.kinds import build_encoder
    from streamflow.inference.session import load_model

    keys = random.Random(0).sample(sorted(results), min(sample, len(results)))
    want = reference_results(settings, [raw[k] for k in keys])
    kind = load_model(with_overrides(settings, runtime={"device": "cpu"})).kind
    assert kind is not None
    schema = build_encoder(settings, kind.output_fields()).schema
    got = decode_results(settings, [results[k] for k in keys], schema)
    if len(want) != len(got):
        return len(keys), float("inf")
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        for name, value in w.items():
            if name == "latency_ms":
                continue
            if isinstance(value, float):
                worst = max(worst, abs(float(g[name]) - value))
            elif isinstance(value, list) and value and isinstance(value[0], float):
                worst = max(worst, float(np.max(np.abs(np.subtract(g[name], value)))))
            elif g[name] != value:
                return len(keys), float("inf")
    return len(keys), worst


def median_run(runs: list[Backlog]) -> Backlog:
    """The run with the median throughput, carrying every run's figure."""
    ranked = sorted(runs, key=lambda b: b.records_per_s)
    mid = ranked[(len(ranked) - 1) // 2]
    mid.runs_records_per_s = [b.records_per_s for b in runs]
    mid.accounted = min(b.accounted for b in runs)  # a run that lost records must show
    mid.scores_max_abs_error = max(b.scores_max_abs_error for b in runs)
    mid.unfinished = next((b.unfinished for b in runs if b.unfinished), "")
    return mid


def backlog_run(
    kind: str,
    settings: Settings,
    bootstrap: str,
    raw_topic: str,
    raw: dict[tuple[int, int], bytes],
    records: int,
    replicas: int = 1,
    broker_pid: int | None = None,
    overrides: dict[str, str] | None = None,
) -> Backlog:
    system = System(
        kind, settings, bootstrap, Run(kind, raw_topic), replicas=replicas, overrides=overrides
    )
    monitor = ResultMonitor(system.settings, bootstrap, 0, keep_values=True)
    monitor.start()
    print(
        f"  {kind}{f' x{replicas}' if replicas > 1 else ''}: backlog of {records} ...", flush=True
    )
    sampler = CpuSampler(system, broker_pid)
    sampler.start()
    try:
        system.start()
        unfinished = wait_accounted(
            monitor, records, system, timeout_s=max(180.0, records / 1000.0)
        )
        time.sleep(0.05)  # one more sample after the last result
        rss = system.rss_mb()
    finally:
        sampler.stop()
        system.stop()
        monitor.stop()
    t = monitor.tally
    secs = max(t.last_ts - t.first_ts, 1e-9)
    # CPU from the first result to the last: the work on the backlog, not the start-up.
    used = sampler.between(t.first_ts, t.last_ts)
    broker_cpu = used.pop("broker", 0.0)
    by_proc = {k: round(v / max(t.accounted, 1) * 1e6, 1) for k, v in used.items()}
    cpu = sum(used.values())
    checked, err = check_scores(system.settings, raw, monitor.values or {})
    scan = scan_topics(system.settings, bootstrap, run_topics(system))
    b = Backlog(
        kind,
        records,
        t.accounted,
        t.duplicates,
        round(secs, 2),
        round(t.accounted / secs, 1),
        round(cpu / max(t.accounted, 1) * 1e6, 1),
        round(rss, 1),
        checked,
        err,
        len(system.pids()),
        by_proc,
        round(broker_cpu / max(t.accounted, 1) * 1e6, 1) if broker_pid else None,
        batches=scan.batches,
        unfinished=unfinished,
    )
    print(
        f"    {b.records_per_s:,.0f} records/s, {b.cpu_us_per_record:.0f} CPU µs/record "
        f"(broker {b.broker_cpu_us_per_record}), RSS {b.rss_mb:.0f} MB, "
        f"accounted {b.accounted}/{records}, scores max error {err:.2e}; "
        f"CPU µs/record by process {by_proc}"
        + (f"; DID NOT FINISH: {unfinished}" if unfinished else ""),
        flush=True,
    )
    print(
        "    batches per partition: "
        + (batches_line(scan.batches, scan) if not scan.error else scan.error),
        flush=True,
    )
    return b


def run_bench(
    settings: Settings,
    argv_settings: list[str],
    *,
    records: int,
    what: str = "e2e",
    rates: tuple[float, ...] = (1000.0, 5000.0),
    seconds: float = 20.0,
    systems: tuple[str, ...] = SYSTEMS,
    scaling: bool = False,
    repeat: int = 1,
) -> int:
    from streamflow.bench.report import write_report

    unknown = [k for k in systems if k not in SYSTEMS and consume_wait_ms(k) is None]
    if unknown:
        print(f"--systems: unknown {', '.join(unknown)} (one of {', '.join(SYSTEMS)}, limit-<N>ms)")
        return 2
    embedded = not settings.kafka.bootstrap
    overrides = set_overrides(argv_settings)  # the bench's --set: every system runs with them
    result = BenchResult(records, machine=_machine())

    @contextmanager
    def broker_for_run() -> Iterator[tuple[str, int | None]]:
        """A fresh embedded broker per measured run (it slows down as it accumulates batches:
        FIELD_NOTES), so every system and rate meets the same broker; else the configured one."""
        if not embedded:
            yield settings.kafka.bootstrap, None
            return
        with EmbeddedBroker() as b:
            yield b.bootstrap, b.pid

    def backlog(kind: str, replicas: int = 1) -> Backlog:
        with broker_for_run() as (bootstrap, pid):
            raw_topic = fresh_raw_topic(bootstrap, settings)
            produce_backlog(
                settings, bootstrap, raw_topic, records
            )  # the same seed: the same records
            raw = read_raw(bootstrap, raw_topic, records, settings)
            return backlog_run(
                kind, settings, bootstrap, raw_topic, raw, records, replicas, pid, overrides
            )

    if records:
        print(
            f"backlog: {records} records on {settings.topics.partitions} partitions, "
            + ("each run on a fresh embedded broker" if embedded else settings.kafka.bootstrap),
            flush=True,
        )
    runs: dict[str, list[Backlog]] = {k: [] for k in systems}
    for r in range(
        repeat if records else 0
    ):  # interleaved, so drift over the run hits every system alike
        for kind in systems:
            print(f"run {r + 1}/{repeat}:" if repeat > 1 else "", end="", flush=True)
            runs[kind].append(backlog(kind))
    for kind in (k for k in systems if runs[k]):
        result.backlog.append(median_run(runs[kind]))
    for kind in (k for k in STREAMFLOW_KINDS if scaling and records and k in systems):
        print(f"scaling: {kind}, processes per stage on the same backlog", flush=True)
        for k in (1, 2, 4):
            result.scaling.append(backlog(kind, k))
    print("latency at fixed input rates", flush=True)
    for kind in systems:
        for rate in rates:
            with broker_for_run() as (bootstrap, pid):
                result.latency.append(
                    latency_run(kind, settings, bootstrap, rate, seconds, pid, overrides)
                )
    by = {b.system: b for b in result.backlog}
    limit = throughput_reference(list(by))
    for kind in (k for k in STREAMFLOW_KINDS if k in by):
        sf, ratios = by[kind], result.ratios.setdefault(kind, {})
        if limit is not None:
            ratios["ratio_to_limit"] = round(sf.records_per_s / by[limit].records_per_s, 3)
            ratios["cpu_ratio_to_limit"] = round(
                sf.cpu_us_per_record / max(by[limit].cpu_us_per_record, 1e-9), 3
            )
        if "naive" in by:
            ratios["ratio_to_naive"] = round(sf.records_per_s / by["naive"].records_per_s, 3)
    result.goals = goal_rows(result.backlog, result.latency)
    paths = write_report(result)
    print(Path(paths["md"]).read_text())
    print("wrote " + ", ".join(paths.values()))
    wrong = verdicts(result.backlog + result.scaling)
    for line in wrong:
        print(line)
    return 1 if wrong else 0


# Above this many record batches per partition in the raw topic, a fetch from the embedded broker
# can cost more than the records it returns (it scans every batch): on a 600,000-record backlog
# (~4,500 per partition) the plain loop ran at 2,600-13,000 records/s (benchmarks/README.md).
BATCHES_SLOW = 3_000


def verdicts(runs: list[Backlog]) -> list[str]:
    """What went wrong in the backlog runs: a loss or a wrong score is INCORRECT; a system still
    working when the bench stopped waiting is INCOMPLETE (too slow, nothing lost)."""
    lines = [
        f"INCORRECT: {label(b.system)} produced wrong scores (max error "
        f"{b.scores_max_abs_error:.2e})"
        for b in runs
        if b.scores_max_abs_error > 1e-5
    ]
    short = [b for b in runs if b.accounted != b.records]
    slow = [b for b in short if b.unfinished.startswith(TIMED_OUT)]
    lines += [
        f"INCORRECT: {label(b.system)} accounted for {b.accounted:,} of {b.records:,} records "
        f"({b.unfinished or 'the results stopped arriving'})"
        for b in short
        if b not in slow
    ]
    lines += [
        f"INCOMPLETE: {label(b.system)} accounted for {b.accounted:,} of {b.records:,} records "
        f"and was {b.unfinished}: too slow, not a loss"
        for b in slow
    ]
    if any(max(b.batches.get("raw") or [0]) > BATCHES_SLOW for b in slow):
        lines.append(
            f"  the raw topic held over {BATCHES_SLOW:,} record batches per partition, and every "
            "fetch from the embedded broker scans them all (benchmarks/README.md): run a "
            "smaller --records, or point --bootstrap at a real Kafka"
        )
    return lines


def _machine() -> dict[str, Any]:
    import os
    import platform

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


__all__ = ["BenchResult", "Backlog", "Latency", "run_bench", "asdict"]

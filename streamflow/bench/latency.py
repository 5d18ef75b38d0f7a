"""Latency at a fixed input rate: one system, a paced feed, every result's arrival timed.

Reported per run: the whole run's percentiles (end to end: the result's arrival at the bench's
consumer minus the raw message's timestamp), the same per window of ``WINDOW_S`` seconds of
the feed (the drift a short run hides), the system's and the broker's CPU per record over the
steady part of the run (after its first window, until the feed ends: start-up, group joins and
the drain are left out), the record batches the run left per partition of each topic
(``scan.py``), the per-hop breakdown from outside (``hops.py``) and the in-process histograms
(``inprocess.py``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from streamflow.bench.arrivals import ArrivalMonitor
from streamflow.bench.commits import CommitWatcher, commit_times, raw_group
from streamflow.bench.hops import HopCollector, hop_table
from streamflow.bench.inprocess import run_quantiles, scrape
from streamflow.bench.results import Latency, Window
from streamflow.bench.scan import TopicScan, scan_topics
from streamflow.bench.systems import CpuSampler, Run, System, fresh_raw_topic, wait_accounted
from streamflow.collectors.produce import RawProducer, run_synthetic
from streamflow.monitor import percentiles
from streamflow.settings import Settings
from streamflow.steps import STEPS, internal_topic

WINDOW_S = 5.0
STREAMFLOW_KINDS = ("streamflow", "chained")
# The paced feed is the instrument, not the system under test, and must not take the
# machine's CPU in proportion to how slowly the broker answers. An idempotent librdkafka
# producer allows five in-flight *messages* per partition (src/rdkafka_broker.c:
# RD_KAFKA_IDEMP_MAX_INFLIGHT - rktp_msgs_inflight), so a partition with a batch in flight
# holds its next ready batch, and the broker thread, its wake-up time already due, polls in a
# loop until the response comes: 2.2 million wake-ups in 30 s at 1,000 records/s and up to a
# quarter of a core while the three stages ran, against 28,000 and 2% without idempotence
# (benchmarks/README.md). Without it a retry could duplicate or reorder raw records, which
# the monitor would count; on loopback none was seen.
FEED_PRODUCER = {"enable.idempotence": False, "max.in.flight.requests.per.connection": 5}


def window_of(ingest_ms: np.ndarray, start_ms: float, width_s: float = WINDOW_S) -> np.ndarray:
    """Each record's window of ``width_s`` seconds from ``start_ms``, by its raw timestamp
    (records before it count in the first window)."""
    return np.maximum((ingest_ms - start_ms) // (width_s * 1000.0), 0).astype(np.int64)


def windows(
    ingest_ms: np.ndarray, latency_ms: np.ndarray, start_ms: float, width_s: float = WINDOW_S
) -> list[Window]:
    """p50 and p99 of the latencies of the records in each window (``window_of``)."""
    if not len(ingest_ms):
        return []
    idx = window_of(ingest_ms, start_ms, width_s)
    out = []
    for w in range(int(idx.max()) + 1):
        lat = latency_ms[idx == w]
        if len(lat):
            out.append(
                Window(
                    w * width_s,
                    len(lat),
                    round(float(np.percentile(lat, 50)), 1),
                    round(float(np.percentile(lat, 99)), 1),
                )
            )
    return out


def steady_span(t0: float, t1: float, width_s: float = WINDOW_S) -> tuple[float, float]:
    """The steady part of a feed from ``t0`` to ``t1`` (s): after its first window, when the
    feed lasts at least two; else all of it."""
    return (t0 + width_s, t1) if t1 - t0 >= 2 * width_s else (t0, t1)


def run_topics(system: System) -> dict[str, str]:
    """Role -> topic of every topic the run wrote: raw, scored, dlq and, for the stage
    topology, each step's internal topic (role ``<step> out``)."""
    s = system.settings
    topics = {"raw": s.topics.raw, "scored": s.topics.scored, "dlq": s.topics.dlq}
    if system.kind == "streamflow" and s.runtime.topology == "stages":
        topics |= {f"{st.name} out": internal_topic(s, st) for st in STEPS if st.output}
    return topics


def result_schema(settings: Settings) -> Any:
    """The Avro schema the results are written with (as ``check_scores`` reads them)."""
    from streamflow.inference.kinds import build_encoder
    from streamflow.inference.session import load_model
    from streamflow.settings import with_overrides

    kind = load_model(with_overrides(settings, runtime={"device": "cpu"})).kind
    assert kind is not None
    return build_encoder(settings, kind.output_fields()).schema


def _cpu_per_record(used: float, records: int) -> float | None:
    return round(used / records * 1e6, 1) if records else None


def latency_run(
    kind: str,
    settings: Settings,
    bootstrap: str,
    rate: float,
    seconds: float,
    broker_pid: int | None = None,
    overrides: dict[str, str] | None = None,
) -> Latency:
    raw_topic = fresh_raw_topic(bootstrap, settings)
    system = System(kind, settings, bootstrap, Run(kind, raw_topic), overrides=overrides)
    system.start()
    monitor = ArrivalMonitor(system.settings, bootstrap)
    monitor.start()
    rp = RawProducer(system.settings, bootstrap, **FEED_PRODUCER)
    # Warm both ends before the clock starts: connection set-up is not pipeline latency.
    rp.producer.list_topics(timeout=10)
    monitor.ready.wait(10)
    time.sleep(1.0)
    n = int(rate * seconds)
    feeder = threading.Thread(
        target=run_synthetic, kwargs={"raw": rp, "rate": rate, "records": n, "seed": 5}
    )
    sampler = CpuSampler(system, broker_pid, interval_s=0.1)
    metrics_url = (
        f"http://{system.settings.metrics.host}:{system.settings.metrics.port}/metrics"
        if kind in STREAMFLOW_KINDS
        else ""
    )
    commits = CommitWatcher(system.settings, bootstrap, raw_group(kind, system.settings), raw_topic)
    sampler.start()
    commits.start()
    try:
        before = scrape(metrics_url) if metrics_url else {}
        t0 = time.time()
        feeder.start()
        feeder.join()
        t_fed = time.time()
        wait_accounted(monitor, n, system, timeout_s=30.0)
        t_end = time.time()
        after = scrape(metrics_url) if metrics_url else {}
        time.sleep(min(3.0, 2 * system.settings.kafka.commit_interval_s))  # the last commits
    finally:
        sampler.stop()
        commits.stop()
        system.stop()
        monitor.stop()
    t = monitor.tally
    keys, ingest, arrival = monitor.arrivals()
    pct = percentiles(t.latencies_ms)
    used = sampler.between(t0, t_end)
    broker_s = used.pop("broker", None)
    secs = max(t_end - t0, 1e-9)
    a, b = steady_span(t0, t_fed)
    steady = sampler.between(a, b)
    steady_broker = steady.pop("broker", None)
    done = monitor.arrived_between(a * 1000.0, b * 1000.0)
    lat = Latency(
        kind,
        rate,
        seconds,
        n,
        t.accounted,
        round(pct["p50"], 1),
        round(pct["p95"], 1),
        round(pct["p99"], 1),
        round(pct["max"], 1),
        t.accounted < n,
        round(sum(used.values()) / secs * 100, 1),
        round(broker_s / secs * 100, 1) if broker_s is not None else None,
        windows(ingest, arrival - ingest, t0 * 1000.0),
        _cpu_per_record(sum(steady.values()), done),
        _cpu_per_record(steady_broker, done) if steady_broker is not None else None,
    )
    topics = run_topics(system)
    collector = HopCollector(system.settings.output.format, result_schema(system.settings))
    visitors = {role: collector.internal_visitor(role) for role in topics if role.endswith(" out")}
    visitors["scored"] = collector.result_visitor()
    scan = scan_topics(system.settings, bootstrap, topics, visitors)
    lat.batches = scan.batches
    if scan.error:
        lat.notes.append(f"topics not read back: {scan.error}")
    else:
        steps = [role for role in topics if role.endswith(" out")]
        committed = ("raw", "raw committed", commit_times(keys, commits.samples))
        points = collector.points(keys, ingest, arrival, steps)
        lat.hops = hop_table(points, [committed], window_of(ingest, t0 * 1000.0))
    if commits.error:
        lat.notes.append(f"commits not watched: {commits.error}")
    lat.in_process = run_quantiles(before, after)
    print_latency(lat, scan)
    return lat


def print_latency(lat: Latency, scan: TopicScan | None = None) -> None:
    print(
        f"  {lat.system} at {lat.rate:,.0f}/s for {lat.seconds:g} s: p50 {lat.p50_ms} "
        f"p95 {lat.p95_ms} p99 {lat.p99_ms} max {lat.max_ms} ms; "
        f"CPU {lat.cpu_pct:.0f}% of a core, broker {lat.broker_cpu_pct}%; steady CPU µs/record "
        f"{lat.steady_cpu_us_per_record} (broker {lat.steady_broker_cpu_us_per_record})"
        + (f"  SATURATED ({lat.accounted}/{lat.produced} in time)" if lat.saturated else ""),
        flush=True,
    )
    if lat.windows:
        print(
            f"    p50/p99 ms per {WINDOW_S:g} s window: "
            + ", ".join(f"{w.start_s:g}s {w.p50_ms}/{w.p99_ms}" for w in lat.windows),
            flush=True,
        )
    if lat.batches:
        print("    batches per partition: " + batches_line(lat.batches, scan), flush=True)
    for h in lat.hops:
        print(
            f"    hop {h.name}: p50 {h.p50_ms} p99 {h.p99_ms} ms (p50 first/last window "
            f"{h.first_p50_ms}/{h.last_p50_ms}); records >= p99: "
            f"p50 {h.tail_p50_ms} ms"
            + (f", {h.tail_share:.0%} of their latency" if h.tail_share == h.tail_share else ""),
            flush=True,
        )
    if lat.in_process:
        print(
            "    in-process: "
            + ", ".join(
                f"{q.name} p50 {q.p50_ms} p99 {q.p99_ms} ms per {q.per}" for q in lat.in_process
            ),
            flush=True,
        )
    for note in lat.notes:
        print(f"    {note}", flush=True)


def batches_line(batches: dict[str, list[int]], scan: TopicScan | None = None) -> str:
    return "; ".join(
        f"{role} {'/'.join(str(x) for x in per)}"
        + (f" ({scan.records_per_batch(role):.0f} messages/batch)" if scan is not None else "")
        for role, per in batches.items()
    )

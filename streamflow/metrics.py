"""Prometheus instruments: the only module that creates them.

Instruments live on an injected ``CollectorRegistry`` so each test gets a fresh one.
Label values come from small fixed sets (stage, outcome, reason code, topic, partition,
model): never record keys or offsets.

When ``PROMETHEUS_MULTIPROC_DIR`` is set (``streamflow worker --stage all`` runs one
process per stage), values are written to shared files and the supervising process
serves their sum on one endpoint (prometheus_client's multiprocess mode). The standard
``process_*`` metrics come from ``ProcessMetrics``: multiprocess mode has none, so the serving
process reads each child's from /proc at scrape time.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import multiprocess as _mp
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

BATCH_BUCKETS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
SECONDS_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
FILL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
# scores and probabilities; a regression output outside [0, 1] lands in the first or +Inf bucket
OUTPUT_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


BUILD_LABELS = ("version", "python", "onnxruntime", "faust", "confluent_kafka")


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def build_info(version: str) -> dict[str, str]:
    """streamflow_build_info's labels: streamflow's ``version`` (``resources.version()``) and the
    versions of what it runs on ("" for one not installed)."""

    def installed(*names: str) -> str:
        for name in names:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        return ""

    return {
        "version": version,
        "python": platform.python_version(),
        "onnxruntime": installed("onnxruntime", "onnxruntime-gpu"),
        "faust": installed("faust-streaming"),
        "confluent_kafka": installed("confluent-kafka"),
    }


@dataclass
class Metrics:
    """Every streamflow instrument, bound to one registry."""

    registry: CollectorRegistry
    records: Counter
    batch_records: Histogram
    stage_seconds: Histogram
    inference_seconds: Histogram
    end_to_end: Histogram
    dead_letters: Counter
    consumer_lag: Gauge
    consumer_lag_seconds: Gauge
    batch_fill: Histogram
    queue_delay: Histogram
    fetch_delay: Histogram
    gc_pause: Histogram
    batch_wait: Gauge
    slo_headroom: Gauge
    model_info: Gauge
    padding_waste: Gauge
    gpus: Gauge
    slo_p99_latency: Gauge
    slo_dead_letter_ratio: Gauge
    slo_lag: Gauge
    slo_input_drift: Gauge
    build_info: Gauge
    gpu_utilization: Gauge
    gpu_memory_used: Gauge
    gpu_memory_total: Gauge
    produced: Counter
    delivery_errors: Counter
    delivery_retries: Counter
    up: Gauge
    input_drift: Gauge
    model_output: Histogram
    predictions: Counter
    store_rows: Counter
    store_bytes: Counter
    store_files: Counter
    store_open_files: Gauge
    store_delay: Histogram
    store_errors: Counter
    # `streamflow collect http`
    collector_requests: Counter
    collector_records: Counter
    collector_request_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        r = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=r,
            records=Counter(
                "streamflow_records",
                "Records handled, by stage and outcome (ok, rejected).",
                ["pipeline", "stage", "outcome"],
                registry=r,
            ),
            batch_records=Histogram(
                "streamflow_batch_records",
                "Records per processed batch.",
                ["pipeline", "stage"],
                buckets=BATCH_BUCKETS,
                registry=r,
            ),
            stage_seconds=Histogram(
                "streamflow_stage_processing_seconds",
                "Time a stage spends on one batch (decode, transform, encode; not waiting).",
                ["pipeline", "stage"],
                buckets=SECONDS_BUCKETS,
                registry=r,
            ),
            inference_seconds=Histogram(
                "streamflow_inference_seconds",
                "ONNX Runtime session.run time per batch.",
                ["pipeline", "model"],
                buckets=SECONDS_BUCKETS,
                registry=r,
            ),
            end_to_end=Histogram(
                "streamflow_end_to_end_latency_seconds",
                "From the raw message's Kafka timestamp to the result's delivery "
                "to the sink topic.",
                ["pipeline"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            dead_letters=Counter(
                "streamflow_dead_letters",
                "Records sent to the dead-letter topic, by stage and reason code.",
                ["pipeline", "stage", "reason"],
                registry=r,
            ),
            consumer_lag=Gauge(
                "streamflow_consumer_lag_records",
                "High watermark minus the next offset to process, per consumed partition.",
                ["pipeline", "stage", "topic", "partition"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            consumer_lag_seconds=Gauge(
                "streamflow_consumer_lag_seconds",
                "How far behind a consumed partition is: age of the last record processed "
                "while records are waiting behind it (0 when caught up).",
                ["pipeline", "stage", "topic", "partition"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            batch_fill=Histogram(
                "streamflow_batch_fill_ratio",
                "How full each batch a stage takes is, relative to its maximum batch.",
                ["pipeline", "stage"],
                buckets=FILL_BUCKETS,
                registry=r,
            ),
            queue_delay=Histogram(
                "streamflow_queue_delay_seconds",
                "How long the oldest record of each batch waited in the stage's queue.",
                ["pipeline", "stage"],
                buckets=SECONDS_BUCKETS,
                registry=r,
            ),
            fetch_delay=Histogram(
                "streamflow_fetch_delay_seconds",
                "How long after it was produced (its Kafka timestamp) the oldest record of each "
                "fetch reached the stage: the broker hop and the fetch wait.",
                ["pipeline", "stage"],
                buckets=SECONDS_BUCKETS,
                registry=r,
            ),
            gc_pause=Histogram(
                "streamflow_gc_pause_seconds",
                "Pauses of Python's garbage collector in the stage's process, by generation "
                "(0 young, 2 full).",
                ["pipeline", "stage", "generation"],
                buckets=SECONDS_BUCKETS,
                registry=r,
            ),
            batch_wait=Gauge(
                "streamflow_batch_wait_seconds",
                "How long the stage waits for a batch to fill (adapted to the SLO when enabled).",
                ["pipeline", "stage"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            slo_headroom=Gauge(
                "streamflow_slo_headroom_seconds",
                "slo.p99_latency_ms minus the p99 end-to-end latency of the last second's results.",
                ["pipeline"],
                registry=r,
                multiprocess_mode="livemin",
            ),
            model_info=Gauge(
                "streamflow_model_info",
                "The model in use (value 1): name, version, sha256, the provider it runs on "
                "and the configured runtime.device.",
                ["pipeline", "model", "version", "sha256", "provider", "device"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            padding_waste=Gauge(
                "streamflow_padding_waste_ratio",
                "Text pipelines: pad tokens / all tokens fed to the model since the stage started; "
                "batching = bucketed (what is fed: texts grouped by length) | unbucketed (what "
                "padding each batch whole would have cost).",
                ["pipeline", "stage", "batching"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            # The pipeline's objectives (alert rules compare against them): one gauge per
            # objective, each in its own unit, so a rule or a panel never mixes seconds and ratios.
            slo_p99_latency=Gauge(
                "streamflow_slo_p99_latency_seconds",
                "Objective for the end-to-end p99 latency (slo.p99_latency_ms).",
                ["pipeline"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            slo_dead_letter_ratio=Gauge(
                "streamflow_slo_max_dead_letter_ratio",
                "Objective for dead letters over input records (slo.max_dead_letter_ratio).",
                ["pipeline"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            slo_lag=Gauge(
                "streamflow_slo_max_lag_seconds",
                "Objective for a partition's consumer lag in seconds (slo.max_lag_seconds).",
                ["pipeline"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            slo_input_drift=Gauge(
                "streamflow_slo_max_input_drift_psi",
                "Threshold for streamflow_input_drift_psi (monitoring.max_input_psi).",
                ["pipeline"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            build_info=Gauge(
                "streamflow_build_info",
                "The running build (value 1): streamflow's version and those of Python, "
                "ONNX Runtime, faust and confluent-kafka.",
                list(BUILD_LABELS),
                registry=r,
                multiprocess_mode="livemax",
            ),
            gpus=Gauge(
                "streamflow_gpus",
                "NVIDIA GPUs this inference worker sees (NVML; 0 without a GPU or driver).",
                ["pipeline"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            gpu_utilization=Gauge(
                "streamflow_gpu_utilization_ratio",
                "GPU busy time over the last sample period (NVML).",
                ["pipeline", "gpu"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            gpu_memory_used=Gauge(
                "streamflow_gpu_memory_used_bytes",
                "GPU memory in use (NVML, whole device).",
                ["pipeline", "gpu"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            gpu_memory_total=Gauge(
                "streamflow_gpu_memory_total_bytes",
                "GPU memory size (NVML).",
                ["pipeline", "gpu"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            produced=Counter(
                "streamflow_produced_messages",
                "Messages delivered to a topic, acknowledged by the broker.",
                ["pipeline", "topic"],
                registry=r,
            ),
            delivery_errors=Counter(
                "streamflow_delivery_errors",
                "Messages the broker did not acknowledge.",
                ["pipeline", "topic"],
                registry=r,
            ),
            delivery_retries=Counter(
                "streamflow_delivery_retries",
                "Messages sent again after a transient "
                "delivery error (broker unavailable, timeouts), by error.",
                ["pipeline", "topic", "error"],
                registry=r,
            ),
            up=Gauge(
                "streamflow_worker_up",
                "1 while the stage's worker runs.",
                ["pipeline", "stage"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            # Each normalize process computes the PSI of its own window (the partitions it
            # holds); summing those would be meaningless. The largest live value is the one an
            # alert wants (any process seeing drift), and a dead process's value goes with it.
            input_drift=Gauge(
                "streamflow_input_drift_psi",
                "Population stability index of each input feature over the last "
                "monitoring.drift_window cleaned records against the training bins in "
                "model.stats (published once min(drift_window, 1000) records are in the window).",
                ["pipeline", "feature"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            model_output=Histogram(
                "streamflow_model_output",
                "Values of each model output (scores, probabilities), per model and version.",
                ["pipeline", "model", "version", "output"],
                buckets=OUTPUT_BUCKETS,
                registry=r,
            ),
            predictions=Counter(
                "streamflow_predictions",
                "Labels predicted, per model, version and output (at most 32 label values per "
                "output; the rest count as label=other).",
                ["pipeline", "model", "version", "output", "label"],
                registry=r,
            ),
            store_rows=Counter(
                "streamflow_store_rows",
                "Rows the store step published in Parquet files, by table (results, dead_letters).",
                ["pipeline", "table"],
                registry=r,
            ),
            store_bytes=Counter(
                "streamflow_store_bytes",
                "Bytes of the Parquet files the store step published, by table.",
                ["pipeline", "table"],
                registry=r,
            ),
            store_files=Counter(
                "streamflow_store_files",
                "Parquet files the store step published, by table.",
                ["pipeline", "table"],
                registry=r,
            ),
            store_open_files=Gauge(
                "streamflow_store_open_files",
                "Files the store step holds open (rows buffered, offsets not yet committed).",
                ["pipeline"],
                registry=r,
                multiprocess_mode="livesum",
            ),
            store_delay=Histogram(
                "streamflow_store_delay_seconds",
                "From a result (or dead letter) produced to its file published, per row.",
                ["pipeline", "table"],
                buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
                registry=r,
            ),
            store_errors=Counter(
                "streamflow_store_write_errors",
                "Store writes or reads that failed and were retried (a full disk, S3 errors).",
                ["pipeline"],
                registry=r,
            ),
            # `streamflow collect http`
            collector_requests=Counter(
                "streamflow_collector_requests",
                "Requests the HTTP collector answered, by status code.",
                ["pipeline", "status"],
                registry=r,
            ),
            collector_records=Counter(
                "streamflow_collector_records",
                "Records the HTTP collector received, by outcome: accepted (acknowledged by the "
                "broker), rejected (in a body with a bad line: 400), failed (not acknowledged: "
                "503).",
                ["pipeline", "outcome"],
                registry=r,
            ),
            collector_request_seconds=Histogram(
                "streamflow_collector_request_duration_seconds",
                "Time the HTTP collector takes to answer a request, from its headers to the "
                "reply (reading the body and waiting for the broker included).",
                ["pipeline"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
        )


# A child process's labels and pid, for ProcessMetrics.
ChildProcess = tuple[Mapping[str, str], int]


class ProcessMetrics(Collector):
    """The standard ``process_*`` metrics (CPU seconds, resident and virtual memory, open and
    maximum file descriptors, start time) for the serving process and each of its children.

    The serving process's own are unlabelled, as prometheus_client's ProcessCollector exports
    them. Multiprocess mode (``worker --stage all``) has no process metrics of its own: each
    child's are read here from /proc/<pid> at scrape time and labelled with what ``children``
    gives (pipeline, stage, replica), so they are never stale and a child that has exited drops
    out. Linux only, like ProcessCollector (elsewhere there are none).
    """

    def __init__(self, children: Callable[[], Iterable[ChildProcess]] = tuple) -> None:
        self._children = children
        self._own = ProcessCollector(registry=None)

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}

        def add(collector: ProcessCollector, labels: Mapping[str, str]) -> None:
            for m in collector.collect():
                family = families.setdefault(m.name, Metric(m.name, m.documentation, m.type))
                for s in m.samples:
                    family.add_sample(s.name, {**s.labels, **labels}, s.value)

        add(self._own, {})
        for labels, pid in self._children():
            add(ProcessCollector(pid=partial(str, pid), registry=None), labels)
        return list(families.values())


def serve(
    metrics_registry: CollectorRegistry | None,
    host: str,
    port: int,
    *,
    multiprocess_dir: str = "",
    children: Callable[[], Iterable[ChildProcess]] = tuple,
) -> Any:
    """Serve ``/metrics`` on host:port: the registry's metrics, or with ``multiprocess_dir`` the
    sum over every process writing there; and ``process_*`` for this process and ``children``.
    Returns the HTTP server (``.shutdown()`` stops it)."""
    registry = CollectorRegistry()
    if multiprocess_dir:
        _mp.MultiProcessCollector(registry, path=multiprocess_dir)
    else:
        assert metrics_registry is not None
        registry.register(metrics_registry)
    registry.register(ProcessMetrics(children))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


def mark_process_dead(pid: int, multiprocess_dir: str) -> None:
    """Drop a finished child's live gauges (multiprocess mode)."""
    _mp.mark_process_dead(pid, path=multiprocess_dir)


def observe_many(histogram: Histogram, values: object) -> None:
    """Observe a whole array at once: one bucket count per bucket instead of one call per value.

    Uses prometheus_client's per-bucket values (stable since 0.4); works in multiprocess mode.
    """
    import numpy as np

    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return
    h: Any = histogram
    bounds = np.asarray(h._upper_bounds, dtype=np.float64)
    counts = np.bincount(np.searchsorted(bounds, v, side="left"), minlength=len(bounds))
    for bucket, c in zip(h._buckets, counts.tolist(), strict=False):
        if c:
            bucket.inc(c)
    h._sum.inc(float(v.sum()))

"""Watches a pipeline's scored and dead-letter topics and metrics endpoint.

Used by ``streamflow demo`` and by the benchmarks (``streamflow.bench``), which do not import the
CLI, so it lives outside ``streamflow.cli``.

``ResultMonitor`` counts what a user would: it reads the result and dead-letter topics with its
own consumer, matches each message to its source record by the ``sf-source-*`` headers (so a
redelivered duplicate is counted once), and measures end-to-end latency as the time a result
becomes readable minus the raw message's Kafka timestamp (the ``sf-ingest-ms`` header).
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streamflow.headers import H_INGEST_MS, H_REASON_CODE, H_SOURCE_OFFSET, H_SOURCE_PARTITION
from streamflow.kafka.config import kafka_config
from streamflow.settings import Settings


@dataclass
class Tally:
    """Results seen so far: counts, dead-letter reasons and end-to-end latencies."""

    scored: int = 0
    dead: int = 0
    duplicates: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    first_ts: float = 0.0
    last_ts: float = 0.0

    @property
    def accounted(self) -> int:
        """Source records with a result or a dead letter."""
        return self.scored + self.dead


class Arrival(NamedTuple):
    """One counted message: its source record, its raw message's timestamp (ms), which topic."""

    source: tuple[int, int]
    ingest_ms: int
    scored: bool


class ResultMonitor(threading.Thread):
    """Reads the scored and dead-letter topics and tallies results of records ingested since
    ``since_ms``."""

    def __init__(
        self, settings: Settings, bootstrap: str, since_ms: int, *, keep_values: bool = False
    ) -> None:
        super().__init__(name="streamflow-monitor", daemon=True)
        self.settings, self.since_ms = settings, since_ms
        self.values: dict[tuple[int, int], bytes] | None = {} if keep_values else None
        self.tally = Tally()
        self.lock = threading.Lock()
        self._stop_event = threading.Event()
        self.ready = threading.Event()  # set after the first fetch round trip
        self._seen: set[tuple[int, int]] = set()
        conf = kafka_config(settings, bootstrap, logger="streamflow.librdkafka.monitor")
        self.consumer = Consumer(
            conf
            | {
                "group.id": f"streamflow-demo-monitor-{int(time.time())}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        md = self.consumer.list_topics(timeout=10).topics
        t = settings.topics
        self.consumer.assign(
            [
                TopicPartition(name, p, OFFSET_BEGINNING)
                for name in (t.scored, t.dlq)
                for p in md[name].partitions
            ]
        )

    def run(self) -> None:
        """Pass every message to ``count_message`` until ``stop()``."""
        while not self._stop_event.is_set():
            # poll() returns as soon as one result is readable, then consume(timeout=0) takes what
            # else is already fetched: arrival times are not delayed by waiting for a full batch.
            first = self.consumer.poll(0.05)
            now = time.time()
            self.ready.set()
            if first is None:
                continue
            msgs = [first, *self.consumer.consume(5000, timeout=0)]
            with self.lock:
                for m in msgs:
                    self.count_message(m, now)
        self.consumer.close()

    def count_message(self, m: Message, now: float) -> Arrival | None:
        """Tally one message received at ``now`` (called under ``lock``); return it when it counts:
        not an error, not ingested before ``since_ms``, not a duplicate.

        The one per-message hook: a subclass extends it to keep more about each result.
        """
        if m.error():
            return None
        hdrs: Any = m.headers() or []
        h: dict[str, bytes] = {k: v for k, v in hdrs if isinstance(v, bytes)}
        ingest = int(h.get(H_INGEST_MS, b"0"))
        if ingest < self.since_ms:
            return None
        src = (int(h.get(H_SOURCE_PARTITION, b"-1")), int(h.get(H_SOURCE_OFFSET, b"-1")))
        if src in self._seen:
            self.tally.duplicates += 1
            return None
        self._seen.add(src)
        scored = m.topic() == self.settings.topics.scored
        if scored:
            self.tally.scored += 1
            if self.values is not None:
                self.values[src] = m.value() or b""
            self.tally.latencies_ms.append(now * 1000.0 - ingest)
        else:
            self.tally.dead += 1
            self.tally.reasons[h.get(H_REASON_CODE, b"other").decode()] += 1
        self.tally.first_ts = self.tally.first_ts or now
        self.tally.last_ts = now
        return Arrival(src, ingest, scored)

    def stop(self) -> None:
        """Stop reading and wait (up to 5 s) for the thread to close its consumer."""
        self._stop_event.set()
        self.join(timeout=5)


def percentiles(values: list[float], qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    """{"p50": ..., "p95": ..., "p99": ..., "max": ...} of ``values`` (NaN when there are none)."""
    if not values:
        return {f"p{int(q)}": float("nan") for q in qs} | {"max": float("nan")}
    arr = np.asarray(values)
    return {f"p{int(q)}": float(np.percentile(arr, q)) for q in qs} | {"max": float(arr.max())}


def scrape(url: str) -> dict[str, dict[str, float]]:
    """Per-stage totals from the metrics endpoint: {"records": {stage: n}, "lag": {stage: n}}."""
    out: dict[str, dict[str, float]] = {"records": {}, "lag": {}}
    try:
        text = urllib.request.urlopen(url, timeout=1).read().decode()
    except OSError:
        return out
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            stage = s.labels.get("stage", "")
            if s.name == "streamflow_records_total":
                out["records"][stage] = out["records"].get(stage, 0.0) + s.value
            elif s.name == "streamflow_consumer_lag_records":
                out["lag"][stage] = out["lag"].get(stage, 0.0) + s.value
    return out

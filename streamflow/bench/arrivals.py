"""The latency runs' monitor: ``ResultMonitor``'s tally, plus when each result arrived.

End-to-end latency is the result's arrival at this consumer minus the raw message's timestamp
(the ``sf-ingest-ms`` header). Keeping each arrival with its source coordinates lets the run be
cut into windows (``latency.py``) and joined with the topics read back after the run, hop by
hop (``hops.py``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from streamflow.headers import H_INGEST_MS, H_REASON_CODE, H_SOURCE_OFFSET, H_SOURCE_PARTITION
from streamflow.monitor import ResultMonitor
from streamflow.settings import Settings


def source_key(partition: np.ndarray | int, offset: np.ndarray | int) -> Any:
    """One int64 per source record, ``partition << 40 | offset``: the join key of ``hops.py``."""
    return (np.asarray(partition, dtype=np.int64) << 40) | np.asarray(offset, dtype=np.int64)


class ArrivalMonitor(ResultMonitor):
    """Reads the scored and dead-letter topics; per scored result keeps its source key, its
    raw message's timestamp and its arrival time (ms)."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        super().__init__(settings, bootstrap, 0)
        self.keys: list[int] = []
        self.ingest_ms: list[int] = []
        self.arrival_ms: list[float] = []
        self.dead_arrival_ms: list[float] = []

    def run(self) -> None:
        scored_topic = self.settings.topics.scored
        tally, seen = self.tally, self._seen
        while not self._stop_event.is_set():
            first = self.consumer.poll(0.05)  # as ResultMonitor: arrivals are not batched up
            now = time.time()
            self.ready.set()
            if first is None:
                continue
            msgs = [first, *self.consumer.consume(5000, timeout=0)]
            with self.lock:
                for m in msgs:
                    if m.error():
                        continue
                    hdrs: Any = m.headers() or []
                    h: dict[str, bytes] = {k: v for k, v in hdrs if isinstance(v, bytes)}
                    src = (
                        int(h.get(H_SOURCE_PARTITION, b"-1")),
                        int(h.get(H_SOURCE_OFFSET, b"-1")),
                    )
                    if src in seen:
                        tally.duplicates += 1
                        continue
                    seen.add(src)
                    ingest = int(h.get(H_INGEST_MS, b"0"))
                    if m.topic() == scored_topic:
                        tally.scored += 1
                        tally.latencies_ms.append(now * 1000.0 - ingest)
                        self.keys.append((src[0] << 40) | src[1])
                        self.ingest_ms.append(ingest)
                        self.arrival_ms.append(now * 1000.0)
                    else:
                        tally.dead += 1
                        self.dead_arrival_ms.append(now * 1000.0)
                        tally.reasons[h.get(H_REASON_CODE, b"other").decode()] += 1
                    tally.first_ts = tally.first_ts or now
                    tally.last_ts = now
        self.consumer.close()

    def arrivals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source keys, raw timestamps ms, arrival times ms) of the scored results so far."""
        with self.lock:
            return (
                np.asarray(self.keys, dtype=np.int64),
                np.asarray(self.ingest_ms, dtype=np.float64),
                np.asarray(self.arrival_ms, dtype=np.float64),
            )

    def arrived_between(self, t0_ms: float, t1_ms: float) -> int:
        """Results and dead letters that arrived from ``t0_ms`` to ``t1_ms``: the records whose
        processing that span's CPU paid for."""
        with self.lock:
            both = np.asarray(self.arrival_ms + self.dead_arrival_ms)
        return int(((both >= t0_ms) & (both <= t1_ms)).sum())

"""The latency runs' monitor: ``ResultMonitor``'s tally, plus when each result arrived.

End-to-end latency is the result's arrival at this consumer minus the raw message's timestamp
(the ``sf-ingest-ms`` header). Keeping each arrival with its source coordinates lets the run be
cut into windows (``latency.py``) and joined with the topics read back after the run, hop by
hop (``hops.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from confluent_kafka import Message

from streamflow.monitor import Arrival, ResultMonitor
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

    def count_message(self, m: Message, now: float) -> Arrival | None:
        """Tally as ``ResultMonitor`` does and keep when each counted message arrived."""
        a = super().count_message(m, now)
        if a is None:
            return None
        if a.scored:
            self.keys.append((a.source[0] << 40) | a.source[1])
            self.ingest_ms.append(a.ingest_ms)
            self.arrival_ms.append(now * 1000.0)
        else:
            self.dead_arrival_ms.append(now * 1000.0)
        return a

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

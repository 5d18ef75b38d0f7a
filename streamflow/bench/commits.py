"""When each raw record's offset was committed, watched from outside during a latency run.

The group that reads the raw topic (the clean stage's, the chained agent's, the plain loop's)
commits the offsets of what it has handed on. A consumer of the same group id that never
subscribes (it does not join the group) asks the broker for the committed offsets every
``interval_s``; a raw record's commit time is the first sample whose committed offset is past
it. For the stage topology that is the clean stage's commit, after its internal-topic output
was acknowledged, not the result's: the commits of the later stages would be read the same way
on their internal topics.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from streamflow.settings import Settings

Sample = tuple[float, int, int]  # time (ms), partition, committed offset (the next to read)


def raw_group(kind: str, settings: Settings) -> str:
    """The consumer group that reads a system's raw topic."""
    if kind == "streamflow":
        return settings.group_id("clean")
    if kind in ("chained", "naive"):
        return settings.group_id(kind)
    return settings.name  # the plain loop: --group, the run's name


def commit_times(keys: np.ndarray, samples: list[Sample]) -> np.ndarray:
    """For each record (``arrivals.source_key``: partition << 40 | offset), the time of the
    first sample whose committed offset of its partition is past it (NaN: never seen)."""
    out = np.full(len(keys), np.nan)
    if not samples or not len(keys):
        return out
    parts, offsets = keys >> 40, keys & ((1 << 40) - 1)
    by_part: dict[int, list[tuple[float, int]]] = {}
    for t, p, committed in samples:
        by_part.setdefault(p, []).append((t, committed))
    for p, seq in by_part.items():
        seq.sort()
        times = np.array([t for t, _ in seq])
        # committed offsets only grow (a rewind would be a bug of the group): the running max
        # makes the search valid whatever the samples show
        reached = np.maximum.accumulate(np.array([c for _, c in seq], dtype=np.int64))
        mine = parts == p
        i = np.searchsorted(reached, offsets[mine], side="right")
        found = i < len(reached)
        when = np.full(int(mine.sum()), np.nan)
        when[found] = times[i[found]]
        out[mine] = when
    return out


class CommitWatcher(threading.Thread):
    """Samples a group's committed offsets of one topic every ``interval_s``."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        group: str,
        topic: str,
        interval_s: float = 0.05,
    ) -> None:
        super().__init__(name="bench-commit-watcher", daemon=True)
        from confluent_kafka import Consumer, TopicPartition

        from streamflow.kafka.config import kafka_config

        self.consumer = Consumer(
            kafka_config(settings, bootstrap, logger="streamflow.librdkafka.bench")
            | {"group.id": group, "enable.auto.commit": False}
        )
        md = self.consumer.list_topics(topic, timeout=10).topics[topic]
        self.partitions = [TopicPartition(topic, p) for p in sorted(md.partitions)]
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self.error = ""
        self._stop_event = threading.Event()

    def run(self) -> None:
        last: dict[int, int] = {}
        try:
            while not self._stop_event.is_set():
                got = self.consumer.committed(self.partitions, timeout=5)
                now = time.time() * 1000.0
                for tp in got:
                    if tp.offset >= 0 and last.get(tp.partition) != tp.offset:
                        last[tp.partition] = tp.offset
                        self.samples.append((now, tp.partition, tp.offset))
                self._stop_event.wait(self.interval_s)
        except Exception as exc:  # the instrument failed, not the system: say so in the report
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.consumer.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

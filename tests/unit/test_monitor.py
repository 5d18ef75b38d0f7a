"""ResultMonitor's counting, fed through its poll loop by a fake consumer (no broker)."""

from __future__ import annotations

import threading
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message

from streamflow import monitor as monitor_module
from streamflow.headers import H_INGEST_MS, H_REASON_CODE, H_SOURCE_OFFSET, H_SOURCE_PARTITION
from streamflow.monitor import ResultMonitor
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE


class FakeConsumer:
    """Hands out ``BATCHES`` one poll at a time, then sets ``drained``."""

    BATCHES: list[list[Message]] = []

    def __init__(self, conf: dict[str, Any]) -> None:
        self.batches = list(self.BATCHES)
        self.rest: list[Message] = []
        self.drained = threading.Event()

    def list_topics(self, timeout: float) -> Any:
        return SimpleNamespace(topics=defaultdict(lambda: SimpleNamespace(partitions={0: None})))

    def assign(self, partitions: list[Any]) -> None:
        pass

    def poll(self, timeout: float) -> Message | None:
        if not self.batches:
            self.drained.set()
            return None
        first, *self.rest = self.batches.pop(0)
        return first

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        rest, self.rest = self.rest, []
        return rest

    def close(self) -> None:
        pass


def message(topic: str, partition: int, offset: int, ingest_ms: int, **headers: bytes) -> Message:
    hdrs: list[tuple[str, str | bytes | None]] = [
        (H_SOURCE_PARTITION, str(partition).encode()),
        (H_SOURCE_OFFSET, str(offset).encode()),
        (H_INGEST_MS, str(ingest_ms).encode()),
        *headers.items(),
    ]
    return Message(topic=topic, value=b"v%d" % offset, headers=hdrs)


def feed(monkeypatch: pytest.MonkeyPatch, batches: list[list[Message]]) -> None:
    """Make every monitor built from now on read ``batches`` through a ``FakeConsumer``."""
    monkeypatch.setattr(FakeConsumer, "BATCHES", batches)
    monkeypatch.setattr(monitor_module, "Consumer", FakeConsumer)


def run_through(monitor: ResultMonitor) -> None:
    """Run ``monitor``'s loop until its fake consumer has handed out every batch, then stop it."""
    monitor.start()
    consumer: Any = monitor.consumer
    assert consumer.drained.wait(5)
    monitor.stop()
    assert not monitor.is_alive()


def test_each_source_record_counts_once_and_old_or_failed_messages_not_at_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(PIPELINE, environ={})
    t = settings.topics
    feed(
        monkeypatch,
        [
            [message(t.scored, 0, 1, 1000), message(t.scored, 0, 1, 1000)],  # a redelivery
            [
                message(t.dlq, 0, 2, 1000, **{H_REASON_CODE: b"out_of_range"}),
                message(t.scored, 0, 3, 10),  # ingested before since_ms
                Message(topic=t.scored, error=KafkaError(KafkaError._PARTITION_EOF)),
            ],
        ],
    )
    monitor = ResultMonitor(settings, "unused:9092", since_ms=500, keep_values=True)
    run_through(monitor)
    tally = monitor.tally
    assert (tally.scored, tally.dead, tally.duplicates) == (1, 1, 1)
    assert tally.reasons == {"out_of_range": 1}
    assert monitor.values == {(0, 1): b"v1"}
    assert len(tally.latencies_ms) == 1 and 0.0 < tally.first_ts <= tally.last_ts

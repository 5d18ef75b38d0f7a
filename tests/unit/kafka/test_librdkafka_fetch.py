"""kafka.fetch_client = "librdkafka": the helpers of the librdkafka fetch loop, and its config.

The loop itself runs against the real broker (tests/integration/test_delivery.py runs a
restarted stage with it); these cover its pieces with fake librdkafka messages.
"""

from __future__ import annotations

from typing import Any

import pytest
from faust.types import TP

from streamflow.errors import ConfigError
from streamflow.kafka.config import fetch_config
from streamflow.kafka.transport import _by_partition, _consume, _same_positions
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE


class Err:
    def __init__(self, fatal: bool) -> None:
        self._fatal = fatal

    def fatal(self) -> bool:
        return self._fatal

    def __str__(self) -> str:
        return "KafkaError{code=_TRANSPORT}"


class Msg:
    """A confluent_kafka.Message's read methods."""

    def __init__(self, topic: str, partition: int, offset: int, error: Any = None) -> None:
        self._t, self._p, self._o, self._e = topic, partition, offset, error

    def error(self) -> Any:
        return self._e

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000 + self._o)

    def key(self) -> bytes:
        return b"k%d" % self._o

    def value(self) -> bytes:
        return b"v%d" % self._o

    def headers(self) -> list[tuple[str, bytes]] | None:
        return [("h", b"1")] if self._o % 2 else None


def test_messages_become_records_per_partition_in_order() -> None:
    msgs = [Msg("a", 0, 5), Msg("a", 1, 9), Msg("a", 0, 6), Msg("b", 0, 1)]
    out = _by_partition(msgs)
    assert list(out) == [("a", 0), ("a", 1), ("b", 0)]
    r5, r6 = out[("a", 0)]
    assert (r5.offset, r5.timestamp, r5.key, r5.value, r5.headers) == (
        5,
        1005,
        b"k5",
        b"v5",
        [("h", b"1")],
    )
    assert r6.headers == ()  # librdkafka's None: no headers, iterable like aiokafka's
    assert [r.offset for r in out[("a", 1)]] == [9]


def test_a_fetch_error_is_skipped_and_a_fatal_one_raised() -> None:
    from confluent_kafka import KafkaException

    out = _by_partition([Msg("a", 0, 1), Msg("a", 0, -1, Err(False)), Msg("a", 0, 2)])
    assert [r.offset for r in out[("a", 0)]] == [1, 2]
    with pytest.raises(KafkaException):
        _by_partition([Msg("a", 0, -1, Err(True))])


class FakeConsumer:
    def __init__(self, queued: list[Any]) -> None:
        self.queued = queued
        self.calls: list[tuple[int, float]] = []

    def consume(self, n: int, timeout: float) -> list[Any]:
        self.calls.append((n, timeout))
        out, self.queued = self.queued[:n], self.queued[n:]
        return out


def test_consume_waits_for_a_first_message_then_takes_what_is_queued_without_waiting() -> None:
    rk = FakeConsumer(list(range(7)))
    assert _consume(rk, 5, 0.25) == [0, 1, 2, 3, 4]
    assert rk.calls == [(1, 0.25), (4, 0)]
    rk = FakeConsumer([])
    assert _consume(rk, 5, 0.25) == []
    assert rk.calls == [(1, 0.25)]  # idle: one blocking wait, no second call


def test_the_assignment_is_redone_on_new_partitions_or_a_seek() -> None:
    a, b = TP("t", 0), TP("t", 1)
    assigned = {a: 10, b: 4}
    assert _same_positions(assigned, {a, b}, {a: 10, b: 4})
    assert _same_positions(assigned, {a, b}, {})  # no read offset yet: nothing moved
    assert not _same_positions(assigned, {a}, {a: 10})  # a partition revoked
    assert not _same_positions({a: 10}, {a, b}, {a: 10})  # one assigned
    assert not _same_positions(assigned, {a, b}, {a: 3, b: 4})  # faust seeked partition 0


def test_fetch_config_reads_like_the_agents_consumer() -> None:
    s = load_settings(
        PIPELINE, {"kafka.fetch_client": "librdkafka", "kafka.fetch_max_wait_ms": "7"}, environ={}
    )
    conf = fetch_config(s, "h:9092", "grp", "cid")
    assert conf["group.id"] == "grp" and conf["client.id"] == "cid"
    assert conf["enable.auto.commit"] is False  # faust's aiokafka consumer commits, never this one
    assert conf["fetch.wait.max.ms"] == 7
    assert conf["isolation.level"] == "read_uncommitted"
    s = load_settings(PIPELINE, {"kafka.consumer.max.partition.fetch.bytes": "123456"}, environ={})
    assert fetch_config(s, "h:9092", "g", "c")["max.partition.fetch.bytes"] == 123456


def test_an_unknown_fetch_client_fails_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="kafka.fetch_client"):
        load_settings(PIPELINE, {"kafka.fetch_client": "kafka-python"}, environ={})

"""Delivery retries and dead letters (kafka/delivery.py), against a producer that fails on cue."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from confluent_kafka import KafkaError

from streamflow.errors import DeliveryError
from streamflow.kafka.delivery import Backoff, deliver, is_transient
from streamflow.kafka.producer import Failure
from streamflow.records import OutMessage

FAST = Backoff(0.001, 0.004)


class ScriptedProducer:
    """Answers each send() with the next round of the script: message value -> error (or none)."""

    def __init__(self, rounds: list[dict[bytes, int]]) -> None:
        self.rounds = rounds
        self.sent: list[list[OutMessage]] = []

    def send(
        self, messages: Sequence[OutMessage], loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[list[Failure]]:
        self.sent.append(list(messages))
        errors = self.rounds.pop(0) if self.rounds else {}
        fut: asyncio.Future[list[Failure]] = loop.create_future()
        fut.set_result([(m, KafkaError(errors[m.value])) for m in messages if m.value in errors])
        return fut


def msgs(*values: bytes, topic: str = "p.scored") -> list[OutMessage]:
    return [OutMessage(topic, v) for v in values]


def run(
    producer: Any, messages: list[OutMessage], dead_letter_for: Any = None
) -> list[tuple[str, str, int]]:
    retries: list[tuple[str, str, int]] = []

    def on_retry(topic: str, err: KafkaError, n: int) -> None:
        retries.append((topic, err.name(), n))

    asyncio.run(
        deliver(
            producer,
            messages,
            backoff=FAST,
            dead_letter_for=dead_letter_for or (lambda m, e: OutMessage("p.dlq", m.value)),
            on_retry=on_retry,
        )
    )
    return retries


def test_transient_failures_are_sent_again_until_delivered_and_only_they() -> None:
    timed_out, down = KafkaError._MSG_TIMED_OUT, KafkaError._ALL_BROKERS_DOWN
    producer = ScriptedProducer([{b"b": timed_out, b"c": timed_out}, {b"c": down}, {}])
    retries = run(producer, msgs(b"a", b"b", b"c"))
    assert [[m.value for m in r] for r in producer.sent] == [
        [b"a", b"b", b"c"],
        [b"b", b"c"],
        [b"c"],
    ]
    assert retries == [("p.scored", "_MSG_TIMED_OUT", 2), ("p.scored", "_ALL_BROKERS_DOWN", 1)]


def test_a_result_the_broker_refuses_is_dead_lettered_and_the_rest_delivered() -> None:
    producer = ScriptedProducer([{b"big": KafkaError.MSG_SIZE_TOO_LARGE}, {}])
    retries = run(producer, msgs(b"ok", b"big"))
    assert [(m.topic, m.value) for m in producer.sent[1]] == [("p.dlq", b"big")]
    assert retries == []  # a permanent error is not retried


def test_a_refused_message_with_nowhere_to_go_fails_the_stage() -> None:
    producer = ScriptedProducer([{b"x": KafkaError.INVALID_RECORD}])
    with pytest.raises(DeliveryError, match="cannot be dead-lettered"):
        run(producer, msgs(b"x", topic="p.internal.cleaned"), dead_letter_for=lambda m, e: None)


def test_errors_are_sorted_into_transient_and_permanent() -> None:
    assert is_transient(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert is_transient(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
    assert is_transient(
        KafkaError(KafkaError.PRODUCER_FENCED)
    )  # epoch bumped after a timeout (Tansu)
    assert is_transient(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))  # until the ACL is fixed
    assert not is_transient(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert not is_transient(KafkaError(KafkaError.INVALID_RECORD))


def test_backoff_doubles_up_to_its_ceiling_with_jitter() -> None:
    b = Backoff(0.5, 30.0)
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (200, 30.0)):
        assert ceiling / 2 <= b.delay(attempt) <= ceiling

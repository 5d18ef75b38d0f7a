"""The stages' batch producer: one future per batch of messages.

Stages consume with faust (group membership, commits) but produce with librdkafka: one
``produce()`` call per message in C, batched on the wire (linger), and ONE asyncio future
per batch that resolves when the broker has acknowledged every message of it. A stage
acks its input only after that future resolves: at-least-once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Producer

from streamflow.records import OutMessage

log = logging.getLogger(__name__)

Failure = tuple[OutMessage, KafkaError]  # a message the broker did not acknowledge, and why


# The broker no longer takes this producer instance's messages: only a new instance helps.
_UNUSABLE = frozenset(
    {
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError._FENCED,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.INVALID_PRODUCER_ID_MAPPING,
    }
)


class BatchProducer:
    """Produces batches of messages; ``send()`` returns a future for the whole batch's delivery."""

    def __init__(self, conf: dict[str, Any], *, on_delivered: Any = None) -> None:
        self._conf = conf
        self._producer = Producer(conf)
        self._generation = 0  # producer instances replaced so far (see renew)
        self._retired: tuple[Producer, ...] = ()  # replaced, still reporting their last deliveries
        self._on_delivered = on_delivered  # callable(topic, n_ok, n_failed), called on the loop
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._poll_loop, name="streamflow-producer-poll", daemon=True
        )
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)
            for old in self._retired:
                old.poll(0)

    def _renew(self, generation: int, err: KafkaError) -> None:
        """Replace a producer the broker has fenced (or that hit a fatal error) by a fresh instance.

        An idempotent producer whose messages timed out bumps its epoch; a broker that does not
        follow (the embedded one) fences it from then on, and every later message fails. The
        old instance keeps reporting (failing) its queued messages, which are sent again on the
        new one. Once per generation: many batches see the same fencing."""
        if generation != self._generation:
            return
        log.warning("producer unusable (%s): starting a new producer instance", err.str())
        self._retired = (
            *(p for p in self._retired if len(p)),
            self._producer,
        )  # drop the finished ones
        self._producer = Producer(self._conf)
        self._generation += 1

    def send(
        self, messages: Sequence[OutMessage], loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[list[Failure]]:
        """Queue every message; the future resolves once the broker has answered for all of them,
        with the ones it did not acknowledge (empty: all delivered). See kafka/delivery.py."""
        fut: asyncio.Future[list[Failure]] = loop.create_future()
        if not messages:
            fut.set_result([])
            return fut
        # Delivery reports run on the poll thread only (never flush() or poll() on the caller's
        # thread while messages are out), so this countdown needs no lock.
        pending = [len(messages)]
        failures: list[Failure] = []
        per_topic: dict[str, int] = {}
        for m in messages:
            per_topic[m.topic] = per_topic.get(m.topic, 0) + 1

        generation = self._generation

        def settle() -> None:
            for _, err in failures:
                if err.fatal() or err.code() in _UNUSABLE:
                    self._renew(generation, err)
                    break
            if self._on_delivered is not None:
                failed: dict[str, int] = {}
                for m, _ in failures:
                    failed[m.topic] = failed.get(m.topic, 0) + 1
                for topic, n in per_topic.items():
                    self._on_delivered(topic, n - failed.get(topic, 0), failed.get(topic, 0))
            if not fut.done():
                fut.set_result(failures)

        def on_delivery(m: OutMessage) -> Any:
            def report(err: KafkaError | None, msg: Any) -> None:
                if err is not None:
                    failures.append((m, err))
                pending[0] -= 1
                if not pending[0]:
                    loop.call_soon_threadsafe(settle)

            return report

        produce = self._producer.produce
        for m in messages:
            while True:
                try:
                    if m.partition >= 0:
                        produce(
                            m.topic,
                            m.value,
                            m.key,
                            partition=m.partition,
                            headers=m.headers,  # type: ignore[arg-type]
                            on_delivery=on_delivery(m),
                        )
                    else:
                        produce(
                            m.topic,
                            m.value,
                            m.key,
                            headers=m.headers,  # type: ignore[arg-type]
                            on_delivery=on_delivery(m),
                        )
                    break
                except BufferError:
                    # Local queue full: the broker is slower than we produce. Waiting here (the
                    # poll thread drains the queue) is the backpressure that keeps memory bounded.
                    # produce_blocking(serve_callbacks=False) does the same; inlined here, the hot
                    # path, to save a call per message.
                    time.sleep(0.005)
        return fut

    def close(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries (up to ``timeout_s``); return how many are still queued.

        The poll thread stops first, so delivery reports keep running on one thread only."""
        self._stop.set()
        self._thread.join(timeout=2)
        for old in self._retired:
            old.flush(0)
        left = int(self._producer.flush(timeout_s))
        if left:
            log.error("%d message(s) still undelivered at shutdown", left)
        return left


def produce_blocking(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | None = None,
    *,
    serve_callbacks: bool = True,
    wait_s: float = 0.05,
    **kwargs: Any,
) -> None:
    """``producer.produce(topic, value, key, **kwargs)``, waiting while the local queue is full.

    librdkafka raises BufferError when its queue holds ``queue.buffering.max.messages``; waiting
    until it drains is the backpressure that keeps memory bounded. By default the wait is
    ``producer.poll(wait_s)``, which also serves delivery callbacks (the queue drains only as
    reports are served). A producer whose callbacks run on its own poll thread must not be
    polled from the caller's thread: ``serve_callbacks=False`` sleeps ``wait_s`` instead."""
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            return
        except BufferError:
            if serve_callbacks:
                producer.poll(wait_s)
            else:
                time.sleep(wait_s)

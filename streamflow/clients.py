"""Kafka client configuration and the batch producer every stage sends through.

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
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Producer

from streamflow.errors import DeliveryError
from streamflow.settings import Settings

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class OutMessage:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers | None = None
    partition: int = -1  # -1: the default partitioner (by key)


def producer_config(settings: Settings, bootstrap: str, **extra: Any) -> dict[str, Any]:
    k = settings.kafka
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "linger.ms": k.linger_ms,
        "enable.idempotence": True,
        "acks": "all",
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 200_000,
        "queue.buffering.max.kbytes": 262_144,
        "message.max.bytes": max(k.max_message_bytes, 1_000_000) + 65_536,
        "socket.connection.setup.timeout.ms": int(k.connect_timeout_s * 1000),
        "partitioner": "murmur2_random",  # the Java client's partitioner: same key -> same partition as other clients
        "log_level": 3,
        "logger": logging.getLogger("streamflow.librdkafka.producer"),
    }
    conf.update(extra)
    return conf


class BatchProducer:
    """Produces batches of messages; ``send()`` returns a future for the whole batch's delivery."""

    def __init__(self, conf: dict[str, Any], *, on_delivered: Any = None) -> None:
        self._producer = Producer(conf)
        self._on_delivered = on_delivered  # callable(topic, n_ok, n_failed), called on the loop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="streamflow-producer-poll", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def send(self, messages: Sequence[OutMessage], loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """Queue every message; the future resolves once all are acknowledged, or fails with DeliveryError."""
        fut: asyncio.Future[None] = loop.create_future()
        if not messages:
            fut.set_result(None)
            return fut
        # Delivery reports run on the poll thread only (never flush() or poll() on the caller's
        # thread while messages are out), so this countdown needs no lock.
        pending = [len(messages)]
        errors: list[tuple[str, str]] = []
        per_topic: dict[str, int] = {}
        for m in messages:
            per_topic[m.topic] = per_topic.get(m.topic, 0) + 1

        def settle() -> None:
            if self._on_delivered is not None:
                failed: dict[str, int] = {}
                for topic, _ in errors:
                    failed[topic] = failed.get(topic, 0) + 1
                for topic, n in per_topic.items():
                    self._on_delivered(topic, n - failed.get(topic, 0), failed.get(topic, 0))
            if fut.done():
                return
            if errors:
                fut.set_exception(DeliveryError(f"{len(errors)} message(s) not delivered: "
                                                f"{errors[0][0]}: {errors[0][1]}", retriable=False))
            else:
                fut.set_result(None)

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append((msg.topic(), err.str()))
            pending[0] -= 1
            if not pending[0]:
                loop.call_soon_threadsafe(settle)

        produce = self._producer.produce
        for m in messages:
            while True:
                try:
                    if m.partition >= 0:
                        produce(m.topic, m.value, m.key, partition=m.partition, headers=m.headers,  # type: ignore[arg-type]
                                on_delivery=on_delivery)
                    else:
                        produce(m.topic, m.value, m.key, headers=m.headers, on_delivery=on_delivery)  # type: ignore[arg-type]
                    break
                except BufferError:
                    # Local queue full: the broker is slower than we produce. Waiting here (the
                    # poll thread drains the queue) is the backpressure that keeps memory bounded.
                    time.sleep(0.005)
        return fut

    def close(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries (up to ``timeout_s``); return how many are still queued.

        The poll thread stops first, so delivery reports keep running on one thread only."""
        self._stop.set()
        self._thread.join(timeout=2)
        left = int(self._producer.flush(timeout_s))
        if left:
            log.error("%d message(s) still undelivered at shutdown", left)
        return left

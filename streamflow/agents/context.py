"""What every step's handler shares: its settings, instruments and producer, delivery and
bookkeeping."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import KafkaError

from streamflow.codecs import decode_record_batch, encode_record_batches, record_batch_length
from streamflow.errors import DecodeError, QueueFull
from streamflow.headers import INTERNAL_MESSAGE_BYTES, dead_letter, undeliverable_dead_letter
from streamflow.kafka.delivery import Backoff, deliver
from streamflow.kafka.producer import BatchProducer
from streamflow.kafka.transport import Chunk
from streamflow.metrics import Metrics
from streamflow.records import (
    OutMessage,
    Reason,
    ReasonCode,
    RecordBatch,
    Rejected,
    rejected_from_batch,
)
from streamflow.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    """One stage's settings, instruments and producer."""

    settings: Settings
    stage: str
    metrics: Metrics
    producer: BatchProducer
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    last_timestamps_ms: dict[tuple[str, int], int] = field(
        default_factory=dict
    )  # of the last record processed
    _own: tuple[Any, ...] | None = field(default=None, repr=False)  # account()'s instruments

    @property
    def pipeline(self) -> str:
        return self.settings.name

    def batch_messages(self, topic: str, batch: RecordBatch) -> list[OutMessage]:
        """``batch`` as internal-topic messages, each under ``INTERNAL_MESSAGE_BYTES``, on the
        internal partition that matches its source partition (so per-partition order holds)."""
        partition = batch.source_partition % self.settings.internal_partitions
        return [
            OutMessage(topic, data, partition=partition)
            for data in encode_record_batches(batch, INTERNAL_MESSAGE_BYTES)
        ]

    def send(self, messages: Sequence[OutMessage]) -> asyncio.Future[None]:
        """Queue every message; the future resolves once the broker has acknowledged them all
        (retrying while it cannot, dead-lettering results it refuses: kafka/delivery.py)."""
        k = self.settings.kafka
        task = asyncio.ensure_future(
            deliver(
                self.producer,
                messages,
                backoff=Backoff(k.retry_backoff_s, k.retry_backoff_max_s),
                dead_letter_for=self.undeliverable,
                on_retry=self.retried,
            )
        )
        # The acker reports the first failure; later ones (the stage is stopping) say nothing new.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    def undeliverable(self, m: OutMessage, err: KafkaError) -> OutMessage | None:
        """A result the sink topic refuses, as a dead letter (its source coordinates kept). Internal
        batches and dead letters have nowhere else to go: None."""
        t = self.settings.topics
        if m.topic != t.scored:
            return None
        reason = Reason(ReasonCode.UNDELIVERABLE, f"{t.scored} refused the result: {err.str()}")
        self.metrics.dead_letters.labels(self.pipeline, "deliver", reason.code).inc()
        return undeliverable_dead_letter(m, reason, t.dlq)

    def retried(self, topic: str, err: KafkaError, n: int) -> None:
        self.metrics.delivery_retries.labels(
            self.pipeline, topic, err.name().strip("_").lower()
        ).inc(n)

    def shed(self, chunks: Sequence[Any], *, raw: bool) -> asyncio.Future[None]:
        """Dead-letter every record of ``chunks``, which arrived while the stage's queue was full
        (``batching.queue_policy = "reject"``); ``raw``: they are raw messages, else internal
        batches."""
        started = time.perf_counter()
        b = self.settings.batching
        reason = Reason(
            ReasonCode.QUEUE_FULL,
            f"queue full: {self.stage} already had "
            f"{b.max_queue_records or 2 * b.max_batch} records waiting "
            f"(batching.queue_policy = reject)",
        )
        rejected: list[Rejected] = []
        out: list[OutMessage] = []
        if raw:
            rejected = [
                Rejected(
                    self.stage,
                    QueueFull.__name__,
                    reason.text,
                    c.topic,
                    c.partition,
                    int(r.offset),
                    r.key,
                    r.value,
                    int(r.timestamp),
                    code=reason.code,
                )
                for c in chunks
                for r in c.records
            ]
        else:
            batches, out = decode_batches(chunks, self.stage, self.settings.topics.dlq)
            for batch in batches:
                rejected += rejected_from_batch(
                    batch,
                    np.arange(len(batch)),
                    [reason] * len(batch),
                    stage=self.stage,
                    error_class=QueueFull.__name__,
                )
        out += [dead_letter(r, self.settings.topics.dlq) for r in rejected]
        self.account(0, rejected, started, len(rejected))
        return self.send(out)

    def account(
        self, n_ok: int, rejected: Sequence[Rejected], started: float, batch_records: int
    ) -> None:
        m, p, s = self.metrics, self.pipeline, self.stage
        mine = self._own
        if mine is None:  # this stage's instruments, labelled once (labels() costs ~2.5 µs)
            mine = self._own = (
                m.records.labels(p, s, "ok"),
                m.records.labels(p, s, "rejected"),
                m.batch_records.labels(p, s),
                m.stage_seconds.labels(p, s),
            )
        ok, refused, batch_size, seconds = mine
        ok.inc(n_ok)
        if rejected:
            refused.inc(len(rejected))
            for (stage, code), n in Tally((r.stage, r.code) for r in rejected).items():
                m.dead_letters.labels(p, stage, code).inc(n)
        batch_size.observe(batch_records)
        seconds.observe(time.perf_counter() - started)

    def processed(
        self, topic: str, partition: int, last_offset: int, last_timestamp_ms: int | None = None
    ) -> None:
        key = (topic, partition)
        self.next_offsets[key] = max(self.next_offsets.get(key, 0), last_offset + 1)
        if last_timestamp_ms is not None:
            self.last_timestamps_ms[key] = last_timestamp_ms


def decode_batches(
    chunks: Sequence[Chunk], stage: str, dlq_topic: str
) -> tuple[list[RecordBatch], list[OutMessage]]:
    """Decode internal batch messages; a corrupt one is dead-lettered whole (it names no record)."""
    batches, bad = [], []
    for m in (r for c in chunks for r in c.records):
        try:
            batches.append(decode_record_batch(m.value))
        except DecodeError as exc:  # its code: ReasonCode.CORRUPT_BATCH (codecs/batches.py)
            bad.append(
                dead_letter(
                    Rejected(
                        stage,
                        DecodeError.__name__,
                        f"internal batch undecodable: {exc.reason}",
                        m.topic,
                        m.partition,
                        m.offset,
                        m.key,
                        m.value,
                        code=exc.code,
                    ),
                    dlq_topic,
                )
            )
    return batches, bad


def batch_weight(record: Any) -> int:
    """Records in an internal batch message, read from its header without decoding it."""
    try:
        return max(1, record_batch_length(record.value))
    except DecodeError:
        return 1

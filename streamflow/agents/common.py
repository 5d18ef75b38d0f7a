"""What every stage's agent shares: dead letters, result headers, delivery and bookkeeping."""

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

from streamflow.agents.delivery import Backoff, deliver
from streamflow.clients import BatchProducer, OutMessage
from streamflow.codecs import encode_record_batches
from streamflow.metrics import Metrics
from streamflow.records import RecordBatch, Rejected, reason_code, rejected_from_batch
from streamflow.settings import Settings

log = logging.getLogger(__name__)

# Headers on results and dead letters. Source coordinates let consumers de-duplicate.
H_SOURCE_TOPIC = "sf-source-topic"
H_SOURCE_PARTITION = "sf-source-partition"
H_SOURCE_OFFSET = "sf-source-offset"
H_INGEST_MS = "sf-ingest-ms"
H_STAGE = "sf-stage"
H_ERROR_CLASS = "sf-error-class"
H_REASON = "sf-reason"
H_REASON_CODE = "sf-reason-code"
H_MODEL = "sf-model"
H_MODEL_VERSION = "sf-model-version"
H_TRUNCATED = "sf-truncated"  # a dead letter too large to send whole: the original sizes
H_REPLAYED = "sf-replayed"  # times `streamflow dlq replay` sent the record back to the raw topic

# Internal-topic messages stay under this size: Kafka brokers refuse messages over 1 MiB by default.
INTERNAL_MESSAGE_BYTES = 900_000


def source_headers(topic: str, partition: int, offset: int, ingest_ms: int) -> list[tuple[str, bytes]]:
    return batch_source_headers(topic, partition, (offset,), (ingest_ms,))[0]


def batch_source_headers(topic: str, partition: int, offsets: Sequence[int], ingest_ms: Sequence[int],
                         extra: Sequence[tuple[str, bytes]] = ()) -> list[list[tuple[str, bytes]]]:
    """``source_headers`` for many records of one partition (+ ``extra``), sharing the constant
    header tuples: building them is a third of the cost of producing a result."""
    t, p = (H_SOURCE_TOPIC, topic.encode()), (H_SOURCE_PARTITION, b"%d" % partition)
    return [[t, p, (H_SOURCE_OFFSET, b"%d" % off), (H_INGEST_MS, b"%d" % ing), *extra]
            for off, ing in zip(offsets, ingest_ms, strict=True)]


def dead_letter(r: Rejected, dlq_topic: str) -> OutMessage:
    """The dead-letter message: the original key and bytes, and why, in headers."""
    headers = source_headers(r.source_topic, r.source_partition, r.source_offset, r.ingest_ms)
    headers += [
        (H_STAGE, r.stage.encode()),
        (H_ERROR_CLASS, r.error_class.encode()),
        (H_REASON, r.reason.encode("utf-8", "replace")[:1024]),
        (H_REASON_CODE, reason_code(r.reason).encode()),
        *r.headers,
    ]
    return OutMessage(dlq_topic, r.value if r.value is not None else b"", r.key, headers)


@dataclass
class PaddingTally:
    """Tokens fed to a text model since the stage started, for ``streamflow_padding_waste_ratio``."""

    tokens: int = 0  # real tokens
    fed: int = 0  # with padding, as fed (bucketed)
    fed_unbucketed: int = 0  # with padding, had each batch been padded whole

    def add(self, ctx: StageContext, tokens: int, fed: int, fed_unbucketed: int) -> None:
        self.tokens, self.fed, self.fed_unbucketed = self.tokens + tokens, self.fed + fed, \
            self.fed_unbucketed + fed_unbucketed
        g = ctx.metrics.padding_waste
        if self.fed:
            g.labels(ctx.pipeline, ctx.stage, "bucketed").set(1.0 - self.tokens / self.fed)
        if self.fed_unbucketed:
            g.labels(ctx.pipeline, ctx.stage, "unbucketed").set(1.0 - self.tokens / self.fed_unbucketed)


@dataclass
class StageContext:
    """One stage's settings, instruments and producer."""

    settings: Settings
    stage: str
    metrics: Metrics
    producer: BatchProducer
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    last_timestamps_ms: dict[tuple[str, int], int] = field(default_factory=dict)  # of the last record processed

    @property
    def pipeline(self) -> str:
        return self.settings.name

    def batch_messages(self, topic: str, batch: RecordBatch) -> list[OutMessage]:
        """``batch`` as internal-topic messages, each under ``INTERNAL_MESSAGE_BYTES``, on the
        internal partition that matches its source partition (so per-partition order holds)."""
        partition = batch.source_partition % self.settings.internal_partitions
        return [OutMessage(topic, data, partition=partition)
                for data in encode_record_batches(batch, INTERNAL_MESSAGE_BYTES)]

    def send(self, messages: Sequence[OutMessage]) -> asyncio.Future[None]:
        """Queue every message; the future resolves once the broker has acknowledged them all
        (retrying while it cannot, dead-lettering results it refuses: agents/delivery.py)."""
        k = self.settings.kafka
        task = asyncio.ensure_future(deliver(
            self.producer, messages, backoff=Backoff(k.retry_backoff_s, k.retry_backoff_max_s),
            dead_letter_for=self.undeliverable, on_retry=self.retried))
        # The acker reports the first failure; later ones (the stage is stopping) say nothing new.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    def undeliverable(self, m: OutMessage, err: KafkaError) -> OutMessage | None:
        """A result the sink topic refuses, as a dead letter (its source coordinates kept). Internal
        batches and dead letters have nowhere else to go: None."""
        t = self.settings.topics
        if m.topic != t.scored:
            return None
        reason = f"{t.scored} refused the result: {err.str()}"
        headers = [h for h in m.headers or () if h[0] in (H_SOURCE_TOPIC, H_SOURCE_PARTITION, H_SOURCE_OFFSET,
                                                           H_INGEST_MS)]
        headers += [(H_STAGE, b"deliver"), (H_ERROR_CLASS, b"DeliveryError"), (H_REASON, reason.encode()[:1024]),
                    (H_REASON_CODE, reason_code(reason).encode())]
        self.metrics.dead_letters.labels(self.pipeline, "deliver", reason_code(reason)).inc()
        return OutMessage(t.dlq, m.value, m.key, headers)

    def retried(self, topic: str, err: KafkaError, n: int) -> None:
        self.metrics.delivery_retries.labels(self.pipeline, topic, err.name().strip("_").lower()).inc(n)

    def shed(self, chunks: Sequence[Any], *, raw: bool) -> asyncio.Future[None]:
        """Dead-letter every record of ``chunks``, which arrived while the stage's queue was full
        (``batching.queue_policy = "reject"``); ``raw``: they are raw messages, else internal batches."""
        started = time.perf_counter()
        b = self.settings.batching
        reason = (f"queue full: {self.stage} already had {b.max_queue_records or 2 * b.max_batch} records waiting "
                  f"(batching.queue_policy = reject)")
        rejected: list[Rejected] = []
        out: list[OutMessage] = []
        if raw:
            rejected = [Rejected(self.stage, "QueueFull", reason, c.topic, c.partition, int(r.offset), r.key, r.value,
                                 int(r.timestamp)) for c in chunks for r in c.records]
        else:
            from streamflow.agents.normalize import decode_batches

            batches, out = decode_batches(chunks, self.stage, self.settings.topics.dlq)
            for batch in batches:
                rejected += rejected_from_batch(batch, np.arange(len(batch)), [reason] * len(batch),
                                                stage=self.stage, error_class="QueueFull")
        out += [dead_letter(r, self.settings.topics.dlq) for r in rejected]
        self.account(0, rejected, started, len(rejected))
        return self.send(out)

    def account(self, n_ok: int, rejected: Sequence[Rejected], started: float, batch_records: int) -> None:
        m, p, s = self.metrics, self.pipeline, self.stage
        m.records.labels(p, s, "ok").inc(n_ok)
        if rejected:
            m.records.labels(p, s, "rejected").inc(len(rejected))
            for (stage, code), n in Tally((r.stage, reason_code(r.reason)) for r in rejected).items():
                m.dead_letters.labels(p, stage, code).inc(n)
        m.batch_records.labels(p, s).observe(batch_records)
        m.stage_seconds.labels(p, s).observe(time.perf_counter() - started)

    def processed(self, topic: str, partition: int, last_offset: int, last_timestamp_ms: int | None = None) -> None:
        key = (topic, partition)
        self.next_offsets[key] = max(self.next_offsets.get(key, 0), last_offset + 1)
        if last_timestamp_ms is not None:
            self.last_timestamps_ms[key] = last_timestamp_ms

"""Typed, columnar batches of records passed between stages.

A batch always comes from ONE source partition (``source_topic``/``source_partition``),
so its offsets are ordered and a dead letter or result can name its exact origin.
Every batch carries the original message bytes, so any stage can dead-letter a record
with what the user produced, not with a re-encoding of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class BytesColumn:
    """A column of optional byte strings stored as one buffer plus offsets (Arrow-style).

    ``ends[i]`` is the end of item i in ``data``; ``null[i]`` marks a missing item (a
    record without a key, say).
    """

    data: bytes
    ends: np.ndarray  # int64[n]
    null: np.ndarray  # bool[n]

    @classmethod
    def from_list(cls, items: Sequence[bytes | None]) -> BytesColumn:
        null = np.fromiter((i is None for i in items), dtype=bool, count=len(items))
        parts = [b"" if i is None else i for i in items]
        ends = np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)))
        return cls(b"".join(parts), ends, null)

    def __len__(self) -> int:
        return len(self.ends)

    def to_list(self) -> list[bytes | None]:
        out: list[bytes | None] = []
        start = 0
        data, null = self.data, self.null.tolist()
        for i, end in enumerate(self.ends.tolist()):
            out.append(None if null[i] else data[start:end])
            start = end
        return out

    def take(self, index: np.ndarray) -> BytesColumn:
        items = self.to_list()
        return BytesColumn.from_list([items[i] for i in np.asarray(index).tolist()])


def _strings(items: Iterable[str]) -> BytesColumn:
    return BytesColumn.from_list([s.encode() for s in items])


@dataclass(frozen=True)
class RecordBatch:
    """Records from one source partition, as columns.

    ``features`` is float32[n, F] in the order of the pipeline's feature list: raw but
    validated values after the clean stage, model-ready values after normalize. In a text
    pipeline the clean stage's batch carries ``texts`` (utf-8) and no features; after normalize
    ``features`` holds the token ids padded with ``extra["pad_id"]`` (float32 is exact below 2^24).
    """

    source_topic: str
    source_partition: int
    offsets: np.ndarray  # int64[n]: offsets in the source (raw) topic
    ingest_ms: np.ndarray  # int64[n]: Kafka timestamp of the raw message
    keys: BytesColumn
    values: BytesColumn  # original raw message bytes
    device_ids: BytesColumn  # utf-8
    event_ms: np.ndarray  # int64[n]: the record's own timestamp field
    features: np.ndarray  # float32[n, F]
    stage: str = "clean"  # which stage produced it: clean | normalize
    extra: dict[str, str] = field(default_factory=dict)
    texts: BytesColumn | None = None  # text pipelines, between clean and normalize

    def __len__(self) -> int:
        return len(self.offsets)

    def select(self, index: np.ndarray) -> RecordBatch:
        """The rows at ``index`` (integer positions or a boolean mask)."""
        idx = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)
        return replace(
            self,
            offsets=self.offsets[idx],
            ingest_ms=self.ingest_ms[idx],
            keys=self.keys.take(idx),
            values=self.values.take(idx),
            device_ids=self.device_ids.take(idx),
            event_ms=self.event_ms[idx],
            features=self.features[idx],
            texts=None if self.texts is None else self.texts.take(idx),
        )

    def device_id_list(self) -> list[str]:
        return [b.decode() if b is not None else "" for b in self.device_ids.to_list()]


Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class OutMessage:
    """A message to produce: the one shape every stage hands to the producer."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers | None = None
    partition: int = -1  # -1: the default partitioner (by key)


@dataclass(frozen=True)
class RawMessage:
    """One message as consumed from a user-facing topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Rejected:
    """A record a stage refused: dead-letter it with its original bytes and the reason."""

    stage: str
    error_class: str
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes | None
    ingest_ms: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()  # more dead-letter headers (say, sf-truncated)


def rejected_from_batch(
    batch: RecordBatch, rows: np.ndarray, reasons: Sequence[str], *, stage: str, error_class: str
) -> list[Rejected]:
    """Dead-letter entries for ``rows`` of ``batch`` with one reason per row."""
    keys, values = batch.keys.to_list(), batch.values.to_list()
    out = []
    for row, reason in zip(np.asarray(rows).tolist(), reasons, strict=True):
        out.append(
            Rejected(
                stage=stage,
                error_class=error_class,
                reason=reason,
                source_topic=batch.source_topic,
                source_partition=batch.source_partition,
                source_offset=int(batch.offsets[row]),
                key=keys[row],
                value=values[row],
                ingest_ms=int(batch.ingest_ms[row]),
            )
        )
    return out


# Reason codes: a small fixed set, used as a metric label and a dead-letter header.
# The full reason (with the field and value) goes in the sf-reason header.
_REASON_CODES = (
    ("missing required field", "missing_required"),
    ("non-finite value", "non_finite"),
    ("expected an integer, got", "not_integer"),  # the clean stage; JSON's "(epoch ms)" is wrong_type
    ("out of range", "out_of_range"),
    ("cannot be normalized", "not_normalizable"),
    ("empty message", "empty"),
    ("empty text", "empty"),
    ("exceeds max_", "too_large"),  # max_message_bytes, max_string_length, max_array_length
    ("registry:", "unknown_schema"),
    ("json: invalid JSON", "invalid_json"),
    ("json: missing field", "missing_field"),
    ("not utf-8", "invalid_utf8"),  # before "expected": "(unexpected end of data)"
    ("not valid unicode", "invalid_utf8"),
    ("expected", "wrong_type"),
    ("json:", "invalid_json"),
    ("avro:", "invalid_avro"),
    ("model", "model_error"),
    ("internal batch", "corrupt_batch"),
    ("refused the result", "undeliverable"),
    ("queue full", "queue_full"),  # batching.queue_policy = "reject" shed it  # the sink topic refused it (agents/delivery.py)
)
REASON_CODES = tuple(sorted({code for _, code in _REASON_CODES} | {"other"}))


def reason_code(reason: str) -> str:
    """The low-cardinality code for a rejection reason (see REASON_CODES)."""
    for needle, code in _REASON_CODES:
        if needle in reason:
            return code
    return "other"

"""Typed, columnar batches of records passed between stages.

A batch always comes from ONE source partition (``source_topic``/``source_partition``),
so its offsets are ordered and a dead letter or result can name its exact origin.
Every batch carries the original message bytes, so any stage can dead-letter a record
with what the user produced, not with a re-encoding of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

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
    # Named columns beside the features, one value per row: the input fields a result passes
    # through ([result] pass_through), as numpy arrays (object arrays hold str, int, bool, None).
    columns: dict[str, np.ndarray] = field(default_factory=dict)

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
            columns={k: v[idx] for k, v in self.columns.items()},
        )

    def device_id_list(self) -> list[str]:
        return [b.decode() if b is not None else "" for b in self.device_ids.to_list()]


Headers = list[tuple[str, bytes]]


@dataclass(slots=True)
class OutMessage:
    """A message to produce: the one shape every stage hands to the producer. Not frozen: one
    is made per result, and a frozen dataclass costs 3x as much to build (0.51 vs 0.17 µs)."""

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


class ReasonCode(StrEnum):
    """Why a record was dead-lettered, as one of a small fixed set: the ``sf-reason-code`` header
    and the ``reason`` label of ``streamflow_dead_letters_total``. The full reason (with the
    field and the value) goes in the ``sf-reason`` header.

    The code is chosen where the record is refused, never read back from the reason's text:
    a decoder raises ``DecodeError(reason, code)``, a stage returns a code per rejected row
    beside its reason. Users filter on these values (``streamflow dlq --reason``): they do not
    change.
    """

    MISSING_REQUIRED = "missing_required"  # clean: a required feature (or the text) is absent
    NON_FINITE = "non_finite"  # clean: NaN or infinite
    NOT_INTEGER = "not_integer"  # clean: an int feature with a fraction
    OUT_OF_RANGE = "out_of_range"  # clean: outside [min, max] with out_of_range = "reject"
    UNKNOWN_CATEGORY = "unknown_category"  # clean: a category outside its vocabulary ("reject")
    NOT_NORMALIZABLE = "not_normalizable"  # normalize: the scaled value is not finite
    EMPTY = "empty"  # an empty message, or an empty text
    TOO_LARGE = "too_large"  # over a [limits] value: max_message_bytes, max_string_length, ...
    UNKNOWN_SCHEMA = "unknown_schema"  # not the wire format, or a schema id the registry lacks
    INVALID_JSON = "invalid_json"  # not JSON, or JSON that is no record
    MISSING_FIELD = "missing_field"  # the key or timestamp field is absent
    INVALID_UTF8 = "invalid_utf8"  # a string that is not UTF-8 (or not valid unicode)
    WRONG_TYPE = "wrong_type"  # a field of the wrong type
    INVALID_AVRO = "invalid_avro"  # bytes that are no Avro record of the schema
    MODEL_ERROR = "model_error"  # the model failed on the row or scored it non-finite
    CORRUPT_BATCH = "corrupt_batch"  # an internal batch message that does not decode
    UNDELIVERABLE = "undeliverable"  # the sink topic refused the result
    QUEUE_FULL = "queue_full"  # shed: batching.queue_policy = "reject" and the queue was full
    TRANSFORM_ERROR = "transform_error"  # a user transform raised or returned a wrong shape on it
    TRANSFORM_REJECTED = "transform_rejected"  # a user transform gave a reason to refuse it
    OTHER = "other"  # a decoder failure no check foresaw (a bug: it is logged)


REASON_CODES: tuple[str, ...] = tuple(sorted(c.value for c in ReasonCode))


@dataclass(frozen=True)
class Reason:
    """Why one record was refused: its code and the human text (the ``sf-reason`` header)."""

    code: ReasonCode
    text: str


def paired(texts: Sequence[str | None], codes: Sequence[ReasonCode | None]) -> list[Reason | None]:
    """A stage's parallel per-row lists (reason text, code; both None where the row passed) as
    one ``Reason | None`` per row."""
    out: list[Reason | None] = []
    for text, code in zip(texts, codes, strict=True):
        if text is None:
            out.append(None)
            continue
        assert code is not None, f"a reason without a code: {text!r}"
        out.append(Reason(code, text))
    return out


@dataclass(frozen=True)
class Rejected:
    """A record a stage refused: dead-letter it with its original bytes and the reason.

    ``error_class`` names a class in ``streamflow.errors`` (the ``sf-error-class`` header);
    ``code`` is the reason's ``ReasonCode``, ``reason`` its human text."""

    stage: str
    error_class: str
    reason: str
    code: ReasonCode = field(kw_only=True)  # keyword-only: Rejected(..., code=ReasonCode.EMPTY)
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes | None
    ingest_ms: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()  # more dead-letter headers (say, sf-truncated)


def rejected_from_batch(
    batch: RecordBatch, rows: np.ndarray, reasons: Sequence[Reason], *, stage: str, error_class: str
) -> list[Rejected]:
    """Dead-letter entries for ``rows`` of ``batch`` with one reason (and its code) per row."""
    keys, values = batch.keys.to_list(), batch.values.to_list()
    out = []
    for row, reason in zip(np.asarray(rows).tolist(), reasons, strict=True):
        out.append(
            Rejected(
                stage=stage,
                error_class=error_class,
                reason=reason.text,
                code=reason.code,
                source_topic=batch.source_topic,
                source_partition=batch.source_partition,
                source_offset=int(batch.offsets[row]),
                key=keys[row],
                value=values[row],
                ingest_ms=int(batch.ingest_ms[row]),
            )
        )
    return out

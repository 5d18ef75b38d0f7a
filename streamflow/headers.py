"""The ``sf-*`` headers: the wire contract of results and dead letters, and the dead-letter builder.

Every result and dead letter names the input record it came from (source topic, partition,
offset, and the raw message's timestamp), so any consumer can de-duplicate after a restart
(``streamflow.dedupe``). A dead letter also says which stage refused the record, the error
class, the human reason and its low-cardinality code. Users read these names
(docs/guarantees.md): they do not change.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamflow.errors import DeliveryError
from streamflow.records import OutMessage, Reason, Rejected

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


def source_headers(
    topic: str, partition: int, offset: int, ingest_ms: int
) -> list[tuple[str, bytes]]:
    return batch_source_headers(topic, partition, (offset,), (ingest_ms,))[0]


def batch_source_headers(
    topic: str,
    partition: int,
    offsets: Sequence[int],
    ingest_ms: Sequence[int],
    extra: Sequence[tuple[str, bytes]] = (),
) -> list[list[tuple[str, bytes]]]:
    """``source_headers`` for many records of one partition (+ ``extra``), sharing the constant
    header tuples: building them is a third of the cost of producing a result."""
    t, p = (H_SOURCE_TOPIC, topic.encode()), (H_SOURCE_PARTITION, b"%d" % partition)
    return [
        [t, p, (H_SOURCE_OFFSET, b"%d" % off), (H_INGEST_MS, b"%d" % ing), *extra]
        for off, ing in zip(offsets, ingest_ms, strict=True)
    ]


def dead_letter(r: Rejected, dlq_topic: str) -> OutMessage:
    """The dead-letter message: the original key and bytes, and why, in headers."""
    headers = source_headers(r.source_topic, r.source_partition, r.source_offset, r.ingest_ms)
    headers += [
        (H_STAGE, r.stage.encode()),
        (H_ERROR_CLASS, r.error_class.encode()),
        (H_REASON, r.reason.encode("utf-8", "replace")[:1024]),
        (H_REASON_CODE, r.code.encode()),
        *r.headers,
    ]
    return OutMessage(dlq_topic, r.value if r.value is not None else b"", r.key, headers)


def undeliverable_dead_letter(m: OutMessage, reason: Reason, dlq_topic: str) -> OutMessage:
    """A result the sink topic refused, as a dead letter: its bytes, its source coordinates, why
    (``reason``: ``ReasonCode.UNDELIVERABLE`` and the broker's error)."""
    keep = (H_SOURCE_TOPIC, H_SOURCE_PARTITION, H_SOURCE_OFFSET, H_INGEST_MS)
    headers = [h for h in m.headers or () if h[0] in keep]
    headers += [
        (H_STAGE, b"deliver"),
        (H_ERROR_CLASS, DeliveryError.__name__.encode()),
        (H_REASON, reason.text.encode()[:1024]),
        (H_REASON_CODE, reason.code.encode()),
    ]
    return OutMessage(dlq_topic, m.value, m.key, headers)

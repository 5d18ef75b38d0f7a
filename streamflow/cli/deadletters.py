"""The dead-letter topic read back: its messages with their ``sf-*`` headers decoded.

What ``streamflow dlq inspect`` and ``streamflow dlq replay`` work on (see ``streamflow.cli.dlq``).
The topic is read with the pipeline's Kafka settings (``streamflow.kafka.config``: TLS, SASL),
like every other client, to its end as the broker reports it, then until nothing more arrives
for a moment: the embedded broker reports the end of a partition too early (see FIELD_NOTES),
so the end offset alone is not trusted.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streamflow.errors import ConfigError
from streamflow.headers import (
    H_ERROR_CLASS,
    H_REASON,
    H_REASON_CODE,
    H_REPLAYED,
    H_SOURCE_OFFSET,
    H_SOURCE_PARTITION,
    H_SOURCE_TOPIC,
    H_STAGE,
    H_TRUNCATED,
)
from streamflow.kafka.config import consumer_config
from streamflow.settings import Settings

IDLE_AFTER_END_S = 0.5  # keep reading this long after every partition reported its end


@dataclass(frozen=True)
class DeadLetter:
    """One message of the dead-letter topic, its headers decoded."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    stage: str
    error_class: str
    reason: str
    reason_code: str
    source: str  # "topic/partition@offset" of the record in the raw topic
    replayed: int  # times the record was replayed before this dead letter
    truncated: str  # sf-truncated (the original sizes) when only the start of the record is kept

    @classmethod
    def from_message(cls, msg: Any) -> DeadLetter:
        """Decode a consumed message (missing headers: empty, "?" or "other")."""
        h: dict[str, bytes] = {}
        for k, v in msg.headers() or []:
            h[k] = v if isinstance(v, bytes) else b""

        def text(name: str) -> str:
            return h.get(name, b"").decode("utf-8", "replace")

        try:
            replayed = int(text(H_REPLAYED) or 0)
        except ValueError:
            replayed = 0
        return cls(
            partition=msg.partition(),
            offset=msg.offset(),
            timestamp_ms=msg.timestamp()[1],
            key=msg.key(),
            value=msg.value() or b"",
            stage=text(H_STAGE) or "?",
            error_class=text(H_ERROR_CLASS),
            reason=text(H_REASON) or "(no sf-reason header)",
            reason_code=text(H_REASON_CODE) or "other",
            source=f"{text(H_SOURCE_TOPIC)}/{text(H_SOURCE_PARTITION)}@{text(H_SOURCE_OFFSET)}",
            replayed=replayed,
            truncated=text(H_TRUNCATED),
        )

    @property
    def coordinates(self) -> str:
        """ "PARTITION:OFFSET" in the dead-letter topic (what ``--offsets`` takes)."""
        return f"{self.partition}:{self.offset}"

    def to_json(self, preview_bytes: int = 120) -> dict[str, Any]:
        """The dead letter as a JSON object, key and value previewed."""
        return {
            "dlq": self.coordinates,
            "timestamp_ms": self.timestamp_ms,
            "source": self.source,
            "stage": self.stage,
            "error_class": self.error_class,
            "reason": self.reason,
            "reason_code": self.reason_code,
            "replayed": self.replayed,
            "truncated": self.truncated or None,
            "key": preview(self.key, 60) if self.key is not None else None,
            "bytes": len(self.value),
            "value": preview(self.value, preview_bytes),
        }


def preview(data: bytes, limit: int) -> str:
    """The start of ``data`` as text when it is UTF-8 (control characters escaped), else as hex."""
    head = data[:limit]
    more = f"... ({len(data)} bytes)" if len(data) > limit else ""
    try:
        text = head.decode()
    except UnicodeDecodeError as exc:
        # hex unless the only problem is a character cut at the limit
        if exc.reason != "unexpected end of data" or len(data) <= limit:
            return "hex " + head.hex(" ") + more
        text = head[: exc.start].decode()
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text) + more  # "\n", "\x00"


def read_dead_letters(
    settings: Settings, bootstrap: str, *, since_ms: int | None = None, timeout_s: float = 10.0
) -> Iterator[DeadLetter]:
    """Every message of the dead-letter topic (from ``since_ms`` on), partition by partition in
    offset order; stops at the end of the topic, or after ``timeout_s`` without a message."""
    topic = settings.topics.dlq
    consumer = Consumer(
        consumer_config(settings, bootstrap, logger="streamflow.librdkafka.dlq")
        | {
            "group.id": f"streamflow-dlq-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=settings.kafka.connect_timeout_s).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            raise ConfigError(
                f"dead-letter topic {topic!r} does not exist at {bootstrap}", source=settings.source
            )
        parts = sorted(md.partitions)
        start = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts]
        if since_ms is not None:
            # Where the broker says messages from since_ms start; they are filtered by time too.
            try:
                found = consumer.offsets_for_times(
                    [TopicPartition(topic, p, since_ms) for p in parts],
                    timeout=settings.kafka.connect_timeout_s,
                )
                start = [
                    tp if tp.offset >= 0 else TopicPartition(topic, tp.partition, OFFSET_BEGINNING)
                    for tp in found
                ]
            except Exception:  # a broker without ListOffsets by time: read it all, filter by time
                pass
        consumer.assign(start)
        ended: set[int] = set()
        last = time.monotonic()
        while True:
            msgs = consumer.consume(1000, timeout=0.1)
            now = time.monotonic()
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ended.add(int(m.partition() or 0))
                        continue
                    raise ConfigError(f"reading {topic}: {err.str()}", source=settings.source)
                last = now
                d = DeadLetter.from_message(m)
                if since_ms is None or d.timestamp_ms >= since_ms:
                    yield d
            idle = now - last
            if (len(ended) == len(md.partitions) and idle > IDLE_AFTER_END_S) or idle > timeout_s:
                return
    finally:
        consumer.close()


@dataclass
class Summary:
    """Counts of dead letters by stage, by stage and reason code, and by reason."""

    topic: str
    total: int = 0
    replayed: int = 0
    truncated: int = 0
    first_ms: int = 0
    last_ms: int = 0

    def __post_init__(self) -> None:
        self.by_stage: Counter[str] = Counter()
        self.by_code: Counter[tuple[str, str]] = Counter()
        self.by_reason: Counter[tuple[str, str]] = Counter()
        self.example_of: dict[tuple[str, str], str] = {}

    def add(self, d: DeadLetter) -> None:
        """Count one dead letter."""
        self.total += 1
        self.replayed += d.replayed > 0
        self.truncated += bool(d.truncated)
        self.first_ms = min(self.first_ms or d.timestamp_ms, d.timestamp_ms)
        self.last_ms = max(self.last_ms, d.timestamp_ms)
        self.by_stage[d.stage] += 1
        self.by_code[(d.stage, d.reason_code)] += 1
        pattern = (d.stage, mask_numbers(d.reason))
        self.by_reason[pattern] += 1
        self.example_of.setdefault(pattern, d.reason)

    def to_json(self, top: int) -> dict[str, Any]:
        """The counts as a JSON object, the ``top`` most frequent reasons."""
        return {
            "topic": self.topic,
            "total": self.total,
            "first_ms": self.first_ms or None,
            "last_ms": self.last_ms or None,
            "replayed": self.replayed,
            "truncated": self.truncated,
            "by_stage": dict(self.by_stage.most_common()),
            "by_reason_code": [
                {"stage": s, "reason_code": c, "count": n}
                for (s, c), n in self.by_code.most_common()
            ],
            "by_reason": [
                {"stage": s, "reason": r, "count": n, "example": self.example_of[(s, r)]}
                for (s, r), n in self.by_reason.most_common(top)
            ],
        }


def mask_numbers(reason: str) -> str:
    """The reason with its numbers as "#": reasons that differ only in values count together."""
    return re.sub(r"-?\b\d+(\.\d+)?(e[+-]?\d+)?\b", "#", reason)

"""``streamflow dlq inspect`` and ``streamflow dlq replay``: the dead-letter topic, read back and sent again.

``inspect`` reads the dead-letter topic (from the beginning, or ``--since``), decodes the
``sf-*`` headers every stage writes, and counts dead letters by stage and reason code, and by
reason (numbers masked, so "power_w: value -50.0 out of range" and "... -7.5 ..." count
together); ``--show N`` prints examples with their source coordinates and a preview of the
original bytes.

``replay`` sends chosen dead letters (``--reason``, ``--stage``, ``--offsets``, ``--since``)
back to the raw topic with their original key and value and an ``sf-replayed`` header counting
the replays. The clean stage copies that header onto the record's next dead letter, so a record
that keeps failing is refused once it has been replayed ``--max-replays`` times. Dead letters
that hold only the start of their record (``sf-truncated``) are never replayed.

Both use the pipeline's Kafka settings (``clients.kafka_config`` / ``producer_config``: TLS,
SASL), like every other client. The topic is read to its end as the broker reports it, then
until nothing more arrives for a moment: the embedded broker reports the end of a partition
too early (see FIELD_NOTES), so the end offset alone is not trusted.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

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
from streamflow.kafka.config import kafka_config, producer_config
from streamflow.settings import Settings

IDLE_AFTER_END_S = 0.5  # keep reading this long after every partition reported its end
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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
        h: dict[str, bytes] = {}
        for k, v in msg.headers() or []:
            h[k] = v if isinstance(v, bytes) else b""

        def text(name: str) -> str:
            return h.get(name, b"").decode("utf-8", "replace")

        try:
            replayed = int(text(H_REPLAYED) or 0)
        except ValueError:
            replayed = 0
        return cls(partition=msg.partition(), offset=msg.offset(), timestamp_ms=msg.timestamp()[1],
                   key=msg.key(), value=msg.value() or b"", stage=text(H_STAGE) or "?",
                   error_class=text(H_ERROR_CLASS), reason=text(H_REASON) or "(no sf-reason header)",
                   reason_code=text(H_REASON_CODE) or "other",
                   source=f"{text(H_SOURCE_TOPIC)}/{text(H_SOURCE_PARTITION)}@{text(H_SOURCE_OFFSET)}",
                   replayed=replayed, truncated=text(H_TRUNCATED))

    @property
    def coordinates(self) -> str:
        return f"{self.partition}:{self.offset}"

    def to_json(self, preview_bytes: int = 120) -> dict[str, Any]:
        return {"dlq": self.coordinates, "timestamp_ms": self.timestamp_ms, "source": self.source,
                "stage": self.stage, "error_class": self.error_class, "reason": self.reason,
                "reason_code": self.reason_code, "replayed": self.replayed, "truncated": self.truncated or None,
                "key": preview(self.key, 60) if self.key is not None else None, "bytes": len(self.value),
                "value": preview(self.value, preview_bytes)}


def preview(data: bytes, limit: int) -> str:
    """The start of ``data`` as text when it is UTF-8 (control characters escaped), else as hex."""
    head = data[:limit]
    more = f"... ({len(data)} bytes)" if len(data) > limit else ""
    try:
        text = head.decode()
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data" or len(data) <= limit:  # not a character cut at the limit
            return "hex " + head.hex(" ") + more
        text = head[:exc.start].decode()
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text) + more  # "\n", "\x00"


def parse_since(text: str, now_ms: int | None = None) -> int:
    """``--since``: a duration back from now ("90s", "15m", "2h", "1d"), epoch milliseconds, or
    an ISO 8601 time ("2026-11-26T03:00:00Z"); the epoch ms it names."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if m:
        return now_ms - int(float(m.group(1)) * _UNITS[m.group(2)] * 1000)
    if text.strip().isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since {text!r}: expected a duration (15m, 2h, 1d), epoch ms or an ISO 8601 time",
                          source="command line") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def parse_offsets(text: str) -> dict[int, list[tuple[int, int]]]:
    """``--offsets 0:12,0:20-25,3:7``: dead-letter partition -> inclusive offset ranges."""
    out: dict[int, list[tuple[int, int]]] = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        m = re.fullmatch(r"(\d+):(\d+)(?:-(\d+))?", item)
        if not m:
            raise ConfigError(f"--offsets {item!r}: expected PARTITION:OFFSET or PARTITION:FIRST-LAST "
                              "(the dead-letter topic's, as `dlq inspect --show` prints them)", source="command line")
        lo = int(m.group(2))
        out.setdefault(int(m.group(1)), []).append((lo, int(m.group(3) or lo)))
    return out


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command works on."""

    reason: str = ""  # substring of sf-reason (or equal to sf-reason-code)
    stage: str = ""
    offsets: dict[int, list[tuple[int, int]]] | None = None
    since_ms: int | None = None

    def __call__(self, d: DeadLetter) -> bool:
        if self.since_ms is not None and d.timestamp_ms < self.since_ms:
            return False
        if self.stage and d.stage != self.stage:
            return False
        if self.reason and self.reason not in d.reason and self.reason != d.reason_code:
            return False
        if self.offsets is not None:
            return any(lo <= d.offset <= hi for lo, hi in self.offsets.get(d.partition, ()))
        return True


def read_dead_letters(settings: Settings, bootstrap: str, *, since_ms: int | None = None,
                      timeout_s: float = 10.0) -> Iterator[DeadLetter]:
    """Every message of the dead-letter topic (from ``since_ms`` on), partition by partition in
    offset order; stops at the end of the topic, or after ``timeout_s`` without a message."""
    topic = settings.topics.dlq
    consumer = Consumer(kafka_config(settings, bootstrap, logger="streamflow.librdkafka.dlq") | {
        "group.id": f"streamflow-dlq-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "enable.partition.eof": True, "fetch.wait.max.ms": 50})
    try:
        md = consumer.list_topics(topic, timeout=settings.kafka.connect_timeout_s).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            raise ConfigError(f"dead-letter topic {topic!r} does not exist at {bootstrap}", source=settings.source)
        start = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(md.partitions)]
        if since_ms is not None:
            try:  # where the broker says messages from since_ms start; they are filtered by time too
                found = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in sorted(md.partitions)],
                                                   timeout=settings.kafka.connect_timeout_s)
                start = [tp if tp.offset >= 0 else TopicPartition(topic, tp.partition, OFFSET_BEGINNING)
                         for tp in found]
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
        return {"topic": self.topic, "total": self.total, "first_ms": self.first_ms or None,
                "last_ms": self.last_ms or None, "replayed": self.replayed, "truncated": self.truncated,
                "by_stage": dict(self.by_stage.most_common()),
                "by_reason_code": [{"stage": s, "reason_code": c, "count": n} for (s, c), n in self.by_code.most_common()],
                "by_reason": [{"stage": s, "reason": r, "count": n, "example": self.example_of[(s, r)]}
                              for (s, r), n in self.by_reason.most_common(top)]}


def mask_numbers(reason: str) -> str:
    """The reason with its numbers as "#": reasons that differ only in values count together."""
    return re.sub(r"-?\b\d+(\.\d+)?(e[+-]?\d+)?\b", "#", reason)


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + "Z" if ms else "-"


def inspect(settings: Settings, bootstrap: str, *, selection: Selection, show: int = 0, as_json: bool = False,
            top: int = 20, timeout_s: float = 10.0, out: TextIO = sys.stdout) -> int:
    """``streamflow dlq inspect``: counts by stage and reason, and ``show`` examples."""
    summary = Summary(settings.topics.dlq)
    examples: list[DeadLetter] = []
    for d in read_dead_letters(settings, bootstrap, since_ms=selection.since_ms, timeout_s=timeout_s):
        if not selection(d):
            continue
        summary.add(d)
        if len(examples) < show:
            examples.append(d)
    if as_json:
        doc = summary.to_json(top)
        if show:
            doc["examples"] = [d.to_json() for d in examples]
        print(json.dumps(doc, ensure_ascii=False), file=out)
        return 0
    print(f"{summary.topic}: {summary.total} dead letter(s)"
          + (f", {_when(summary.first_ms)} .. {_when(summary.last_ms)}" if summary.total else ""), file=out)
    if not summary.total:
        return 0
    print("\nby stage and reason code:", file=out)
    for (stage, code), n in summary.by_code.most_common():
        print(f"  {n:8d}  {stage:10s} {code}", file=out)
    print(f"\nby reason (numbers as #; top {top}):", file=out)
    for (stage, reason), n in summary.by_reason.most_common(top):
        print(f"  {n:8d}  {stage:10s} {reason}", file=out)
    if summary.replayed or summary.truncated:
        print(f"\n{summary.replayed} replayed before (sf-replayed), {summary.truncated} truncated (sf-truncated: "
              "too large to keep whole, never replayed)", file=out)
    for d in examples:
        print(f"\n[dlq {d.coordinates}] {_when(d.timestamp_ms)}  source {d.source}  stage {d.stage} "
              f"({d.error_class})", file=out)
        print(f"  reason   {d.reason}", file=out)
        if d.replayed or d.truncated:
            print(f"  replayed {d.replayed}" + (f", truncated: {d.truncated}" if d.truncated else ""), file=out)
        print(f"  key      {preview(d.key, 60) if d.key is not None else '(none)'}", file=out)
        print(f"  value    {preview(d.value, 120)}", file=out)
    return 0


def replay(settings: Settings, bootstrap: str, *, selection: Selection, max_replays: int = 3, dry_run: bool = False,
           as_json: bool = False, timeout_s: float = 10.0, out: TextIO = sys.stdout) -> int:
    """``streamflow dlq replay``: send the selected dead letters back to the raw topic."""
    if max_replays < 0:
        raise ConfigError(f"--max-replays: must be >= 0, got {max_replays}", source="command line")
    raw = settings.topics.raw
    chosen: list[DeadLetter] = []
    skipped: Counter[str] = Counter()
    for d in read_dead_letters(settings, bootstrap, since_ms=selection.since_ms, timeout_s=timeout_s):
        if not selection(d):
            continue
        if d.truncated:
            skipped["truncated"] += 1
        elif d.replayed >= max_replays:
            skipped[f"already replayed {max_replays} time(s)"] += 1
        else:
            chosen.append(d)
    failed: list[str] = []
    if chosen and not dry_run:
        producer = Producer(producer_config(settings, bootstrap))

        def delivered(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                failed.append(err.str())

        for d in chosen:
            while True:
                try:
                    producer.produce(raw, d.value, d.key, headers=[(H_REPLAYED, b"%d" % (d.replayed + 1))],
                                     on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        left = producer.flush(60.0)
        failed += ["not acknowledged in time"] * left
    sent = 0 if dry_run else len(chosen) - len(failed)
    by_reason = Counter(mask_numbers(d.reason) for d in chosen)
    if as_json:
        print(json.dumps({"topic": raw, "dry_run": dry_run, "selected": len(chosen), "sent": sent,
                          "failed": len(failed), "skipped": dict(skipped), "by_reason": dict(by_reason.most_common()),
                          "dead_letters": [d.coordinates for d in chosen]}), file=out)
    else:
        verb = "would replay" if dry_run else "replayed"
        print(f"{verb} {len(chosen) if dry_run else sent} dead letter(s) to {raw}"
              + (f" ({len(failed)} failed: {failed[0]})" if failed else "")
              + "".join(f"; skipped {n}: {why}" for why, n in skipped.items()), file=out)
        for reason, n in by_reason.most_common(10):
            print(f"  {n:8d}  {reason}", file=out)
    return 1 if failed else 0

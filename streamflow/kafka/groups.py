"""Consumer groups as the broker reports them: state, members, and lag per partition.

Read-only (``streamflow status`` reads each step's group with it): an admin client for the
group descriptions, committed offsets and watermarks, and one assign-only consumer that reads
each partition's last batch for its end offset. Every client takes the pipeline's TLS/SASL
settings (``kafka/config.py``).

Two answers of the embedded broker (Tansu 0.6.0) differ from Kafka's, measured with
confluent-kafka 2.16.1 and handled here so that one code path serves both:

- ListOffsets "latest" (the high watermark) is the base offset of the partition's last batch
  + 1, not the offset after its last record (batches of 1, 1 and 5 records: 3, not 7), so a
  group that has read everything shows a committed offset above it. ``end_offsets`` reads the
  last batch itself, from the high watermark - 1, and takes the offset after its last record;
  on Kafka that is the high watermark itself.
- librdkafka describes groups with ConsumerGroupDescribe (KIP-848) first; Tansu answers it
  for a classic group with its state and no members (and a member id as the assignor). A
  group in a live state with no members is reported with ``members=None``, "not reported".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from streamflow.errors import BrokerUnavailable
from streamflow.kafka.admin import admin_client
from streamflow.kafka.config import AGENT_CONSUMER, consumer_config, mask
from streamflow.settings import Settings

STATES = {
    ConsumerGroupState.STABLE: "stable",
    ConsumerGroupState.EMPTY: "empty",
    ConsumerGroupState.DEAD: "dead",
    ConsumerGroupState.PREPARING_REBALANCING: "preparing_rebalance",
    ConsumerGroupState.COMPLETING_REBALANCING: "completing_rebalance",
    ConsumerGroupState.UNKNOWN: "unknown",
}
# States in which a Kafka group always has members: none reported means the broker left them out.
LIVE_STATES = frozenset({"stable", "preparing_rebalance", "completing_rebalance"})

TopicPart = tuple[str, int]


@dataclass(frozen=True)
class Member:
    """One consumer of a group, as the coordinator describes it."""

    member_id: str
    client_id: str
    host: str
    assignment: tuple[TopicPart, ...]  # (topic, partition), sorted


@dataclass(frozen=True)
class PartitionLag:
    """One partition a group consumes: where the group is, where the partition ends."""

    topic: str
    partition: int
    committed: int | None  # the next offset the group reads; None: it never committed one
    log_start: int  # the first offset still in the log
    end: int  # the offset after the partition's last record
    high_watermark: int  # ListOffsets "latest" as the broker answered (lower than end on Tansu)
    lag: int | None  # records between committed and end; None: unknown (no commit, starts late)


@dataclass(frozen=True)
class GroupStatus:
    """A consumer group and the partitions of the topics it reads."""

    group: str
    topics: tuple[str, ...]
    state: str  # stable, empty, dead, preparing_rebalance, completing_rebalance, unknown
    members: tuple[Member, ...] | None  # None: the broker did not report them
    partitions: tuple[PartitionLag, ...]
    missing_topics: tuple[str, ...] = ()  # topics the group reads that the broker does not have
    error: str = ""  # why the group could not be described ("" when it was)

    @property
    def lag(self) -> int:
        """Total lag over the partitions whose lag is known."""
        return sum(p.lag for p in self.partitions if p.lag is not None)


def partition_lag(
    committed: int | None, log_start: int, end: int, *, from_start: bool
) -> int | None:
    """Records the group still has to read in one partition.

    Without a committed offset, a group whose consumers reset to the earliest offset
    (``from_start``: the agents' default) has the whole log ahead of it; one that resets to the
    latest has an unknown lag (None)."""
    if committed is None:
        return max(0, end - log_start) if from_start else None
    return max(0, end - max(committed, log_start))


def reported_members(state: str, members: tuple[Member, ...]) -> tuple[Member, ...] | None:
    """``members``, or None when a group in a live state has none: the broker left them out."""
    return None if state in LIVE_STATES and not members else members


def starts_from_earliest(settings: Settings) -> bool:
    """Whether the agents' consumers start a partition without a commit at its log start."""
    reset = settings.kafka.consumer.get("auto.offset.reset", "earliest")
    return bool(AGENT_CONSUMER["auto.offset.reset"][1](reset) == "earliest")


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0].str()
    return str(exc) or type(exc).__name__


def _member(m: Any) -> Member:
    tps = m.assignment.topic_partitions if m.assignment is not None else []
    return Member(
        m.member_id, m.client_id, m.host, tuple(sorted((tp.topic, tp.partition) for tp in tps))
    )


def _describe(admin: AdminClient, groups: list[str], timeout_s: float) -> dict[str, Any]:
    """group -> ConsumerGroupDescription, or the exception describing it raised."""
    out: dict[str, Any] = {}
    for group, fut in admin.describe_consumer_groups(groups, request_timeout=timeout_s).items():
        try:
            out[group] = fut.result(timeout=timeout_s)
        except Exception as exc:  # one group's error (authorization, coordinator) is reported
            out[group] = exc
    return out


def _committed(
    admin: AdminClient, group: str, tps: list[TopicPartition], timeout_s: float
) -> dict[TopicPart, int | None]:
    """The group's committed offsets for ``tps`` (None where it has none)."""
    if not tps:
        return {}
    request = [ConsumerGroupTopicPartitions(group, tps)]  # librdkafka: one group per request
    fut = admin.list_consumer_group_offsets(request, request_timeout=timeout_s)[group]
    result = fut.result(timeout=timeout_s)
    return {
        (tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None
        for tp in result.topic_partitions
    }


def watermarks(
    admin: AdminClient, tps: Iterable[TopicPart], timeout_s: float
) -> dict[TopicPart, tuple[int, int]]:
    """(log start, high watermark) of each partition, as ListOffsets answers (read uncommitted)."""
    wanted = list(tps)
    if not wanted:
        return {}
    out: dict[TopicPart, list[int]] = {tp: [0, 0] for tp in wanted}
    for i, spec in enumerate((OffsetSpec.earliest(), OffsetSpec.latest())):
        futures = admin.list_offsets(
            {TopicPartition(t, p): spec for t, p in wanted},
            isolation_level=IsolationLevel.READ_UNCOMMITTED,
            request_timeout=timeout_s,
        )
        for tp, fut in futures.items():
            out[(tp.topic, tp.partition)][i] = fut.result(timeout=timeout_s).offset
    return {tp: (lo, hi) for tp, (lo, hi) in out.items()}


def end_offsets(
    settings: Settings,
    bootstrap: str,
    marks: dict[TopicPart, tuple[int, int]],
    timeout_s: float,
) -> dict[TopicPart, int]:
    """The offset after each partition's last record: its last batch is read from the high
    watermark - 1 (Tansu's high watermark is that batch's base offset + 1; Kafka's is the
    answer already). A partition not read within ``timeout_s`` keeps its high watermark."""
    ends = {tp: hi for tp, (lo, hi) in marks.items()}
    todo = {tp for tp, (lo, hi) in marks.items() if hi > lo}
    if not todo:
        return ends
    consumer = Consumer(
        consumer_config(
            settings,
            bootstrap,
            logger="streamflow.librdkafka.status",
            **{
                "group.id": f"streamflow-status-{uuid.uuid4().hex[:8]}",  # assigns, never joins
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_uncommitted",
            },
        )
    )
    try:
        consumer.assign([TopicPartition(t, p, marks[(t, p)][1] - 1) for t, p in sorted(todo)])
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.1):
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                if topic is None or partition is None:  # a client-level error event
                    continue
                err = msg.error()
                if err is None and offset is not None:
                    ends[(topic, partition)] = max(ends[(topic, partition)], offset + 1)
                elif err is not None and err.code() == KafkaError._PARTITION_EOF:
                    todo.discard((topic, partition))
    finally:
        consumer.close()
    return ends


def describe_groups(
    settings: Settings,
    bootstrap: str,
    groups: Sequence[tuple[str, tuple[str, ...]]],
    *,
    timeout_s: float = 5.0,
) -> list[GroupStatus]:
    """Each (group, topics it reads): its state, members and lag per partition of the topics."""
    admin = admin_client(bootstrap, settings)
    topics = sorted({t for _, ts in groups for t in ts})
    try:
        metadata = admin.list_topics(timeout=timeout_s).topics
        partitions = {
            t: sorted(metadata[t].partitions)
            for t in topics
            if t in metadata and metadata[t].error is None
        }
        marks = watermarks(admin, [(t, p) for t, ps in partitions.items() for p in ps], timeout_s)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"reading the offsets of {', '.join(topics)} at {bootstrap}: "
            f"{mask(_error_text(exc), settings.kafka)}"
        ) from exc
    ends = end_offsets(settings, bootstrap, marks, timeout_s)
    described = _describe(admin, [g for g, _ in groups], timeout_s)
    from_start = starts_from_earliest(settings)
    out: list[GroupStatus] = []
    for group, group_topics in groups:
        tps = [(t, p) for t in group_topics for p in partitions.get(t, ())]
        missing = tuple(t for t in group_topics if t not in partitions)
        desc = described[group]
        if isinstance(desc, BaseException):
            state, members, error = "unknown", None, _error_text(desc)
        else:
            state = STATES.get(desc.state, str(desc.state).lower())
            members = reported_members(state, tuple(_member(m) for m in desc.members))
            error = ""
        committed: dict[TopicPart, int | None] | None
        try:
            committed = _committed(admin, group, [TopicPartition(t, p) for t, p in tps], timeout_s)
        except Exception as exc:  # this group's offsets only: the others are still read
            committed, error = None, error or _error_text(exc)
        rows = []
        for t, p in tps:
            (lo, hi), end = marks[(t, p)], ends[(t, p)]
            at = committed.get((t, p)) if committed is not None else None
            lag = (
                partition_lag(at, lo, end, from_start=from_start) if committed is not None else None
            )
            rows.append(PartitionLag(t, p, at, lo, end, hi, lag))
        out.append(GroupStatus(group, group_topics, state, members, tuple(rows), missing, error))
    return out

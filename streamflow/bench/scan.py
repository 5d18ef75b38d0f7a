"""Read a run's topics back after it, batch by batch: batches per partition, and the records.

The embedded broker's fetch cost grows with the number of record batches in a partition
(FIELD_NOTES), so a system that leaves more, smaller batches slows every later fetch. No
consumer API shows batch boundaries (librdkafka's and aiokafka's hand out records), so this
sends Kafka Fetch requests itself (aiokafka's protocol classes) and walks the record batches of
each response (aiokafka's ``MemoryRecords``): one batch header per produce request the broker
stored. The records of the topics asked for are handed to a visitor (offset, CreateTime,
headers, value), which is what the per-hop breakdown reads (``hops.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from streamflow.settings import Settings

FETCH_BYTES = 64 * 1024 * 1024
# The broker scans a partition's batches on every fetch; a scan that outlasts the wait comes
# back empty (FIELD_NOTES): wait long, the topics are complete when this reads them.
FETCH_WAIT_MS = 5000


class BatchInfo(NamedTuple):
    """One stored record batch: its first offset, the offset after it, and its records."""

    base_offset: int
    next_offset: int
    records: int


class Record(NamedTuple):
    partition: int
    offset: int
    timestamp_ms: int  # CreateTime: when the producer's client took the message
    headers: list[tuple[str, bytes]]
    value: bytes | None


Visitor = Callable[[Record], None]


@dataclass
class TopicScan:
    """What a run left on its topics: batches and records per partition, per topic role."""

    batches: dict[str, list[int]] = field(default_factory=dict)  # role -> per partition
    records: dict[str, list[int]] = field(default_factory=dict)
    error: str = ""  # why the topics could not be read ("" when they were)

    def records_per_batch(self, role: str) -> float:
        b = sum(self.batches.get(role, []))
        return sum(self.records.get(role, [])) / b if b else 0.0


def batch_infos(data: bytes, visit: Visitor | None = None, partition: int = 0) -> list[BatchInfo]:
    """The record batches in a fetched partition's bytes (a trailing partial batch, which a
    fetch may cut, is left out); each record is handed to ``visit`` when given."""
    from aiokafka.record.memory_records import MemoryRecords

    out: list[BatchInfo] = []
    records = MemoryRecords(data)
    while records.has_next():
        batch = records.next_batch()
        if batch is None:
            break
        n = batch.next_offset - batch.base_offset  # what a batch holds (no compaction here)
        if visit is not None:
            for r in batch:
                visit(Record(partition, r.offset, r.timestamp, list(r.headers or ()), r.value))
        if batch.is_control_batch:
            n = 0  # a transaction marker, not a record
        out.append(BatchInfo(batch.base_offset, batch.next_offset, n))
    return out


def scan_topics(
    settings: Settings,
    bootstrap: str,
    topics: dict[str, str],
    visitors: dict[str, Visitor] | None = None,
    timeout_s: float = 120.0,
) -> TopicScan:
    """Batches and records per partition of each topic in ``topics`` (role -> name), reading
    every partition from its first offset to its end; the records of the roles in ``visitors``
    are handed to their visitor. Errors become ``TopicScan.error``: a bench run is not failed
    by its own instrument."""
    if settings.kafka.security_protocol.upper() != "PLAINTEXT":
        return TopicScan(error="batches are read on PLAINTEXT brokers only")
    try:
        return asyncio.run(
            asyncio.wait_for(_scan(bootstrap, topics, visitors or {}), timeout=timeout_s)
        )
    except Exception as exc:  # the instrument failed, not the system under test: report it
        return TopicScan(error=f"{type(exc).__name__}: {exc}")


async def _scan(bootstrap: str, topics: dict[str, str], visitors: dict[str, Visitor]) -> TopicScan:
    from aiokafka.client import AIOKafkaClient
    from aiokafka.structs import TopicPartition

    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    out = TopicScan()
    try:
        await client.force_metadata_update()
        for role, topic in topics.items():
            parts = sorted(client.cluster.partitions_for_topic(topic) or ())
            out.batches[role], out.records[role] = [], []
            for p in parts:
                leader = client.cluster.leader_for_partition(TopicPartition(topic, p))
                batches, records = await _scan_partition(
                    client, leader, topic, p, visitors.get(role)
                )
                out.batches[role].append(batches)
                out.records[role].append(records)
    finally:
        await client.close()
    return out


async def _scan_partition(
    client: Any, node: int, topic: str, partition: int, visit: Visitor | None
) -> tuple[int, int]:
    from aiokafka.errors import for_code
    from aiokafka.protocol.fetch import FetchRequest

    offset, batches, records, empty = 0, 0, 0, 0
    while True:
        request = FetchRequest(
            FETCH_WAIT_MS, 1, FETCH_BYTES, 0, [(topic, [(partition, offset, FETCH_BYTES)])]
        )
        response = await client.send(node, request)
        _, parts = response.topics[0]
        _, error_code, high_water, *rest = parts[0]
        if error_code:
            raise for_code(error_code)(f"fetch {topic}[{partition}] at {offset}")
        got = batch_infos(rest[-1], visit, partition)
        batches += len(got)
        records += sum(b.records for b in got)
        if got:
            offset, empty = got[-1].next_offset, 0
        else:
            empty += 1  # at the end, or a broker scan that outlasted the wait (FIELD_NOTES)
        # The embedded broker's high watermark is the last batch's base offset + 1
        # (FIELD_NOTES): past it, the last batch has been read.
        if offset >= high_water or empty >= 3:
            return batches, records

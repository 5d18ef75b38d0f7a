"""The fetch wait against the real broker: an idle consumer's fetches wait longer (up to
kafka.fetch_idle_max_wait_ms), and the next record still arrives and sets the wait back."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer

from streamflow.kafka.admin import TopicSpec, ensure_topics
from streamflow.kafka.transport import patch_fetch_wait

pytestmark = pytest.mark.integration


async def _idle_then_one_record(bootstrap: str, topic: str) -> tuple[int, int, list[bytes], int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_end(TopicPartition(topic, 0))
        fetcher = consumer._fetcher
        for _ in range(200):  # nothing to read: the fetches come back empty
            await consumer.getmany(timeout_ms=20)
            if fetcher.__dict__.get("_streamflow_empty_fetches", 0) >= 6:
                break
        empty, idle_wait = fetcher._streamflow_empty_fetches, fetcher._fetch_max_wait_ms
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topic, b"late", partition=0)
        assert producer.flush(10) == 0
        got: list[bytes] = []
        for _ in range(100):
            batch = await consumer.getmany(timeout_ms=100)
            got += [r.value for rs in batch.values() for r in rs]
            if got:
                break
        empty_after = fetcher._streamflow_empty_fetches
        return empty, idle_wait, got, empty_after
    finally:
        await consumer.stop()


def test_an_idle_consumer_waits_longer_and_still_gets_the_next_record(
    bootstrap: str, unique: str
) -> None:
    topic = f"fetch-wait-{unique}"
    ensure_topics(bootstrap, [TopicSpec(topic, 1)])
    patch_fetch_wait(5, 20)
    empty, idle_wait, got, empty_after = asyncio.run(_idle_then_one_record(bootstrap, topic))
    assert empty >= 6
    assert idle_wait == 20  # 5, 5, 10, 20, 20...: capped at the idle maximum
    assert got == [b"late"]
    assert empty_after < empty  # the fetch that brought it started the count again

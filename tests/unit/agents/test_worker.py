"""The faust shell's own bookkeeping (agents/worker.py), with the consumer faked: what is acked
after a revocation, and the lag timer racing a rebalance."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from streamflow.agents.context import StageContext
from streamflow.agents.worker import InFlight, StageWorker
from streamflow.kafka.transport import ChunkBuffer
from streamflow.metrics import Metrics
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE


class Rec:
    def __init__(self, offset: int) -> None:
        self.offset, self.timestamp = offset, 1_764_000_000_000 + offset


class Consumer:
    def __init__(self) -> None:
        self.acked: list[tuple[int, int]] = []
        self.assigned = {TopicPartition("telemetry.raw", 0), TopicPartition("telemetry.raw", 1)}

    def ack_chunk(self, chunk: Any) -> None:
        self.acked.append((chunk.partition, chunk.last_offset))

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, tp: TopicPartition) -> int:
        return 100

    async def position(self, tp: TopicPartition) -> int:
        if tp.partition == 0:  # revoked while the timer awaited
            raise IllegalStateError(f"Partition {tp} is not assigned")
        return 40


def worker() -> StageWorker:
    w = StageWorker.__new__(StageWorker)
    w.settings = load_settings(PIPELINE, environ={})
    w.stage, w.metrics, w.gpus = "clean", Metrics.create(CollectorRegistry()), None
    w.ctx = StageContext(w.settings, "clean", w.metrics, None)  # type: ignore[arg-type]
    w.app = SimpleNamespace(consumer=Consumer())  # type: ignore[assignment]
    w.source_topics = ("telemetry.raw",)
    return w


def test_chunks_of_a_partition_revoked_while_in_flight_are_not_acked() -> None:
    async def main() -> list[tuple[int, int]]:
        w = worker()
        buf = ChunkBuffer(3, lambda r: 1, capacity_batches=10)
        await buf.put("telemetry.raw", 0, [Rec(o) for o in range(3)])
        await buf.put("telemetry.raw", 1, [Rec(o) for o in range(3)])
        batches = [await buf.take(0.0), await buf.take(0.0)]
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue: asyncio.Queue[InFlight] = asyncio.Queue()
        for chunks in batches:  # handled, on their way to the broker
            handling = asyncio.get_running_loop().create_future()
            handling.set_result(delivered)
            queue.put_nowait((handling, chunks))
        acker = asyncio.create_task(w.acknowledge(queue))
        buf.discard({("telemetry.raw", 0)})  # the rebalance comes before the broker's ack
        delivered.set_result(None)
        await asyncio.wait_for(queue.join(), 2.0)
        acker.cancel()
        return w.app.consumer.acked  # type: ignore[no-any-return]

    assert asyncio.run(main()) == [(1, 2)]  # partition 0's next owner reads 0..2 again


def test_the_lag_timer_skips_a_partition_revoked_while_it_awaited() -> None:
    w = worker()
    asyncio.run(w.report_lag())
    lag = w.metrics.registry.get_sample_value(
        "streamflow_consumer_lag_records",
        {"pipeline": w.settings.name, "stage": "clean", "topic": "telemetry.raw", "partition": "1"},
    )
    assert lag == 60

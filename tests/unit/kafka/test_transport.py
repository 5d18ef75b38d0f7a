"""The bounded hand-off between the consumer's fetch loop and a stage (kafka/transport.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from streamflow.kafka.transport import ChunkBuffer


@dataclass
class Rec:
    offset: int
    n: int = 1  # records it carries (internal batch messages carry many)


def recs(start: int, count: int, n: int = 1) -> list[Rec]:
    return [Rec(o, n) for o in range(start, start + count)]


def offsets(chunks: list) -> list[tuple[int, list[int]]]:
    return [(c.partition, [r.offset for r in c.records]) for c in chunks]


def test_fetched_records_are_cut_to_the_batch_size_and_taken_in_order() -> None:
    async def main() -> None:
        buf = ChunkBuffer(4, lambda r: r.n, capacity_batches=10)
        await buf.put("t", 0, recs(0, 10))
        await buf.put("t", 1, recs(0, 2))
        assert len(buf) == 12
        assert offsets(await buf.take(0.0)) == [(0, [0, 1, 2, 3])]
        assert offsets(await buf.take(0.0)) == [(0, [4, 5, 6, 7])]
        assert offsets(await buf.take(0.0)) == [(0, [8, 9]), (1, [0, 1])]
        assert len(buf) == 0

    asyncio.run(main())


def test_weights_count_records_inside_messages() -> None:
    async def main() -> None:
        buf = ChunkBuffer(100, lambda r: r.n, capacity_batches=10)
        await buf.put("t", 0, recs(0, 5, n=40))
        first = await buf.take(0.0)
        assert [c.weight for c in first] == [80]
        assert offsets(first) == [(0, [0, 1])]
        big = ChunkBuffer(10, lambda r: r.n)
        await big.put("t", 0, [Rec(0, 50)])  # one message over the batch size still goes, alone
        assert offsets(await big.take(0.0)) == [(0, [0])]

    asyncio.run(main())


def test_take_waits_for_a_full_batch_or_the_delay() -> None:
    async def main() -> None:
        buf = ChunkBuffer(10, lambda r: r.n)
        await buf.put("t", 0, recs(0, 3))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        got = await buf.take(0.2)  # only 3 of 10: waits out the delay
        assert offsets(got) == [(0, [0, 1, 2])] and loop.time() - t0 >= 0.15

        async def fill() -> None:
            await asyncio.sleep(0.05)
            await buf.put("t", 0, recs(3, 10))

        task = asyncio.create_task(fill())
        t0 = loop.time()
        got = await buf.take(5.0)  # a full batch arrives: no need to wait 5 s
        assert sum(c.weight for c in got) == 10 and loop.time() - t0 < 2.0
        await task

    asyncio.run(main())


def test_a_full_buffer_holds_the_fetcher_until_the_stage_takes() -> None:
    async def main() -> None:
        buf = ChunkBuffer(5, lambda r: r.n, capacity_batches=2)
        await buf.put("t", 0, recs(0, 10))  # at capacity
        blocked = asyncio.create_task(buf.put("t", 0, recs(10, 5)))
        await asyncio.sleep(0.05)
        assert not blocked.done() and len(buf) == 10
        await buf.take(0.0)
        await asyncio.wait_for(blocked, 1.0)
        assert len(buf) == 10

    asyncio.run(main())


def test_revoked_partitions_are_dropped_from_the_buffer() -> None:
    async def main() -> None:
        buf = ChunkBuffer(100, lambda r: r.n)
        await buf.put("t", 0, recs(0, 3))
        await buf.put("t", 1, recs(0, 4))
        assert buf.discard({("t", 1)}) == 4
        assert len(buf) == 3
        assert offsets(await buf.take(0.0)) == [(0, [0, 1, 2])]

    asyncio.run(main())


def test_chunks_taken_before_a_revocation_say_so_and_a_new_assignment_gets_a_new_lease() -> None:
    async def main() -> None:
        buf = ChunkBuffer(4, lambda r: r.n, capacity_batches=10)
        await buf.put("t", 0, recs(0, 6))
        await buf.put("t", 1, recs(0, 2))
        taken = await buf.take(0.0)  # 0..3 of partition 0, cut from a chunk of 6
        rest = await buf.take(0.0)  # 4..5 of partition 0 (the cut's rest), 0..1 of partition 1
        assert offsets(taken) == [(0, [0, 1, 2, 3])] and not any(c.revoked for c in taken)
        buf.discard({("t", 0)})
        assert all(c.revoked for c in taken)  # in the step or out to the broker: not acked
        assert [c.revoked for c in rest] == [True, False]  # the cut's rest, and partition 1
        await buf.put("t", 0, recs(6, 2))  # assigned again: fetched anew
        assert [c.revoked for c in await buf.take(0.0)] == [False]

    asyncio.run(main())


def test_records_fetched_again_during_one_assignment_are_handed_over_once() -> None:
    """faust resumes a newly assigned partition before its seek to the committed offset: what
    was fetched first comes again after the seek."""

    async def main() -> None:
        buf = ChunkBuffer(100, lambda r: r.n)
        await buf.put("t", 0, recs(40, 50))  # 40..89 from the committed offset, before the seek
        await buf.put("t", 0, recs(40, 61))  # the seek to the committed offset 40: 40..100
        assert offsets(await buf.take(0.0)) == [(0, list(range(40, 90))), (0, list(range(90, 101)))]
        await buf.put("t", 0, recs(30, 5))  # a seek back past 40: nothing is skipped
        assert offsets(await buf.take(0.0)) == [(0, list(range(30, 35)))]
        buf.discard({("t", 0)})
        await buf.put("t", 0, recs(40, 3))  # assigned again: read again from the committed offset
        assert offsets(await buf.take(0.0)) == [(0, [40, 41, 42])]

    asyncio.run(main())


def test_records_waiting_for_room_are_dropped_when_their_partition_is_revoked() -> None:
    async def main() -> None:
        buf = ChunkBuffer(5, lambda r: r.n, capacity_batches=2)
        await buf.put("t", 1, recs(0, 10))  # full
        blocked = asyncio.create_task(buf.put("t", 0, recs(0, 3)))
        await asyncio.sleep(0.01)
        assert not blocked.done()
        buf.discard({("t", 0)})  # fetched before the revocation, not yet handed over
        await buf.take(0.0)
        await asyncio.wait_for(blocked, 1.0)
        assert len(buf) == 5 and {c.partition for c in await buf.take(0.0)} == {1}

    asyncio.run(main())


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_every_record_comes_out_once_in_partition_order(batch: int) -> None:
    async def main() -> None:
        buf = ChunkBuffer(batch, lambda r: r.n, capacity_batches=3)
        sent = {p: 0 for p in range(3)}

        async def produce() -> None:
            for i in range(60):
                p = i % 3
                await buf.put("t", p, recs(sent[p], 5))
                sent[p] += 5

        task = asyncio.create_task(produce())
        seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
        while sum(len(v) for v in seen.values()) < 300:
            for c in await buf.take(0.01):
                seen[c.partition] += [r.offset for r in c.records]
        await task
        assert all(seen[p] == list(range(100)) for p in range(3))

    asyncio.run(main())


def test_wake_makes_a_waiting_take_return_empty_and_leaves_the_buffer_for_the_next_owner() -> None:
    async def main() -> None:
        buf = ChunkBuffer(100, lambda r: r.n)
        await buf.put("t", 0, recs(0, 3))
        waiting = asyncio.ensure_future(buf.take(60.0))  # waits for a fuller batch
        await asyncio.sleep(0.01)
        assert not waiting.done()
        buf.wake()
        assert await asyncio.wait_for(waiting, 1.0) == []
        assert await buf.take(0.0) == []  # stays woken: the stage takes nothing more
        assert len(buf) == 3  # never handed over: read again from the committed offset

    asyncio.run(main())


def test_a_preferred_batch_size_is_cut_at_once_and_smaller_waits_for_the_delay() -> None:
    async def main() -> None:
        buf = ChunkBuffer(100, lambda r: r.n, capacity_batches=10)
        await buf.put("t", 0, recs(0, 40))
        t0 = asyncio.get_running_loop().time()
        taken = await asyncio.wait_for(buf.take(60.0, preferred=(8, 32)), 1.0)  # no waiting for 100
        assert sum(c.weight for c in taken) == 32
        rest = await buf.take(0.05, preferred=(8, 32))  # 8 left: a preferred size too
        assert sum(c.weight for c in rest) == 8
        await buf.put("t", 0, recs(40, 5))
        small = await buf.take(
            0.05, preferred=(8, 32)
        )  # under every preferred size: waits the delay
        assert sum(c.weight for c in small) == 5 and buf.waited_s >= 0.05
        assert asyncio.get_running_loop().time() - t0 < 1.0

    asyncio.run(main())


def test_under_reject_what_arrives_at_a_full_queue_is_shed_behind_it_in_order() -> None:
    async def main() -> None:
        buf = ChunkBuffer(5, lambda r: r.n, max_weight=10, policy="reject")
        await buf.put("t", 0, recs(0, 10))  # fills the queue: admitted
        await buf.put("t", 0, recs(10, 7))  # the queue is full: shed
        assert [c.shed for _, c in buf._chunks] == [False, False, True, True]
        first, second = await buf.take(0.0), await buf.take(0.0)
        assert offsets(first) == [(0, [0, 1, 2, 3, 4])] and offsets(second) == [
            (0, [5, 6, 7, 8, 9])
        ]
        shed = await buf.take(60.0)  # shed chunks go at once, no waiting for a batch to fill
        assert all(c.shed for c in shed) and offsets(shed) == [
            (0, [10, 11, 12, 13, 14]),
            (0, [15, 16]),
        ]
        await buf.put("t", 0, recs(17, 3))  # room again: admitted
        assert not (await buf.take(0.0))[0].shed

    asyncio.run(main())


def test_under_reject_fetching_still_stops_at_the_hard_bound() -> None:
    async def main() -> None:
        buf = ChunkBuffer(5, lambda r: r.n, max_weight=10, policy="reject")
        for start in range(0, 80, 10):
            await buf.put("t", 0, recs(start, 10))  # 80 = 8 x the queue: the hard bound
        blocked = asyncio.ensure_future(buf.put("t", 0, recs(80, 1)))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        await buf.take(0.0)
        await asyncio.wait_for(blocked, 1.0)

    asyncio.run(main())

"""faust's aiokafka transport, with a consumer that hands fetched records to the stage in chunks.

faust's consumer delivers each message on its own: for every record it builds a
``Message``, awaits ``wait_first(callback(message), ...)`` (tasks per message), and the
conductor and ``Stream`` build an ``Event`` and pass it through queues and processors:
about 80 µs per message before any work is done (FIELD_NOTES). streamflow's stages
work on batches, so this consumer keeps everything faust does around the records (group
membership, assignment, flow control during rebalances, read offsets and gaps, the commit
loop) and replaces the per-message delivery with one hand-off per fetched partition
chunk into a bounded ``ChunkBuffer``. The stage acks a chunk's offsets in bulk, after the
broker has acknowledged everything the chunk produced; faust's commit loop then commits
them.

Use the ``streamflow://host:port`` broker URL to get it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Container, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import faust
from confluent_kafka import Consumer as LibrdkafkaConsumer
from confluent_kafka import KafkaException, TopicPartition
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

log = logging.getLogger(__name__)


class Lease:
    """One assignment of a partition, as the buffer saw it: every chunk fetched during it holds
    it, and it is revoked with the partition (``ChunkBuffer.discard``), never valid again. A
    partition assigned anew gets a new lease. Records handed over during it: offsets from
    ``first_offset`` to before ``next_offset``."""

    __slots__ = ("revoked", "first_offset", "next_offset")

    def __init__(self) -> None:
        self.revoked = False
        self.first_offset = self.next_offset = -1


_HELD = Lease()  # chunks made outside a buffer (tests, the inference bench): never revoked


@dataclass
class Chunk:
    """Consecutive records of one partition, as aiokafka returned them (timestamps in ms).

    A step that keeps chunks unacked for long (the store, until its file is published) may
    ``slim`` them once their records are read: acking needs only the offsets and the last
    timestamp."""

    topic: str
    partition: int
    records: list[Any]
    weight: int
    shed: bool = (
        False  # arrived while the queue was full under queue_policy "reject": dead-letter it
    )
    lease: Lease = _HELD

    @property
    def last_offset(self) -> int:
        return int(self.records[-1].offset)

    @property
    def revoked(self) -> bool:
        """Its partition was revoked since it was fetched: the partition's next owner reads
        these records again from the committed offset, so they are neither stored nor acked
        here (an ack would be committed if the partition came back)."""
        return self.lease.revoked

    def slim(self) -> None:
        """Drop the records' keys, values and headers, keeping their offsets and timestamps."""
        self.records = [_Acked(r.offset, r.timestamp) for r in self.records]


class _Acked:
    """A record already read: what acking and lag accounting need."""

    __slots__ = ("offset", "timestamp")

    def __init__(self, offset: int, timestamp: int) -> None:
        self.offset, self.timestamp = offset, timestamp


class ChunkBuffer:
    """Bounded hand-off between the consumer's drain loop and the stage (backpressure by weight)."""

    def __init__(
        self,
        batch_weight: int,
        weight: Callable[[Any], int],
        *,
        capacity_batches: int = 2,
        max_weight: int = 0,
        policy: str = "wait",
    ) -> None:
        self.batch_weight = batch_weight  # what the stage takes at once; chunks are cut to fit
        # The queue: buffered beyond this, fetching waits ("wait") or what arrives is shed
        # ("reject").
        self.max_weight = max_weight or capacity_batches * batch_weight
        self.policy = policy
        # Under "reject", shed chunks queue behind the admitted ones (acks stay in offset order)
        # and are dead-lettered when their turn comes; this many in all and fetching waits anyway.
        self.hard_weight = self.max_weight * (8 if policy == "reject" else 1)
        self.weight = weight
        self._chunks: deque[tuple[float, Chunk]] = deque()
        self._total = 0  # every buffered chunk
        self._admitted = 0  # the chunks not shed
        self._arrived = asyncio.Event()
        self._drained = asyncio.Event()
        self._woken = False
        self.waited_s = 0.0  # by the oldest chunk of the last take
        # per fetched batch of records: how long after it was produced (its Kafka timestamp)
        # its oldest record arrived here; the stage drains these into its histogram
        self.fetch_delays: list[float] = []
        self._leases: dict[tuple[str, int], Lease] = {}

    def __len__(self) -> int:
        return self._total

    async def put(self, topic: str, partition: int, records: list[Any]) -> None:
        """Hand over fetched ``records`` of one partition, in offset order.

        Records handed over already during this assignment are dropped: faust resumes fetching
        a newly assigned partition before its seek to the committed offset, so its first records
        can come twice (seen in test_store_chaos: one store file held offsets 66..89 twice).
        Their first copies are acked as usual. A seek back past the first record handed over
        (not one that faust makes) hands everything over again: repeats, nothing skipped."""
        lease = self._leases.get((topic, partition))
        if lease is None:
            lease = self._leases[(topic, partition)] = Lease()
        if records:
            first = records[0].offset
            if lease.next_offset < 0 or first < lease.first_offset:
                lease.first_offset = first
            elif first < lease.next_offset:
                records = [r for r in records if r.offset >= lease.next_offset]
                if not records:
                    return
            lease.next_offset = records[-1].offset + 1
        while self._total >= self.hard_weight:  # the stage is behind: stop fetching
            self._drained.clear()
            await self._drained.wait()
        if lease.revoked:  # revoked while waiting for room: its next owner reads these
            return
        shed = self.policy == "reject" and self._admitted >= self.max_weight
        produced_ms = getattr(records[0], "timestamp", None) if records else None
        if produced_ms is not None:
            self.fetch_delays.append(time.time() - produced_ms / 1000.0)
        now = time.monotonic()
        piece: list[Any] = []
        w = 0
        for r in records:
            rw = self.weight(r)
            if piece and w + rw > self.batch_weight:
                self._append(now, Chunk(topic, partition, piece, w, shed, lease))
                piece, w = [], 0
            piece.append(r)
            w += rw
        if piece:
            self._append(now, Chunk(topic, partition, piece, w, shed, lease))
        self._arrived.set()

    def _append(self, now: float, chunk: Chunk) -> None:
        self._chunks.append((now, chunk))
        self._total += chunk.weight
        if not chunk.shed:
            self._admitted += chunk.weight

    def _popleft(self) -> Chunk:
        chunk = self._chunks.popleft()[1]
        self._total -= chunk.weight
        if not chunk.shed:
            self._admitted -= chunk.weight
        return chunk

    def _head(self, chunk: Chunk, room: int) -> tuple[list[Any], int]:
        """The first records of ``chunk`` weighing at most ``room``, and their weight."""
        head: list[Any] = []
        w = 0
        for r in chunk.records:
            rw = self.weight(r)
            if w + rw > room:
                break
            head.append(r)
            w += rw
        return head, w

    def discard(self, partitions: set[tuple[str, int]]) -> int:
        """Drop buffered chunks of ``partitions`` (revoked: their new owner reads them from the
        committed offset) and revoke their leases, which chunks already taken still hold.
        Returns the weight dropped."""
        for key in partitions:
            lease = self._leases.pop(key, None)
            if lease is not None:
                lease.revoked = True
        keep = deque(e for e in self._chunks if (e[1].topic, e[1].partition) not in partitions)
        dropped = self._total - sum(e[1].weight for e in keep)
        self._chunks, self._total = keep, self._total - dropped
        self._admitted = sum(e[1].weight for e in keep if not e[1].shed)
        self._drained.set()
        return dropped

    def wake(self) -> None:
        """Make the pending (or next) ``take`` return at once, empty: the stage is draining."""
        self._woken = True
        self._arrived.set()

    async def take(self, within: float, preferred: tuple[int, ...] = ()) -> list[Chunk]:
        """Chunks totalling up to ``batch_weight`` (at least one), once that much is buffered
        or ``within`` seconds after the oldest buffered chunk arrived; ``[]`` after ``wake()``.

        ``preferred`` (ascending weights): as soon as one of them is buffered, cut the largest
        that fits without waiting longer. ``waited_s`` tells how long the oldest taken chunk
        waited."""
        max_weight = self.batch_weight
        while not self._chunks:
            if self._woken:
                return []
            self._arrived.clear()
            await self._arrived.wait()
        if self._woken:
            return []
        if self._chunks[0][1].shed:  # shed ones go at once, all that are first in line
            self.waited_s = time.monotonic() - self._chunks[0][0]
            shed: list[Chunk] = []
            while self._chunks and self._chunks[0][1].shed:
                shed.append(self._popleft())
            self._drained.set()
            return shed
        deadline = self._chunks[0][0] + within
        while self._admitted < max_weight:
            if preferred and self._admitted >= preferred[0]:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                break
            if self._woken:
                return []
        fits = [n for n in preferred if n <= self._admitted]
        if fits and self._admitted < max_weight:
            max_weight = fits[-1]
        self.waited_s = time.monotonic() - self._chunks[0][0]
        out: list[Chunk] = []
        taken = 0
        while self._chunks and not self._chunks[0][1].shed:
            arrived, chunk = self._chunks[0]
            room = max_weight - taken
            if chunk.weight <= room:
                out.append(self._popleft())
                taken += chunk.weight
                continue
            head, w = self._head(chunk, room)
            if not head and not out:  # its first record alone outweighs the batch: it goes alone
                head, w = chunk.records[:1], self.weight(chunk.records[0])
            if head and len(head) == len(chunk.records):
                out.append(self._popleft())
                taken += chunk.weight
            elif head:  # cut the chunk: its first records now, the rest stays first in line
                out.append(Chunk(chunk.topic, chunk.partition, head, w, lease=chunk.lease))
                taken += w
                self._total -= w
                self._admitted -= w
                self._chunks[0] = (
                    arrived,
                    Chunk(
                        chunk.topic,
                        chunk.partition,
                        chunk.records[len(head) :],
                        chunk.weight - w,
                        lease=chunk.lease,
                    ),
                )
            break
        self._drained.set()
        return out


class ChunkedApp(faust.App):
    """A faust app whose consumer delivers fetched chunks to ``chunk_buffer`` (set before it
    starts)."""

    chunk_buffer: ChunkBuffer
    # kafka.fetch_client = "librdkafka": the confluent-kafka consumer configuration its records
    # are fetched with (``ChunkingConsumer._drain_librdkafka``); None: aiokafka fetches them
    librdkafka_fetch: dict[str, Any] | None = None


class ChunkingConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer, delivering chunks to the app's ``chunk_buffer``."""

    _librdkafka: Any = None  # the confluent-kafka consumer fetching, under kafka.fetch_client

    def highwater(self, tp: TP) -> int:
        """The partition's high watermark, from the last fetch (of librdkafka, when it fetches:
        aiokafka's is never updated then). None until a fetch has told it."""
        rk = self._librdkafka
        if rk is None:
            return super().highwater(tp)
        high = rk.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)[1]
        return high if high >= 0 else None  # type: ignore[return-value]

    def verify_event_path(self, now: float, tp: TP) -> None:
        """faust's livelock checks read aiokafka's fetch state; when librdkafka fetches, aiokafka
        never does and they would log "no fetch request" for every partition."""
        if self._librdkafka is None:
            super().verify_event_path(now, tp)

    async def _drain_messages(
        self, fetcher: Any
    ) -> None:  # pragma: no cover - exercised by integration tests
        app = self.app
        if not isinstance(app, ChunkedApp):
            raise TypeError(
                "the streamflow:// transport needs a ChunkedApp (agents/app.py:make_app)"
            )
        buffer = app.chunk_buffer
        try:
            if app.librdkafka_fetch is not None:
                await self._drain_librdkafka(fetcher, buffer, app.librdkafka_fetch)
            else:
                await self._drain_aiokafka(fetcher, buffer)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    async def _drain_aiokafka(
        self, fetcher: Any, buffer: ChunkBuffer
    ) -> None:  # pragma: no cover - exercised by integration tests
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        while not (consumer_should_stop() or fetcher_should_stop()):
            records, active = await self._wait_next_records(1.0)
            if not records or self.should_stop:
                await asyncio.sleep(0)
                continue
            for tp, recs in records.items():
                if active is not None and tp not in active and tp not in self._buffered_partitions:
                    continue
                await self._hand_over(buffer, tp, recs)

    async def _drain_librdkafka(
        self, fetcher: Any, buffer: ChunkBuffer, conf: dict[str, Any]
    ) -> None:  # pragma: no cover - exercised by integration tests
        """``_drain_aiokafka`` with librdkafka fetching (kafka.fetch_client = "librdkafka").

        aiokafka keeps the group: membership, assignment, the committed offsets and the
        commits; its fetcher is paused (``patch_fetch_wait``), and a confluent-kafka consumer
        that never joins the group is ``assign()``ed to the active partitions at faust's read
        offsets. librdkafka fetches and parses in C threads, without the GIL; the records are
        handed over exactly as aiokafka's are (``_hand_over``). Any change of the active
        partitions, a seek by faust, or a rebalance (flow stopped) re-assigns it from the read
        offsets, so what it had prefetched for the old positions is dropped, never handed
        over."""
        rk = self._librdkafka = LibrdkafkaConsumer(conf)
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(1, thread_name_prefix="streamflow-librdkafka-fetch")
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        max_records = int(self.app.conf.broker_max_poll_records or 5000)
        # what librdkafka is assigned: per partition, the next offset it will hand out
        assigned: dict[TP, int] | None = None
        poll_timer_at = 0.0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                if not self.flow_active:  # rebalancing: fetch nothing until it is over
                    await self.wait(self.can_resume_flow)  # type: ignore[arg-type]
                    assigned = None
                    continue
                active = self._get_active_partitions()
                if assigned is None or not _same_positions(assigned, active, self._read_offset):
                    assigned = await self._assign_librdkafka(rk, active)
                now = time.monotonic()
                if now >= poll_timer_at:
                    # aiokafka leaves the group when its records go unpolled for
                    # max.poll.interval.ms: poll it (its fetcher is paused: nothing comes back)
                    await self._getmany(active_partitions={_NO_PARTITION}, timeout=0)
                    poll_timer_at = now + 1.0
                msgs = await loop.run_in_executor(pool, _consume, rk, max_records, 0.25)
                if not msgs or self.should_stop:
                    continue
                if not self.flow_active:  # a rebalance began: read again from the read offsets
                    assigned = None
                    continue
                for (topic, partition), recs in _by_partition(msgs).items():
                    tp = TP(topic, partition)
                    if tp not in active and tp not in self._buffered_partitions:
                        continue
                    next_offset = await self._hand_over(buffer, tp, recs)
                    if next_offset is not None and tp in assigned:
                        assigned[tp] = next_offset
        finally:
            # rk is only touched by one thread at a time: close it on the fetch thread, after
            # any consume still running there
            self._librdkafka = None
            pool.submit(rk.close)
            pool.shutdown(wait=False)

    async def _hand_over(self, buffer: ChunkBuffer, tp: TP, recs: list[Any]) -> int | None:
        """Hand ``recs`` (fetched for ``tp``, in offset order) to ``buffer`` from the read offset
        on; the new read offset, or None when every record was handed over already."""
        # The next offset to hand over. faust's seek sets it to the committed offset (on
        # assignment, restart, rebalance): that record has not been handed over yet.
        expected = self._read_offset.get(tp)
        if expected is not None and recs[0].offset < expected:
            recs = [r for r in recs if r.offset >= expected]  # already handed over
            if not recs:
                return None
        await self._note_gaps(tp, expected, recs)
        next_offset = self._read_offset[tp] = recs[-1].offset + 1
        await buffer.put(tp.topic, tp.partition, recs)
        return next_offset

    async def _assign_librdkafka(self, rk: Any, active: set[TP]) -> dict[TP, int]:
        """Assign ``rk`` the ``active`` partitions, each at its read offset (after a seek to the
        committed offset), or where aiokafka's position says (committed, or reset)."""
        positions: dict[TP, int] = {}
        for tp in active:
            offset = self._read_offset.get(tp)
            if offset is None:
                offset = await self.position(tp)
            if offset is not None:
                positions[tp] = int(offset)
        rk.assign([TopicPartition(tp.topic, tp.partition, o) for tp, o in positions.items()])
        log.info(
            "fetching with librdkafka: %s",
            ", ".join(f"{tp.topic}[{tp.partition}]@{o}" for tp, o in sorted(positions.items())),
        )
        return positions

    async def _note_gaps(self, tp: TP, expected: int | None, recs: list[Any]) -> None:
        """Offsets that will never arrive (transaction markers, compaction) count as acked."""
        for r in recs:
            if expected is not None and r.offset > expected:
                await self._add_gap(tp, expected, r.offset - 1)  # faust's bounds are inclusive
            expected = r.offset + 1

    def ack_chunk(self, chunk: Chunk) -> None:
        """Mark every offset of ``chunk`` safe to commit (what ``Consumer.ack`` does per
        message)."""
        tp = TP(chunk.topic, chunk.partition)
        with ack_lock:
            committed = self._committed_offset[tp]
            index = self._acked_index[tp]
            acked = self._acked[tp]
            for r in chunk.records:
                offset = r.offset
                if (committed is None or offset >= committed) and offset not in index:
                    index.add(offset)
                    acked.append(offset)
                    self._n_acked += 1
            notify(self._waiting_for_ack)


_NO_PARTITION = TP("", -1)  # polls aiokafka for no partition's records


class _Record:
    """A librdkafka message read through the attributes the stages read, like aiokafka's C
    record: ``offset``, ``timestamp`` (ms), ``key``, ``value``, ``headers``."""

    __slots__ = ("offset", "timestamp", "key", "value", "headers")

    def __init__(self, offset: int, timestamp: int, key: Any, value: Any, headers: Any) -> None:
        self.offset, self.timestamp, self.key, self.value = offset, timestamp, key, value
        self.headers = headers or ()


def _consume(rk: Any, max_records: int, wait_s: float) -> list[Any]:
    """Wait up to ``wait_s`` for a first message, then take what else librdkafka holds: the
    first record is handed over as soon as it arrives, and no thread spins while idle."""
    first: list[Any] = rk.consume(1, wait_s)
    if not first or max_records <= 1:
        return first
    return first + rk.consume(max_records - 1, 0)


def _by_partition(msgs: list[Any]) -> dict[tuple[str, int], list[_Record]]:
    """librdkafka's messages, in order, as records per partition; errors are logged (librdkafka
    retries on its own), fatal ones raised."""
    out: dict[tuple[str, int], list[_Record]] = {}
    for m in msgs:
        err = m.error()
        if err is not None:
            if err.fatal():
                raise KafkaException(err)
            log.warning("librdkafka fetch: %s", err)
            continue
        key = (m.topic(), m.partition())
        recs = out.get(key)
        if recs is None:
            recs = out[key] = []
        recs.append(_Record(m.offset(), m.timestamp()[1], m.key(), m.value(), m.headers()))
    return out


def _same_positions(
    assigned: dict[TP, int], active: set[TP], read_offset: MutableMapping[TP, int | None]
) -> bool:
    """librdkafka's assignment still matches faust's: the same partitions, and no seek since
    (a read offset other than the next one librdkafka hands out)."""
    if assigned.keys() != active:
        return False
    for tp, offset in assigned.items():
        at = read_offset.get(tp)
        if at is not None and at != offset:
            return False
    return True


def _bare_record(self: Any, tp: Any, record: Any) -> Any:
    """aiokafka's C record (``offset``, ``timestamp`` in ms, ``key``, ``value``, ``headers``) as
    is."""
    return record


def _hand_over_bare_records() -> None:
    """aiokafka wraps every fetched record in a ``ConsumerRecord`` (11 fields, a headers tuple):
    17% of the clean stage's time. The chunking consumer reads four attributes that aiokafka's
    C record already has, so it skips the wrapper. Process-wide: only stage processes, which
    consume through this transport alone, install it."""
    from aiokafka.consumer.fetcher import PartitionRecords

    PartitionRecords._consumer_record = _bare_record  # type: ignore[method-assign]


class Transport(faust_aiokafka.Transport):
    Consumer = ChunkingConsumer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _hand_over_bare_records()


drivers.TRANSPORTS.aliases.setdefault("streamflow", f"{__name__}:Transport")


_FETCH_MAX_WAIT_MS = 10
_FETCH_IDLE_MAX_WAIT_MS = 0
# False: librdkafka fetches the records (ChunkingConsumer._drain_librdkafka)
_AIOKAFKA_FETCHES = True
# The max wait of a fetch while a partition it reads has records past the consumer's position.
# Kafka answers such a fetch at once, whatever its max wait. The embedded broker instead cuts a
# fetch off at its max wait while scanning the partition's record batches, and answers EMPTY:
# with 5 ms, a backlog of 600,000 records (about 4,500 batches per partition) drew a storm of
# empty fetches, the broker at 100% of a core and chained at 685 records/s. With the wait
# raised while behind it ran at 16,800/s, the plain loop at 2,600-13,000 (benchmarks/README.md).
BEHIND_WAIT_MS = 500


def fetch_wait_ms(
    assignment: Any,
    base_ms: int,
    read_committed: bool,
    buffered: Container[Any] = (),
    empty_fetches: int = 0,
    idle_max_ms: int = 0,
) -> int:
    """A fetch's max wait: ``base_ms`` (kafka.fetch_max_wait_ms) when every partition it asks
    for has been read to the end the consumer knows of, else at least ``BEHIND_WAIT_MS``.

    That end is the high watermark (the last stable offset for a read_committed consumer), as
    the last fetch response gave it. Partitions the fetch does not ask for do not count: paused
    ones, and those with fetched records not yet handed over (``buffered``). Counting those
    would hold a fetch of caught-up partitions for the long wait on a broker that does not
    answer a parked fetch when data arrives.

    Caught up and idle: after ``empty_fetches`` fetches in a row that brought nothing, the
    wait doubles from the second on (``base_ms``, ``base_ms``, 2x, 4x...), up to
    ``idle_max_ms`` (kafka.fetch_idle_max_wait_ms; 0: never). A fetch that brings records sets
    it back to ``base_ms``. On the embedded broker, which answers a parked fetch only at its
    deadline, an idle consumer fetching every 5 ms made the broker and itself work for nothing
    (a later stage waiting on an earlier one, benchmarks/README.md)."""
    for tp in assignment.tps:
        st = assignment.state_value(tp)
        if st.paused or not st.has_valid_position or tp in buffered:
            continue
        end = st.lso if read_committed and st.lso is not None and st.lso >= 0 else st.highwater
        if end is not None and st.position < end:
            return max(base_ms, BEHIND_WAIT_MS)
    if empty_fetches > 1 and base_ms > 0 and idle_max_ms > base_ms:
        return min(idle_max_ms, base_ms << min(empty_fetches - 1, 16))
    return base_ms


def patch_fetch_wait(
    max_wait_ms: int, idle_max_wait_ms: int = 0, *, aiokafka_fetches: bool = True
) -> None:
    """faust's aiokafka driver hard-codes fetch_max_wait_ms=1500; use ours
    (kafka.fetch_max_wait_ms) when the consumer has caught up, up to ``idle_max_wait_ms``
    (kafka.fetch_idle_max_wait_ms) while its fetches keep coming back empty, and
    ``BEHIND_WAIT_MS`` while it is behind (``fetch_wait_ms``).

    On the embedded broker a parked fetch is not woken by new data, so every hop would cost
    up to ~750 ms otherwise.

    ``aiokafka_fetches=False`` (kafka.fetch_client = "librdkafka") keeps every assigned
    partition paused in aiokafka: it still resets positions, but never fetches.
    """
    global _FETCH_MAX_WAIT_MS, _FETCH_IDLE_MAX_WAIT_MS, _AIOKAFKA_FETCHES
    _FETCH_MAX_WAIT_MS = max_wait_ms
    _FETCH_IDLE_MAX_WAIT_MS = idle_max_wait_ms
    _AIOKAFKA_FETCHES = aiokafka_fetches
    cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(cls, "_streamflow_patched", False):
        return
    original = cls._create_worker_consumer

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = _FETCH_MAX_WAIT_MS
        return consumer

    cls._create_worker_consumer = create
    cls._streamflow_patched = True

    from aiokafka.consumer.fetcher import READ_COMMITTED, Fetcher

    actions = Fetcher._get_actions_per_node  # where aiokafka builds its fetch requests
    proc_fetch = Fetcher._proc_fetch_request  # one fetch: True when it brought records

    def get_actions_per_node(self: Any, assignment: Any) -> Any:
        if not _AIOKAFKA_FETCHES:
            for tp in assignment.tps:
                state = assignment.state_value(tp)
                if not state.paused:
                    state.pause()
        base = self.__dict__.setdefault("_streamflow_base_wait_ms", self._fetch_max_wait_ms)
        committed = self._isolation_level == READ_COMMITTED
        self._fetch_max_wait_ms = fetch_wait_ms(
            assignment,
            base,
            committed,
            self._records,
            self.__dict__.get("_streamflow_empty_fetches", 0),
            _FETCH_IDLE_MAX_WAIT_MS,
        )
        return actions(self, assignment)

    async def proc_fetch_request(self: Any, assignment: Any, node_id: Any, request: Any) -> Any:
        brought = await proc_fetch(self, assignment, node_id, request)
        self._streamflow_empty_fetches = (
            0 if brought else self.__dict__.get("_streamflow_empty_fetches", 0) + 1
        )
        return brought

    Fetcher._get_actions_per_node = get_actions_per_node  # type: ignore[method-assign]
    Fetcher._proc_fetch_request = proc_fetch_request  # type: ignore[method-assign]

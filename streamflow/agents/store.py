"""The store step: results (and dead letters) into Parquet, exactly once, without transactions.

Its own consumer group (``<prefix>-<pipeline>-store``) on the sink topic and the dead-letter
topic, so a slow disk never holds up scoring. Per source partition one file is open
(``store/tables.py:RowBuffer``); it is published (``store/files.py:Storage.publish``: whole or
not at all) when a rotation rule says so (``[store]``: rows, bytes, record time, wall-clock
age; an hour boundary or a schema change always), on a worker thread, one file at a time per
partition. A batch's future resolves only once every row it brought is in a published file,
so its offsets are acked, hence committed, only after the file is durable. A crash loses the
open files, whose offsets were never committed: they are read again.

What stops a repeat: on the first batch of a partition after an assignment, the step reads the
partition's high-water mark from the store (the last offset of its newest file) and skips every
offset at or below it, so a file published just before a crash, whose offsets were not yet
committed, is not written twice. On a revocation the open files of the revoked partitions are
published before the partitions go, so the next owner reads a high-water mark that covers
them. Repeats from upstream (the at-least-once pipeline re-scoring a record) are different
offsets of the sink topic: they are kept in ``results_all`` and removed by source coordinates
in the ``results`` view (``store/query.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from streamflow.agents.context import StageContext
from streamflow.errors import DecodeError
from streamflow.headers import dead_letter
from streamflow.kafka.transport import Chunk
from streamflow.metrics import observe_many
from streamflow.records import Rejected
from streamflow.store.files import Storage, StoreError, file_name, hour_folder, storage_for
from streamflow.store.tables import ResultDecoder, RowBuffer, dead_letter_row, result_row

log = logging.getLogger(__name__)

Key = tuple[str, int]  # (topic, partition)


class StoreHandler:
    stage: ClassVar[str] = "store"
    preferred: tuple[int, ...] = ()

    def __init__(self, ctx: StageContext, storage: Storage | None = None) -> None:
        self.ctx = ctx
        s = ctx.settings
        self.conf = s.store
        self.storage = storage if storage is not None else storage_for(s)
        self.storage.check()  # a wrong or unreachable store is named now, before joining
        self.source_topic = s.topics.scored
        self.source_topics = (s.topics.scored, s.topics.dlq)
        self.max_weight = s.batching.clean_max_batch
        # Futures resolve when a file is published, so many batches are out at once; the open
        # files' size bounds them (flush_size, flush_bytes per partition).
        self.max_in_flight = 1_000_000
        self.decoder = ResultDecoder(result_schema(s), s.output.format, _registry(s))
        self.open: dict[Key, RowBuffer] = {}
        self.waiter: dict[Key, asyncio.Future[None]] = {}  # resolves when the open file is out
        self.tail: dict[Key, asyncio.Future[None]] = {}  # the partition's last publish
        self.hwm: dict[Key, int] = {}  # offsets at or below are stored already
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="streamflow-store")
        self._ticker: asyncio.Task[None] | None = None
        self._order = asyncio.Lock()
        self._folders: dict[int, str] = {}  # hour -> its folder
        self.publishing: set[asyncio.Future[None]] = set()  # files rotated, not yet published
        self.closing = False  # the worker drains: each batch publishes what it opened at once

    @property
    def within(self) -> float:
        return 0.0

    def weight(self, record: Any) -> int:
        return 1

    def table_of(self, topic: str) -> str:
        return "dead_letters" if topic == self.ctx.settings.topics.dlq else "results"

    async def high_water(self, key: Key) -> int:
        """The partition's last stored offset, read from the store once per assignment."""
        if key not in self.hwm:
            table = self.table_of(key[0])
            self.hwm[key] = await self._retry(
                lambda: self.storage.high_water(table, *key), f"read {table} of {key[0]}[{key[1]}]"
            )
            if self.hwm[key] >= 0:
                log.info(
                    "store: %s[%d] resumes after offset %d (stored in %s)",
                    key[0], key[1], self.hwm[key], table,
                )  # fmt: skip
        return self.hwm[key]

    async def handle(self, chunks: Sequence[Chunk]) -> asyncio.Future[None]:
        """Batches are handed over pipelined: one at a time here, so each partition's rows enter
        its file in offset order even while a high-water mark is being read."""
        if self._ticker is None:
            self._ticker = asyncio.create_task(self.tick())
        async with self._order:
            return await self._handle(chunks)

    async def _handle(self, chunks: Sequence[Chunk]) -> asyncio.Future[None]:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[None]] = []
        rejected: list[Rejected] = []
        n = 0
        for chunk in chunks:
            key = (chunk.topic, chunk.partition)
            hwm = await self.high_water(key)
            if chunk.revoked:  # revoked meanwhile (``revoked`` waits for this batch): not ours
                continue
            table = self.table_of(chunk.topic)
            last: asyncio.Future[None] | None = None
            for msg in chunk.records:
                if msg.offset <= hwm:
                    continue  # in a file published before a crash or a rebalance
                n += 1
                if table == "results":
                    try:
                        record, schema = self.decoder.decode(msg.value)
                    except DecodeError as exc:
                        rejected.append(self._rejected(chunk, msg, exc))
                        continue
                    row = result_row(record, msg, chunk.partition)
                    event_ms = _event_ms(record, self.ctx.settings.input.timestamp_field, msg)
                else:
                    row, event_ms = dead_letter_row(msg, chunk.partition)
                    schema = None
                size = len(msg.value or b"") + len(msg.key or b"") + 64
                last = self._add(key, table, row, schema, msg.offset, event_ms, size)
            if last is not None:
                waits.append(last)
            buf = self.open.get(key)
            if buf is not None:
                buf.seal()  # the chunk's rows as columns: the dicts go
            chunk.slim()  # held until the file is published: keep only what acking reads
            await self._backpressure()
        if self.closing:  # handed over before the drain's flush, handled after it
            for key in {(c.topic, c.partition) for c in chunks}:
                self.rotate(key)
        if rejected:
            dlq = self.ctx.settings.topics.dlq
            waits.append(self.ctx.send([dead_letter(r, dlq) for r in rejected]))
        self.ctx.account(n - len(rejected), rejected, started, n)
        self.ctx.metrics.store_open_files.labels(self.ctx.settings.name).set(len(self.open))
        if not waits:
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done
        return asyncio.ensure_future(_all(waits))

    def _add(
        self,
        key: Key,
        table: str,
        row: dict[str, Any],
        schema: dict[str, Any] | None,
        offset: int,
        event_ms: int,
        size: int,
    ) -> asyncio.Future[None]:
        """Add one row to the partition's open file (rotating first when the rules say); the
        future of the file that holds it."""
        c = self.conf
        hour = event_ms // 3_600_000
        folder = self._folders.get(hour)
        if folder is None:
            folder = self._folders[hour] = hour_folder(event_ms)
        buf = self.open.get(key)
        if buf is not None and (
            buf.folder != folder
            or buf.schema is not schema
            or abs(event_ms - buf.first_ms) >= c.rotate_interval_ms
        ):
            self.rotate(key)
            buf = None
        if buf is None:
            buf = self.open[key] = RowBuffer(
                table, key[0], key[1], folder, schema, time.monotonic()
            )
            self.waiter[key] = asyncio.get_running_loop().create_future()
        buf.add(row, offset, event_ms, size)
        fut = self.waiter[key]
        if buf.count >= c.flush_size or buf.bytes >= c.flush_bytes:
            self.rotate(key)
        return fut

    async def _backpressure(self) -> None:
        """Files rotated and not yet published are rows in memory: when more wait than there are
        open files (or 4), stop taking records until one is out. A store slower than Kafka then
        holds consumption back instead of filling memory."""
        while len(self.publishing) > max(4, len(self.open)):
            await asyncio.wait(list(self.publishing), return_when=asyncio.FIRST_COMPLETED)

    def rotate(self, key: Key) -> None:
        """Publish the partition's open file (after its previous one), in the background."""
        buf, waiter = self.open.pop(key, None), self.waiter.pop(key, None)
        if buf is None or waiter is None:
            return
        previous = self.tail.get(key)
        task = self.tail[key] = asyncio.ensure_future(self._publish(buf, waiter, previous))
        self.publishing.add(task)
        task.add_done_callback(self.publishing.discard)

    async def _publish(
        self, buf: RowBuffer, waiter: asyncio.Future[None], previous: asyncio.Future[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.shield(previous)
        c, m, s = self.conf, self.ctx.metrics, self.ctx.settings
        rel = f"{buf.table}/{buf.folder}/{file_name(buf.topic, buf.partition, buf.first_offset)}"

        def write() -> int:
            import pyarrow.parquet as pq

            table = buf.to_table()
            meta = {f"streamflow.{k}": v for k, v in buf.metadata().items()}
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})

            def to(f: Any) -> None:
                pq.write_table(table, f, compression=c.compression, row_group_size=c.row_group_rows)

            try:
                return self.storage.publish(rel, to)
            finally:
                import pyarrow as pa

                pa.default_memory_pool().release_unused()  # the file's buffers, back to the OS

        try:
            size = await self._retry(write, f"publish {rel}")
        except asyncio.CancelledError:
            waiter.cancel()
            raise
        self.hwm[(buf.topic, buf.partition)] = max(
            self.hwm.get((buf.topic, buf.partition), -1), buf.last_offset
        )
        labels = (s.name, buf.table)
        m.store_rows.labels(*labels).inc(buf.count)
        m.store_bytes.labels(*labels).inc(size)
        m.store_files.labels(*labels).inc()
        now_ms = time.time() * 1000
        observe_many(m.store_delay.labels(*labels), (now_ms - buf.kafka_timestamps_ms()) / 1000)
        if not waiter.done():
            waiter.set_result(None)

    async def _retry(self, fn: Any, what: str) -> Any:
        """``fn()`` on a worker thread until it works: a store that refuses (a full disk, S3
        down) is waited for with backoff, and nothing is committed meanwhile."""
        c, loop = self.conf, asyncio.get_running_loop()
        wait = c.retry_backoff_s
        while True:
            try:
                return await loop.run_in_executor(self.pool, fn)
            except StoreError as exc:
                self.ctx.metrics.store_errors.labels(self.ctx.settings.name).inc()
                log.error("store: %s failed, retrying in %.1f s: %s", what, wait, exc)
                await asyncio.sleep(wait)
                wait = min(wait * 2, c.retry_backoff_max_s)

    async def tick(self) -> None:
        """Publish the open files older than ``rotate_schedule_interval_ms``: quiet ones land."""
        age_s = self.conf.rotate_schedule_interval_ms / 1000
        while True:
            await asyncio.sleep(min(1.0, age_s / 4))
            now = time.monotonic()
            for key in [k for k, b in self.open.items() if now - b.opened_s >= age_s]:
                self.rotate(key)
            self.ctx.metrics.store_open_files.labels(self.ctx.settings.name).set(len(self.open))

    async def flush(self, keys: Sequence[Key] | None = None) -> None:
        """Publish the open files (of ``keys``, else all) and wait until they are out."""
        for key in list(self.open if keys is None else keys):
            self.rotate(key)
        tails = [self.tail[k] for k in (self.tail if keys is None else keys) if k in self.tail]
        if tails:
            await asyncio.gather(*tails)

    async def drain(self) -> None:
        """The worker stops: publish every open file now, and from now on publish what each
        batch still handed over opens as soon as it is handled, so the drain waits for no
        wall-clock rotation."""
        self.closing = True
        await self.flush()

    async def revoked(self, keys: Sequence[Key]) -> None:
        """Partitions leaving this worker: publish their open files now (their next owner reads
        the high-water mark after this), and read it again if they come back.

        Their chunks are revoked before this runs (``Chunk.revoked``), and the batch being
        handled, if any, is finished first (``_order``): it adds no row of a revoked partition
        after its high-water mark is read, so no file of a revoked partition is opened after
        this flush, to be published later over what the next owner writes."""
        async with self._order:
            await self.flush([k for k in keys if k in self.open or k in self.tail])
            for key in keys:
                self.hwm.pop(key, None)
                self.tail.pop(key, None)

    def _rejected(self, chunk: Chunk, msg: Any, exc: DecodeError) -> Rejected:
        return Rejected(
            stage=self.stage,
            error_class=DecodeError.__name__,
            reason=exc.reason,
            code=exc.code,
            source_topic=chunk.topic,
            source_partition=chunk.partition,
            source_offset=msg.offset,
            key=msg.key,
            value=msg.value,
            ingest_ms=int(msg.timestamp),
        )


async def _all(waits: Sequence[asyncio.Future[None]]) -> None:
    for w in waits:
        await w


def _event_ms(record: dict[str, Any], field: str, msg: Any) -> int:
    v = record.get(field)
    return int(v) if isinstance(v, int) else int(msg.timestamp)


def result_schema(settings: Any) -> dict[str, Any]:
    """The schema results are written with: ``output.schema``, else the generated one (which
    needs the model's outputs: the model is loaded on the CPU once, at start-up)."""
    import json
    from pathlib import Path

    if settings.output.schema:
        return dict(json.loads(Path(settings.output.schema).read_text()))
    from streamflow.inference.record import generated_schema

    return generated_schema(settings)


def _registry(settings: Any) -> Any:
    if settings.output.format != "avro":
        return None
    from streamflow.codecs import schema_registry

    return schema_registry(settings)

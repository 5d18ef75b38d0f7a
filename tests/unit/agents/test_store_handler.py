"""The store step's own rules, on a real local store (tmp_path) with the Kafka side faked: a
batch's future resolves only once its rows are in a published file; files rotate by rows, by
hour, by wall-clock age; offsets at or below the stored high-water mark are skipped; a result
that does not decode is dead-lettered; a store that refuses is retried and nothing resolves
meanwhile."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import fastavro
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from streamflow.agents.context import StageContext
from streamflow.agents.store import StoreHandler
from streamflow.codecs import _strip_logical_types
from streamflow.kafka.transport import Chunk, Lease
from streamflow.metrics import Metrics
from streamflow.records import OutMessage
from streamflow.settings import with_overrides
from streamflow.settings.loading import load_settings
from streamflow.store.files import Storage, StoreError
from tests.conftest import PIPELINE, ROOT

SCHEMA = json.loads((ROOT / "schemas/scored_result.avsc").read_text())
HOUR_MS = 3_600_000
T0 = 1_764_000_000_000 - 1_764_000_000_000 % HOUR_MS  # on an hour boundary


class Msg:
    def __init__(self, offset: int, value: bytes, ts: int, headers: Any = ()) -> None:
        self.offset, self.value, self.timestamp, self.key = offset, value, ts, b"k"
        self.headers = headers


def result(offset: int, event_ms: int) -> bytes:
    buf = io.BytesIO()
    rec = {"device_id": f"d{offset}", "timestamp": event_ms, "score": 0.5, "label": "normal",
           "model_name": "m", "model_version": "1", "latency_ms": 1.0}  # fmt: skip
    fastavro.schemaless_writer(buf, fastavro.parse_schema(_strip_logical_types(SCHEMA)), rec)
    return buf.getvalue()


def chunk(first: int, n: int, event_ms: int = T0, partition: int = 0) -> Chunk:
    headers = lambda o: (("sf-source-topic", b"telemetry.raw"), ("sf-source-partition", b"0"),  # noqa: E731
                         ("sf-source-offset", str(o).encode()))  # fmt: skip
    recs = [Msg(o, result(o, event_ms), event_ms, headers(o)) for o in range(first, first + n)]
    return Chunk("telemetry.scored", partition, recs, n)


class Sent:
    def __init__(self) -> None:
        self.messages: list[OutMessage] = []

    def send(self, messages: list[OutMessage]) -> asyncio.Future[None]:
        self.messages += messages
        f: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        f.set_result(None)
        return f


def handler(tmp_path: Path, storage: Storage | None = None, **store: Any) -> StoreHandler:
    s = load_settings(PIPELINE, environ={})
    s = with_overrides(s, store={"path": str(tmp_path), "rotate_schedule_interval_ms": 600_000,
                                 "retry_backoff_s": 0.01, **store})  # fmt: skip
    ctx = StageContext(s, "store", Metrics.create(CollectorRegistry()), None)  # type: ignore[arg-type]
    sent = Sent()
    ctx.send = sent.send  # type: ignore[method-assign]
    h = StoreHandler(ctx, storage)
    h.sent = sent  # type: ignore[attr-defined]
    return h


def stored(tmp_path: Path) -> list[tuple[str, list[int]]]:
    out = []
    for p in sorted(tmp_path.glob("results/**/*.parquet")):
        out.append((str(p.relative_to(tmp_path)), pq.read_table(p)["kafka_offset"].to_pylist()))
    return out


def test_a_batch_resolves_only_when_its_file_is_published_and_files_rotate_by_rows(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        h = handler(tmp_path, flush_size=10)
        first = await h.handle([chunk(0, 6)])
        await asyncio.sleep(0.05)
        assert not first.done() and stored(tmp_path) == []  # 6 rows buffered, nothing durable
        second = await h.handle([chunk(6, 6)])  # the 10th row publishes the first file
        await first
        assert not second.done()  # its last 2 rows wait in the next file
        await h.flush()
        await second

    asyncio.run(go())
    files = stored(tmp_path)
    assert [offsets for _, offsets in files] == [list(range(10)), [10, 11]]
    assert (
        files[0][0]
        == "results/date=2025-11-24/hour=16/telemetry.scored+0+0000000000000000000.parquet"
    )


def test_an_hour_boundary_starts_a_new_file_in_its_folder(tmp_path: Path) -> None:
    async def go() -> None:
        h = handler(tmp_path)
        await h.handle([chunk(0, 3, T0 + HOUR_MS - 1), chunk(3, 2, T0 + HOUR_MS)])
        await h.flush()

    asyncio.run(go())
    assert [(p.split("/")[2], o) for p, o in stored(tmp_path)] == [
        ("hour=16", [0, 1, 2]), ("hour=17", [3, 4])
    ]  # fmt: skip


def test_a_quiet_partition_is_published_after_the_wall_clock_age(tmp_path: Path) -> None:
    async def go() -> None:
        h = handler(tmp_path, rotate_schedule_interval_ms=200)
        f = await h.handle([chunk(0, 3)])
        await asyncio.wait_for(f, 3.0)  # no more records: the ticker publishes it

    asyncio.run(go())
    assert [o for _, o in stored(tmp_path)] == [[0, 1, 2]]


def test_offsets_at_or_below_the_stored_high_water_mark_are_skipped(tmp_path: Path) -> None:
    async def go(first: int, n: int) -> None:
        h = handler(tmp_path)
        await h.handle([chunk(first, n)])
        await h.flush()

    asyncio.run(go(0, 5))
    asyncio.run(go(3, 5))  # a restart re-reads 3..4 (published, not committed): skipped
    assert [o for _, o in stored(tmp_path)] == [[0, 1, 2, 3, 4], [5, 6, 7]]


def test_a_batch_in_flight_across_a_revocation_adds_no_row_of_the_revoked_partition(
    tmp_path: Path,
) -> None:
    """The old owner is handling a batch (waiting for a high-water mark) when partition 0 is
    revoked: the rest of that batch must not open a file for partition 0 after the revocation's
    flush, or that file would be published later over what the new owner writes."""
    import threading

    gate = threading.Event()

    class SlowToRead(Storage):
        def high_water(self, table: str, topic: str, partition: int) -> int:
            if partition == 1:
                gate.wait(5.0)  # the batch is mid-way when the revocation comes
            return super().high_water(table, topic, partition)

    async def go() -> list[Chunk]:
        old, new = handler(tmp_path, SlowToRead(str(tmp_path))), handler(tmp_path)
        lease = Lease()
        first = chunk(0, 5)
        first.lease = lease
        await old.handle([first])  # 0..4 in partition 0's open file
        late = chunk(5, 5)
        late.lease = lease
        in_flight = asyncio.ensure_future(old.handle([chunk(0, 2, partition=1), late]))
        await asyncio.sleep(0.05)
        lease.revoked = True  # what ChunkBuffer.discard does, before the store's own hook
        leaving = asyncio.ensure_future(old.revoked([("telemetry.scored", 0)]))
        await asyncio.sleep(0.05)
        gate.set()
        await leaving  # 0..4 published: the new owner reads 4 as the high-water mark
        await in_flight
        assert ("telemetry.scored", 0) not in old.open
        written = await new.handle([chunk(0, 15)])  # the new owner: 5..14 (0..4 are stored)
        await new.flush()
        await written
        await old.flush()  # the old owner's remaining files (partition 1)
        return [first, late]

    first, late = asyncio.run(go())
    assert first.revoked and late.revoked  # neither is acked: the new owner's commits count
    rows = [o for p, offsets in stored(tmp_path) if "+0+" in p for o in offsets]
    assert sorted(rows) == list(range(15))  # each offset once


def test_a_batch_handled_after_the_drain_began_publishes_at_once(tmp_path: Path) -> None:
    """The agent took a batch just before SIGTERM; the drain's flush comes while it is being
    handled. Its rows go out without waiting for the wall-clock rotation (600 s here)."""
    import threading

    gate = threading.Event()

    class SlowToRead(Storage):
        def high_water(self, table: str, topic: str, partition: int) -> int:
            gate.wait(5.0)
            return super().high_water(table, topic, partition)

    async def go() -> None:
        h = handler(tmp_path, SlowToRead(str(tmp_path)))
        taken = asyncio.ensure_future(h.handle([chunk(0, 4)]))
        await asyncio.sleep(0.05)
        await h.drain()  # nothing open yet
        gate.set()
        await asyncio.wait_for(await taken, 5.0)

    asyncio.run(go())
    assert [o for _, o in stored(tmp_path)] == [[0, 1, 2, 3]]


def test_a_result_that_does_not_decode_is_dead_lettered_and_the_rest_stored(
    tmp_path: Path,
) -> None:
    async def go() -> StoreHandler:
        h = handler(tmp_path)
        c = chunk(0, 3)
        c.records[1].value = b"\x01\x02"
        await h.handle([c])
        await h.flush()
        return h

    h = asyncio.run(go())
    assert [o for _, o in stored(tmp_path)] == [[0, 2]]
    (dead,) = h.sent.messages  # type: ignore[attr-defined]
    headers = dict(dead.headers or [])
    assert headers["sf-reason-code"] == b"invalid_avro" and headers["sf-stage"] == b"store"


def test_a_store_that_refuses_is_retried_and_nothing_resolves_meanwhile(tmp_path: Path) -> None:
    class Flaky(Storage):
        fails = 3

        def publish(self, rel: str, write: Any) -> int:
            if self.fails:
                self.fails -= 1
                raise StoreError("store: disk full (test)")
            return super().publish(rel, write)

    async def go() -> None:
        storage = Flaky(str(tmp_path))
        h = handler(tmp_path, storage, flush_size=3)
        f = await h.handle([chunk(0, 3)])
        await asyncio.sleep(0.005)
        assert not f.done()
        await asyncio.wait_for(f, 5.0)
        assert storage.fails == 0

    asyncio.run(go())
    assert [o for _, o in stored(tmp_path)] == [[0, 1, 2]]
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_a_file_holds_its_offsets_and_schema_in_its_metadata(tmp_path: Path) -> None:
    async def go() -> None:
        h = handler(tmp_path)
        await h.handle([chunk(5, 4, partition=2)])
        await h.flush()

    asyncio.run(go())
    storage = Storage(str(tmp_path))
    (rng,) = storage.ranges("results")
    assert (rng.topic, rng.partition, rng.first_offset, rng.last_offset, rng.rows) == (
        "telemetry.scored", 2, 5, 8, 4
    )  # fmt: skip
    assert storage.high_water("results", "telemetry.scored", 2) == 8
    assert json.loads(storage.metadata(rng.path)["schema"])["fields"][0]["name"] == "device_id"
    table = pq.read_table(tmp_path / rng.path)
    assert table["sf_source_offset"].to_pylist() == [5, 6, 7, 8]
    assert str(table.schema.field("timestamp").type) == "timestamp[ms, tz=UTC]"


@pytest.mark.parametrize("missing", [""])
def test_the_store_needs_a_path(tmp_path: Path, missing: str) -> None:
    from streamflow.errors import ConfigError

    s = load_settings(PIPELINE, environ={})
    ctx = StageContext(replace(s), "store", Metrics.create(CollectorRegistry()), None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="store.path"):
        StoreHandler(ctx)


def test_a_result_schema_change_starts_a_new_file(tmp_path: Path) -> None:
    """Results in the Confluent wire format: a writer schema with one more field (the model's
    new version added an output) starts a file of its own, with that schema in its metadata."""
    import struct

    from streamflow.codecs import registry_for

    url = f"mock://store-schema-{tmp_path.name}"
    registry = registry_for(url)
    v2 = {**SCHEMA, "fields": [*SCHEMA["fields"], {"name": "p_fan", "type": "double"}]}
    ids = [registry.register("a-value", SCHEMA), registry.register("b-value", v2)]

    def wire(offset: int, version: int) -> bytes:
        rec = {"device_id": "d", "timestamp": T0, "score": 0.5, "label": "normal",
               "model_name": "m", "model_version": str(version + 1), "latency_ms": 1.0,
               "p_fan": 0.25}  # fmt: skip
        schema = fastavro.parse_schema(_strip_logical_types([SCHEMA, v2][version]))
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, rec)
        return struct.pack(">bI", 0, ids[version]) + buf.getvalue()

    async def go() -> None:
        h = handler(tmp_path)
        h.decoder.registry = registry
        recs = [Msg(o, wire(o, 0 if o < 3 else 1), T0) for o in range(5)]
        await h.handle([Chunk("telemetry.scored", 0, recs, 5)])
        await h.flush()

    asyncio.run(go())
    storage = Storage(str(tmp_path))
    ranges = storage.ranges("results")
    assert [(r.first_offset, r.last_offset) for r in ranges] == [(0, 2), (3, 4)]
    second = pq.read_table(tmp_path / ranges[1].path)
    assert second["p_fan"].to_pylist() == [0.25, 0.25]
    assert "p_fan" in storage.metadata(ranges[1].path)["schema"]

"""The store step on S3: the real pipeline lands every result and dead letter in Parquet on an
S3-compatible server (moto's server on loopback, the stand-in for S3: ``tests/s3server.py``),
each exactly once with its source coordinates, and ``streamflow query`` reads them back there.

The secret key reaches the stage processes through their environment
(``STREAMFLOW_STORE_S3_SECRET_ACCESS_KEY``), never their command line, and shows in no log.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamflow.collectors.produce import RawProducer, run_synthetic
from streamflow.store.files import Storage, storage_for
from streamflow.store.query import open_store
from tests.integration.helpers import Msg, read_topic, running_pipeline, wait_for

if TYPE_CHECKING:
    from tests.s3server import S3Server

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.s3server"]  # the s3_server fixture
N = 2000
SECRET_ENV = "STREAMFLOW_STORE_S3_SECRET_ACCESS_KEY"


def stored(storage: Storage, table: str) -> pa.Table:
    """Every published file of ``table``, read back from the store."""
    tables = [
        pq.read_table(storage.full(rel), filesystem=storage.fs) for rel in storage.files(table)
    ]
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def coordinates(table: pa.Table) -> list[tuple[int, int]]:
    if table.num_rows == 0:
        return []
    partitions, offsets = table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist()
    return list(zip(partitions, offsets, strict=True))


def source_of(m: Msg) -> tuple[str, int, int]:
    h = m.headers
    return (
        h["sf-source-topic"].decode(),
        int(h["sf-source-partition"]),
        int(h["sf-source-offset"]),
    )


def test_results_and_dead_letters_land_in_s3_exactly_once(
    pipeline_overrides: dict[str, str],
    bootstrap: str,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = s3_server.prefix()
    overrides = {
        **pipeline_overrides,
        "runtime.topology": "chained",  # two processes (chained, store) on a small machine
        "store.path": uri,
        "store.s3_endpoint": s3_server.endpoint,
        "store.s3_region": s3_server.region,
        "store.s3_access_key_id": s3_server.access_key_id,
        "store.rotate_schedule_interval_ms": "1000",
    }
    secret = {SECRET_ENV: s3_server.secret_access_key}
    monkeypatch.setenv(SECRET_ENV, s3_server.secret_access_key)  # the stage processes' env
    with running_pipeline(overrides, environ=secret) as (settings, pipe):
        assert s3_server.secret_access_key not in " ".join(pipe.argv_settings)
        t = settings.topics
        stats = run_synthetic(RawProducer(settings, bootstrap), rate=0, records=N, seed=7)
        assert stats.produced == N and stats.failed == 0

        def accounted() -> tuple[list[Msg], list[Msg]] | None:
            scored = read_topic(bootstrap, t.scored, idle_s=0.5)
            dead = read_topic(bootstrap, t.dlq, idle_s=0.5)
            sources = {source_of(m) for m in scored} | {source_of(m) for m in dead}
            return (scored, dead) if len(sources) >= N else None

        topics = wait_for(accounted, timeout_s=120, interval_s=1)
        assert topics, f"not every record came out; logs in {pipe.log_dir}"
        scored, dead = topics
        assert dead, "the synthetic input's faults should have been dead-lettered"
        storage = storage_for(settings)

        def landed() -> bool:
            return set(coordinates(stored(storage, "results"))) >= {
                (m.partition, m.offset) for m in scored
            } and set(coordinates(stored(storage, "dead_letters"))) >= {
                (m.partition, m.offset) for m in dead
            }

        assert wait_for(landed, timeout_s=60, interval_s=1), f"logs in {pipe.log_dir}"
    results, dead_letters = stored(storage, "results"), stored(storage, "dead_letters")

    # every scored result once, from the offset it was read at, with its source coordinates
    at = {(m.partition, m.offset): m for m in scored}
    assert Counter(coordinates(results)) == Counter(at.keys())
    rows = results.select(
        [
            "kafka_partition",
            "kafka_offset",
            "sf_source_topic",
            "sf_source_partition",
            "sf_source_offset",
            "device_id",
        ]  # fmt: skip
    ).to_pylist()
    for r in rows:
        m = at[(r["kafka_partition"], r["kafka_offset"])]
        assert (r["sf_source_topic"], r["sf_source_partition"], r["sf_source_offset"]) == (
            source_of(m)
        )
        assert r["device_id"].encode() == m.key
    assert {r["sf_source_topic"] for r in rows} == {t.raw}

    # every dead letter once, with why and where from
    dl = {(m.partition, m.offset): m for m in dead}
    assert Counter(coordinates(dead_letters)) == Counter(dl.keys())
    for r in dead_letters.to_pylist():
        m = dl[(r["kafka_partition"], r["kafka_offset"])]
        assert (r["sf_source_topic"], r["sf_source_partition"], r["sf_source_offset"]) == (
            source_of(m)
        )
        assert r["reason_code"] == m.headers["sf-reason-code"].decode()
        assert r["value"] == m.value

    # nothing but published files under the prefix, no upload left begun, the secret in no log
    names = s3_server.keys(uri)
    assert names and all(n.endswith(".parquet") for n in names)
    assert s3_server.pending_uploads(uri) == []
    for log in Path(pipe.log_dir).glob("*"):
        if log.is_file():
            assert s3_server.secret_access_key not in log.read_text(errors="replace"), log.name

    # the query path reads the same store on S3 (DuckDB over s3fs)
    store = open_store(settings)
    try:
        ((all_rows, by_source, dead_rows),) = store.query(
            "SELECT (SELECT count(*) FROM results_all), (SELECT count(*) FROM results), "
            "(SELECT count(*) FROM dead_letters)"
        ).fetchall()
    finally:
        store.close()
    assert (all_rows, by_source, dead_rows) == (
        len(scored), len({source_of(m) for m in scored}), len(dead)
    )  # fmt: skip

"""Exactly once into storage: 100,000 records at a steady rate while the store worker is
SIGKILLed three times and the inference worker once, at random moments, and a second store
worker joins the group and leaves it again (two rebalances).

A killed store worker loses its open files (their offsets were never committed) and its
replacement reads them again; a file it published just before dying, whose offsets were not yet
committed, is skipped by the high-water mark read back from the store. A killed inference
worker makes the pipeline score some records twice: those are new offsets of the sink topic,
stored once each in ``results_all`` and collapsed by source coordinates in ``results``.
Checked: every offset of the sink topic is stored exactly once, every dead letter exactly once,
the de-duplicated view holds one row per scored input record, the offset ranges of every
partition have no gap and no overlap, and a reader polling the store all along never met a file
it could not read whole. ``STREAMFLOW_CHAOS_SEED`` replays a run.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from streamflow.collectors.produce import ProduceStats, RawProducer, run_synthetic
from streamflow.store.files import Storage
from streamflow.supervisor import child_command
from tests.integration.helpers import argv_for, read_topic, running_pipeline, wait_for

pytestmark = pytest.mark.integration
N = 100_000
RATE = 2500  # records/s: 40 s of input, room for four kills and restarts


def offsets(store: Path, table: str) -> list[tuple[int, int]]:
    """(kafka_partition, kafka_offset) of every stored row of ``table``."""
    out: list[tuple[int, int]] = []
    for f in store.glob(f"{table}/**/*.parquet"):
        t = pq.read_table(f, columns=["kafka_partition", "kafka_offset"])
        out += zip(t["kafka_partition"].to_pylist(), t["kafka_offset"].to_pylist(), strict=True)
    return out


class Reader(threading.Thread):
    """Reads every visible file of the store, whole, over and over: none may be half-written."""

    def __init__(self, store: Path) -> None:
        super().__init__(daemon=True)
        self.store, self.stop, self.reads, self.broken = store, threading.Event(), 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            for f in list(self.store.glob("*/**/*.parquet")):
                try:
                    pq.read_table(f)
                    self.reads += 1
                except Exception as exc:  # a torn file would fail here
                    self.broken.append(f"{f}: {exc}")
            time.sleep(0.2)


def test_the_store_holds_every_result_exactly_once_through_kills(
    pipeline_overrides: dict[str, str], bootstrap: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("STREAMFLOW_CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    store = tmp_path / "store"
    overrides = {
        **pipeline_overrides,
        "runtime.topology": "stages",
        "store.path": str(store),
        "store.flush_size": "4000",  # many files, so kills land between and during publishes
        "store.rotate_schedule_interval_ms": "2000",
    }
    with running_pipeline(overrides) as (settings, pipe):
        assert pipe.stages is not None
        stats: list[ProduceStats] = []
        raw = RawProducer(settings, bootstrap)
        feeder = threading.Thread(
            target=lambda: stats.append(run_synthetic(raw, rate=RATE, records=N, seed=seed))
        )
        reader = Reader(store)
        feeder.start()
        reader.start()
        # A second store worker joins the group for a while (two rebalances: its partitions'
        # open files are published by their old owner before it takes them, and back).
        with socket.socket() as sock:  # its own metrics port
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with (tmp_path / "second-store.log").open("wb") as log:
            second = subprocess.Popen(
                child_command(
                    "store", argv_for({**overrides, "metrics.port": str(port)}), bootstrap
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        victims = ["store", "store", "store", "inference"]
        rng.shuffle(victims)
        kills: list[tuple[float, str]] = []
        started = time.monotonic()
        for stage in victims:
            time.sleep(rng.uniform(2.0, 6.0))  # a random moment of a running stream
            index = next(i for i, (s, _) in enumerate(pipe.stages.procs) if s == stage)
            assert pipe.stages.restart(index, signal.SIGKILL) == -signal.SIGKILL
            kills.append((round(time.monotonic() - started, 1), stage))
            assert pipe.wait_consuming(90), f"{stage} did not come back; logs in {pipe.log_dir}"
        second.send_signal(signal.SIGTERM)  # drains: publishes its open files, commits, leaves
        assert second.wait(60) == 0, (tmp_path / "second-store.log").read_text()[-2000:]
        feeder.join()
        assert stats[0].produced == N and stats[0].failed == 0
        t = settings.topics
        scored_msgs = read_topic(bootstrap, t.scored, idle_s=1.0)
        scored = {(m.partition, m.offset) for m in scored_msgs}
        sources = {
            (m.headers["sf-source-partition"], m.headers["sf-source-offset"]) for m in scored_msgs
        }
        dead = {(m.partition, m.offset) for m in read_topic(bootstrap, t.dlq, idle_s=1.0)}

        def landed() -> bool:
            return (
                set(offsets(store, "results")) >= scored
                and set(offsets(store, "dead_letters")) >= dead
            )

        assert wait_for(landed, timeout_s=180, interval_s=2), f"logs in {pipe.log_dir}"
        reader.stop.set()
        reader.join()
    stored, stored_dead = offsets(store, "results"), offsets(store, "dead_letters")
    glob = f"read_parquet('{store}/results/**/*.parquet', hive_partitioning = true)"
    con = duckdb.connect()
    ((distinct,),) = con.execute(
        f"SELECT count(DISTINCT (sf_source_partition, sf_source_offset)) FROM {glob}"
    ).fetchall()
    repeats = len(stored) - distinct
    print(
        f"\nstore chaos (seed {seed}): {N} records, kills {kills}; results_all {len(stored)} rows "
        f"(= sink topic offsets {len(scored)}), results {len(sources)} (upstream repeats "
        f"{repeats}), dead letters {len(stored_dead)}; reader read {reader.reads} files whole"
    )
    assert len(stored) == len(set(stored)) and set(stored) == scored  # each offset once
    assert len(stored_dead) == len(set(stored_dead)) and set(stored_dead) == dead
    assert distinct == len(sources)  # one per scored input record
    assert not reader.broken, reader.broken[:3]
    for table in ("results", "dead_letters"):  # no gap, no overlap, in any partition
        by_partition: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for r in Storage(str(store)).ranges(table):
            by_partition.setdefault((r.topic, r.partition), []).append(
                (r.first_offset, r.last_offset)
            )
        for key, ranges in by_partition.items():
            ranges.sort()
            assert ranges[0][0] == 0, (table, key, ranges[:2])
            for (_, last), (first, _) in zip(ranges, ranges[1:], strict=False):
                assert first == last + 1, (table, key, last, first)
    assert Counter(s for _, s in kills)["store"] == 3

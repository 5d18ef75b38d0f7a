"""Stores built in tmp_path in the store step's exact layout: rows through ``RowBuffer`` and
files through ``Storage.publish``, with the footer metadata the step writes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from streamflow.settings import Settings, with_overrides
from streamflow.settings.loading import load_settings
from streamflow.store.files import Storage, file_name
from streamflow.store.tables import RowBuffer
from tests.conftest import PIPELINE, ROOT

SCHEMA = json.loads((ROOT / "schemas/scored_result.avsc").read_text())
SCORED = "telemetry.scored"
RAW = "telemetry.raw"
H7 = "date=2026-12-01/hour=07"
H8 = "date=2026-12-01/hour=08"
NEXT_DAY = "date=2026-12-02/hour=00"
MS = {H7: 1_796_108_400_000, H8: 1_796_112_000_000, NEXT_DAY: 1_796_169_600_000}


def settings_for(store: Path | str, pipeline: Path = PIPELINE, **store_keys: Any) -> Settings:
    s = load_settings(pipeline, environ={})
    return with_overrides(s, store={"path": str(store), **store_keys})


def result(
    source_offset: int | None,
    score: float,
    folder: str = H7,
    version: str = "1.0.0",
    source_partition: int = 0,
) -> dict[str, Any]:
    """A telemetry result row (its store columns but the Kafka ones, which ``publish`` adds)."""
    return {
        "device_id": f"d{source_offset}",
        "timestamp": MS[folder] + (source_offset or 0) * 1000,
        "score": score,
        "label": "anomaly" if score >= 0.5 else "normal",
        "model_name": "telemetry-anomaly",
        "model_version": version,
        "latency_ms": 2.0,
        "sf_source_topic": RAW if source_offset is not None else None,
        "sf_source_partition": source_partition if source_offset is not None else None,
        "sf_source_offset": source_offset,
    }


def publish(
    storage: Storage,
    folder: str,
    rows: Sequence[dict[str, Any]],
    first_offset: int,
    *,
    partition: int = 0,
    table: str = "results",
    topic: str = SCORED,
    schema: dict[str, Any] | None = None,
) -> str:
    """One file of ``rows`` at consecutive offsets from ``first_offset``, as the store step
    publishes it; its path under the store."""
    buf = RowBuffer(
        table, topic, partition, folder, (schema or SCHEMA) if table == "results" else None, 0.0
    )
    for i, row in enumerate(rows):
        offset = first_offset + i
        full = {**row, "kafka_partition": partition, "kafka_offset": offset}
        full["kafka_timestamp"] = MS[folder] + offset
        buf.add(full, offset, MS[folder], 100)
    rel = f"{table}/{folder}/{file_name(topic, partition, buf.first_offset)}"
    arrow = buf.to_table()
    meta = {f"streamflow.{k}": v for k, v in buf.metadata().items()}
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **meta})
    storage.publish(rel, lambda f: pq.write_table(arrow, f, compression="zstd"))
    return rel


def dead_letter(source_offset: int, stage: str = "clean", topic: str = RAW) -> dict[str, Any]:
    return {
        "stage": stage,
        "error_class": "DecodeError",
        "reason_code": "invalid_avro",
        "reason": "not Avro",
        "sf_source_topic": topic,
        "sf_source_partition": 0,
        "sf_source_offset": source_offset,
        "ingest_ms": MS[H7],
        "key": b"k",
        "value": b"\xff\x00bad",
    }


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Two days, three hours, two partitions, one repeat, two dead letters:

    partition 0: offsets 0-4 (hour 7, sources 100-104), 5-9 (hour 7, sources 105-108 and a
    repeat of 104), 10-14 (hour 8, model 1.1.0); partition 1: offsets 0-3 (next day, hour 0).
    19 rows in results_all, 18 in results."""
    storage = Storage(str(tmp_path))
    scores = [0.1, 0.9, 0.2, 0.3, 0.8]
    publish(storage, H7, [result(100 + i, s) for i, s in enumerate(scores)], 0)
    repeat = [result(105 + i, 0.1) for i in range(4)] + [result(104, 0.8)]
    publish(storage, H7, repeat, 5)
    publish(storage, H8, [result(200 + i, 0.6, H8, "1.1.0") for i in range(5)], 10)
    day2 = [result(300 + i, 0.4, NEXT_DAY, source_partition=1) for i in range(4)]
    publish(storage, NEXT_DAY, day2, 0, partition=1)
    publish(
        storage,
        H7,
        [dead_letter(7), dead_letter(8)],
        0,
        table="dead_letters",
        topic="telemetry.dlq",
    )
    return tmp_path

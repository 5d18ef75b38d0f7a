"""Hot swap: a new model file mid-stream is picked up between batches, nothing dropped or
scored twice."""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import time
from collections import defaultdict
from pathlib import Path

import fastavro
import onnx
import pytest

from streamflow.collectors.produce import RawProducer, run_synthetic
from tests.conftest import ROOT
from tests.integration.helpers import read_topic, running_pipeline, wait_for

pytestmark = pytest.mark.integration
N = 12_000


def test_a_new_model_file_is_swapped_in_between_batches(
    pipeline_overrides: dict[str, str], tmp_path: Path
) -> None:
    model = tmp_path / "model.onnx"
    shutil.copy(ROOT / "models/telemetry-anomaly/model.onnx", model)
    overrides = {
        **pipeline_overrides,
        "runtime.topology": "stages",
        "model.path": str(model),
        "model.version": "",
        "model.watch_interval_s": "0.5",
    }
    with running_pipeline(overrides) as (settings, pipe):
        bootstrap = settings.kafka.bootstrap
        raw = RawProducer(settings, bootstrap)
        feeder = threading.Thread(
            target=run_synthetic, kwargs={"raw": raw, "rate": 2000, "records": N, "seed": 9}
        )
        feeder.start()
        time.sleep(2.5)
        v2 = onnx.load(str(model))  # the same network, released as version 2.0.0
        for prop in v2.metadata_props:
            if prop.key == "version":
                prop.value = "2.0.0"
        staged = tmp_path / "model.onnx.new"
        onnx.save(v2, str(staged))
        os.replace(staged, model)  # how a deploy drops a new file in: atomically
        feeder.join()
        t = settings.topics

        def all_out() -> list | None:  # type: ignore[type-arg]
            scored, dead = (
                read_topic(bootstrap, t.scored, idle_s=0.5),
                read_topic(bootstrap, t.dlq, idle_s=0.5),
            )
            return [scored, dead] if len(scored) + len(dead) >= N else None

        result = wait_for(all_out, timeout_s=120, interval_s=2)
        assert result, f"records missing after the swap; logs in {pipe.log_dir}"
        scored, dead = result
        sources = [
            (int(m.headers["sf-source-partition"]), int(m.headers["sf-source-offset"]))
            for m in scored + dead
        ]
        assert len(sources) == len(set(sources)) == N  # none dropped, none scored twice
        schema = fastavro.parse_schema(json.loads(Path(settings.output.schema).read_text()))
        by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for m in scored:
            version = m.headers["sf-model-version"].decode()
            assert (
                fastavro.schemaless_reader(io.BytesIO(m.value), schema)["model_version"] == version
            )
            by_partition[int(m.headers["sf-source-partition"])].append(
                (int(m.headers["sf-source-offset"]), version)
            )
        versions = {v for rows in by_partition.values() for _, v in rows}
        print(f"\nhot swap: {N} records, {len(scored)} scored, versions {sorted(versions)}")
        assert versions == {"1.0.0", "2.0.0"}
        for (
            rows
        ) in by_partition.values():  # in each partition: version 1 then version 2, never back
            seq = [v for _, v in sorted(rows)]
            assert seq == sorted(seq), "a record after the swap was scored by the old model"
        logs = "".join(
            p.read_text(errors="replace") for p in Path(pipe.log_dir).glob("worker-*.log")
        )
        assert (
            "model swapped: telemetry-anomaly 1.0.0" in logs
            and "-> telemetry-anomaly 2.0.0" in logs
        )

"""The whole pipeline on a real broker: 20,000 synthetic records with faults in, every one
accounted for.

The stages run as real worker processes (the same ones `streamflow up` starts); the test
only produces to the raw topic and reads the scored and dead-letter topics and the
metrics endpoint, as a user would.
"""

from __future__ import annotations

import io
import json
import math
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import fastavro
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamflow.collectors.produce import RawProducer, run_synthetic
from streamflow.settings import Settings
from streamflow.supervisor import LocalPipeline
from tests.conftest import PIPELINE, ROOT
from tests.integration.helpers import Msg, read_topic, running_pipeline, wait_for

pytestmark = pytest.mark.integration
N = 20_000


@pytest.fixture(params=["stages", "chained", "chained-librdkafka"])
def pipeline(
    request: pytest.FixtureRequest, pipeline_overrides: dict[str, str]
) -> Iterator[tuple[Settings, LocalPipeline]]:
    """The pipeline in each topology: three stage processes, or one chained process; and
    chained with librdkafka fetching (kafka.fetch_client): its lag gauges read librdkafka's
    high watermarks."""
    topology, _, fetch_client = request.param.partition("-")
    overrides = {
        **pipeline_overrides,
        "runtime.topology": topology,
        "kafka.fetch_client": fetch_client or "aiokafka",
    }
    with running_pipeline(overrides) as running:
        yield running


def by_source(msgs: list[Msg]) -> dict[tuple[int, int], Msg]:
    return {
        (int(m.headers["sf-source-partition"]), int(m.headers["sf-source-offset"])): m for m in msgs
    }


def reference_scores(raw_values: list[bytes]) -> np.ndarray:
    """Scores computed directly: plain-Python feature prep from the pipeline file, then one
    ORT run."""
    spec = tomllib.loads(PIPELINE.read_text())
    stats = json.loads((ROOT / "models/telemetry-anomaly/stats.json").read_text())["features"]
    schema = fastavro.parse_schema(
        json.loads((ROOT / "schemas/telemetry_reading.avsc").read_text())
    )
    rows = []
    for value in raw_values:
        rec = (
            json.loads(value)
            if value[:1] == b"{"
            else fastavro.schemaless_reader(io.BytesIO(value), schema)
        )
        row = []
        for f in spec["features"]:
            v = rec.get(f["name"])
            v = f["default"] if v is None else float(v)
            v = min(max(v, f["min"]), f["max"])
            steps = f.get("normalize", "zscore").split("+")
            st = {**stats[f["name"]], **{k: f[k] for k in ("scale_min", "scale_max") if k in f}}
            if "log1p" in steps:
                v = math.log1p(v)
            if "zscore" in steps:
                v = (v - st["mean"]) / st["std"]
            elif "minmax" in steps:
                v = (v - st["scale_min"]) / (st["scale_max"] - st["scale_min"])
            row.append(v)
        rows.append(row)
    sess = ort.InferenceSession(
        str(ROOT / "models/telemetry-anomaly/model.onnx"), providers=["CPUExecutionProvider"]
    )
    return sess.run(None, {"features": np.asarray(rows, dtype=np.float32)})[0].reshape(-1)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def metric_sum(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return sum(
        v
        for (n, lab), v in samples.items()
        if n == name and all(dict(lab).get(k) == want for k, want in labels.items())
    )


def test_every_record_is_scored_or_dead_lettered(
    pipeline: tuple[Settings, LocalPipeline], bootstrap: str
) -> None:
    settings, pipe = pipeline
    t = settings.topics
    raw = RawProducer(settings, bootstrap)
    stats = run_synthetic(raw, rate=0, records=N, seed=11)
    assert stats.produced == N and stats.failed == 0
    assert sum(stats.faults.values()) > 0.01 * N  # faults were really injected

    def accounted() -> tuple[dict, dict] | None:  # type: ignore[type-arg]
        scored = by_source(read_topic(bootstrap, t.scored, idle_s=0.5))
        dead = by_source(read_topic(bootstrap, t.dlq, idle_s=0.5))
        return (scored, dead) if len(scored) + len(dead) >= N else None

    result = wait_for(accounted, timeout_s=180, interval_s=2)
    assert result, f"not every record came out; logs in {pipe.log_dir}"
    scored, dead = result
    raw_msgs = {(m.partition, m.offset): m for m in read_topic(bootstrap, t.raw, until=N)}
    assert len(raw_msgs) == N

    # Every input exactly once across results and dead letters.
    assert set(scored) | set(dead) == set(raw_msgs)
    assert not set(scored) & set(dead)
    assert len(dead) >= sum(stats.faults.values()) * 0.9  # nearly every injected fault is caught

    # Dead letters: the original key and bytes, and why.
    for src, m in dead.items():
        original = raw_msgs[src]
        assert m.value == original.value and m.key == original.key
        assert m.headers["sf-reason"] and m.headers["sf-stage"] and m.headers["sf-reason-code"]
        assert m.headers["sf-source-topic"].decode() == t.raw
    codes = {m.headers["sf-reason-code"].decode() for m in dead.values()}
    assert {"missing_required", "non_finite", "out_of_range"} <= codes, codes

    # Results: same key as the input, scores equal to a direct ONNX Runtime computation.
    out_schema = fastavro.parse_schema(json.loads(Path(settings.output.schema).read_text()))
    srcs = sorted(scored)
    results = [fastavro.schemaless_reader(io.BytesIO(scored[s].value), out_schema) for s in srcs]
    for s, r in zip(srcs, results, strict=True):
        assert scored[s].key == raw_msgs[s].key
        assert r["model_name"] == "telemetry-anomaly" and r["label"] in ("normal", "anomaly")
    expected = reference_scores([raw_msgs[s].value for s in srcs])
    got = np.array([r["score"] for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-5)

    # The metrics count exactly what was produced.
    def metrics_settled():  # type: ignore[no-untyped-def]
        m = scrape(pipe.metrics_url)
        return (
            m
            if metric_sum(m, "streamflow_records_total", stage="inference", outcome="ok")
            >= len(scored)
            else None
        )

    m = wait_for(metrics_settled, timeout_s=30)
    assert m, "metrics never caught up"
    clean_total = metric_sum(m, "streamflow_records_total", stage="clean")
    assert clean_total == N
    assert metric_sum(m, "streamflow_records_total", stage="inference", outcome="ok") == len(scored)
    assert metric_sum(m, "streamflow_dead_letters_total") == len(dead)
    assert metric_sum(m, "streamflow_end_to_end_latency_seconds_count") == len(scored)
    assert (
        metric_sum(
            m,
            "streamflow_model_info",
            model="telemetry-anomaly",
            provider="CPUExecutionProvider",
            device="auto",
        )
        == 1
    )
    assert metric_sum(m, "streamflow_gpus") == 0  # this machine has none: the CPU is expected
    assert metric_sum(m, "streamflow_batch_fill_ratio_count") > 0
    assert (
        0
        < metric_sum(m, "streamflow_batch_fill_ratio_sum")
        <= metric_sum(m, "streamflow_batch_fill_ratio_count")
    )
    assert any(name == "streamflow_consumer_lag_seconds" for name, _ in m)
    # Collector pauses are timed: at least the full collection before start-up is frozen.
    assert metric_sum(m, "streamflow_gc_pause_seconds_count", generation="2") >= 1
    # Both topologies account every step under its own stage name.
    assert metric_sum(m, "streamflow_records_total", stage="normalize") == metric_sum(
        m, "streamflow_records_total", stage="clean", outcome="ok"
    )

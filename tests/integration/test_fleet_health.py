"""The third example end to end (pipelines/fleet-health.toml): a multi-class scikit-learn
classifier converted with skl2onnx (string labels, ZipMap probabilities), a one-hot category, a
boolean, the hour of the timestamp, a derived feature set by the user's transform, pass-through
fields, fed by the pipeline's own synthetic generator (collector.synthetic), on the real broker.

Every result is compared with the scikit-learn model's own ``predict_proba`` and ``predict`` on
the same records, refitted here from the training script (``train(7)`` is the committed model,
to the bit): ONNX Runtime computes in float32, scikit-learn in float64, so probabilities agree to
1e-5 (measured: under 4e-7). Every malformed record is dead-lettered with the reason its fault
calls for; an hw_model outside the vocabulary takes the default and is scored."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from collections import Counter
from pathlib import Path

import fastavro
import pytest

from streamflow.cli.schema import generated_schema
from streamflow.codecs import _strip_logical_types
from streamflow.collectors.produce import RawProducer
from tests.conftest import ROOT
from tests.integration.helpers import read_topic, running_pipeline

pytestmark = pytest.mark.integration

PIPELINE = ROOT / "pipelines" / "fleet-health.toml"
TOLERANCE = 1e-5


def fleet_modules():  # type: ignore[no-untyped-def]
    """pipelines/fleet_health.py and models/fleet-health/train.py (a folder with a hyphen)."""
    sys.path.insert(0, str(PIPELINE.parent))
    import fleet_health

    spec = importlib.util.spec_from_file_location(
        "fleet_train", ROOT / "models" / "fleet-health" / "train.py"
    )
    assert spec is not None and spec.loader is not None
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    return fleet_health, train


def test_fleet_health_results_are_the_scikit_learn_models_and_bad_records_dead_lettered(
    pipeline_overrides: dict[str, str], bootstrap: str, tmp_path: Path
) -> None:
    fleet, train = fleet_modules()
    gen = fleet.FleetGenerator(seed=11, malformed_rate=0.04, unknown_model_rate=0.02)
    samples = gen.sample(1500, interval_ms=60_000.0)
    good = [s for s in samples if s.fault is None]
    bad = [s for s in samples if s.fault is not None]
    unknown_hw = [s for s in good if s.record.get("hw_model") in fleet.UNKNOWN_HW_MODELS]
    assert len(bad) > 20 and unknown_hw, "the sample exercises faults and unknown categories"
    with running_pipeline(pipeline_overrides, PIPELINE) as (settings, _):
        raw = RawProducer(settings, bootstrap)
        for s in samples:  # as the synthetic collector encodes them
            if s.encoding == "json":
                value = json.dumps(s.record).encode()
            else:
                value = raw.codec.encode(s.record)
                if s.encoding == "corrupt":
                    value = gen.corrupt_bytes(s, value)
            raw.send(value, raw.key_of(s.record))
        assert raw.flush() == 0
        t = settings.topics
        scored = read_topic(bootstrap, t.scored, until=len(good), timeout_s=120)
        dead = read_topic(bootstrap, t.dlq, until=len(bad), timeout_s=30)
        schema = generated_schema(settings)
    assert len(scored) == len(good) and len(dead) == len(bad)

    # dead letters: one per malformed record, with the reason its fault calls for
    codes = Counter(m.headers["sf-reason-code"].decode() for m in dead)
    for code, n in codes.items():
        assert n == sum(1 for s in bad if code in fleet.FAULT_REASONS[s.fault]), codes

    # results: the declared record, every one as scikit-learn scores its input
    parsed = fastavro.parse_schema(_strip_logical_types(schema))
    results = {}
    for m in scored:
        r = fastavro.schemaless_reader(io.BytesIO(m.value), parsed, None)
        results[(r["host"], r["timestamp"])] = r
        assert m.key == r["host"].encode()
    records = [s.record for s in good]
    x = fleet.model_matrix(records)
    model = train.train(train.SEED)
    proba, predicted = model.predict_proba(x), model.predict(x)
    column = {c: i for i, c in enumerate(model.classes_)}
    worst = 0.0
    for rec, p, label in zip(records, proba, predicted, strict=True):
        r = results[(rec["host"], rec["timestamp"])]
        assert r["health"] == label
        for cls in fleet.CLASSES:
            worst = max(worst, abs(r[f"p_{cls}"] - p[column[cls]]))
        assert (r["rack"], r["status"]) == (rec.get("rack"), rec.get("status"))
        assert r["model_name"] == "fleet-health" and r["model_version"] == "1.0.0"
    assert worst <= TOLERANCE, worst
    assert [f["name"] for f in schema["fields"]] == [
        "host", "timestamp", "health", "p_healthy", "p_thermal", "p_power", "p_disk",
        "rack", "status", "model_name", "model_version", "latency_ms",
    ]  # fmt: skip
    assert {r["health"] for r in results.values()} >= {"healthy", "thermal"}

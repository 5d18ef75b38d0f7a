"""The shipped pipelines' result records, byte for byte as before the result record was declared
(``golden/results.json`` was written by the encoders of that time from the inputs below), and
the generated schema of each equal to its shipped ``output.schema``."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from streamflow.inference.kinds import build_encoder, declared_record
from streamflow.inference.outputs import result_schema
from streamflow.inference.session import load_model
from streamflow.records import BytesColumn, RecordBatch
from streamflow.settings import with_overrides
from streamflow.settings.loading import load_settings
from tests.conftest import ROOT

GOLDEN = json.loads((Path(__file__).parents[1] / "codecs/golden/results.json").read_text())
IDS = ["rack1-node1", "dev-ü", "x" * 40]
EVENT_MS = np.array([1764000000000, 1764000000001, -5], np.int64)
LATENCY = np.array([1.23456789, 0.0, 1234.5678])


def golden(name: str) -> list[bytes]:
    return [base64.b64decode(v) for v in GOLDEN[name]]


def batch_of(ids: list[str]) -> RecordBatch:
    n = len(ids)
    return RecordBatch(
        "telemetry.raw", 0, np.arange(n), np.zeros(n, np.int64),
        BytesColumn.from_list([i.encode() for i in ids]), BytesColumn.from_list([b""] * n),
        BytesColumn.from_list([i.encode() for i in ids]), EVENT_MS, np.zeros((n, 16), np.float32),
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_telemetry_results_are_byte_identical_through_the_declared_record(fmt: str) -> None:
    s = load_settings(ROOT / "pipelines/telemetry.toml", {"output.format": fmt})
    model = load_model(with_overrides(s, runtime={"device": "cpu"}))
    assert model.kind is not None
    scores = np.array([0.1234567890123, 0.5, 1.0])
    got = model.kind.results(batch_of(IDS), {"score": scores}, model, LATENCY)
    assert got == golden(f"telemetry-{fmt}")


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_text_results_are_byte_identical_through_the_declared_record(fmt: str) -> None:
    from streamflow.inference.kinds.text import TextEmbeddingKind

    s = load_settings(ROOT / "pipelines/text.toml", {"output.format": fmt})
    emb = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    enc = build_encoder(s, TextEmbeddingKind(s).output_fields())
    named = {
        "id": IDS, "timestamp": EVENT_MS.tolist(), "embedding": emb.tolist(),
        "label": ["disk", "network", "other"], "label_score": [0.9, 0.8, 0.123456789],
        "model_name": ["all-MiniLM-L6-v2"] * 3, "model_version": ["1.0.0"] * 3,
        "latency_ms": LATENCY.tolist(),
    }  # fmt: skip
    assert enc.encode(named, 3) == golden(f"text-{fmt}")


def plain_fields(schema: dict) -> list[tuple[str, object]]:
    return [(f["name"], f["type"]) for f in schema["fields"]]


@pytest.mark.parametrize("pipeline", ["telemetry", "text"])
def test_the_generated_schema_is_the_shipped_one(pipeline: str) -> None:
    s = load_settings(ROOT / f"pipelines/{pipeline}.toml")
    model = load_model(with_overrides(s, runtime={"device": "cpu"}))
    assert model.kind is not None
    generated = result_schema(s, declared_record(s, model.kind.output_fields()))
    shipped = json.loads(Path(s.output.schema).read_text())
    assert plain_fields(generated) == plain_fields(shipped)

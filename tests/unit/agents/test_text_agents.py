"""The text pipeline's handlers without a broker: raw JSON/Avro text records -> clean -> internal
batches -> normalize (length buckets) -> inference, against the exported model run directly."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import replace
from types import SimpleNamespace

import fastavro
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streamflow.agents.clean import CleanHandler
from streamflow.agents.context import StageContext
from streamflow.agents.normalize import NormalizeHandler
from streamflow.codecs import decode_record_batch, encode_record_batch, load_schema
from streamflow.metrics import Metrics
from streamflow.settings.loading import load_settings
from tests.conftest import ROOT

PIPELINE = ROOT / "pipelines" / "text.toml"
MODEL = ROOT / "models" / "minilm" / "model.onnx"
pytestmark = pytest.mark.skipif(
    not MODEL.is_file(), reason="run `streamflow model export minilm` first"
)


def msg(value: bytes, offset: int) -> SimpleNamespace:
    return SimpleNamespace(
        value=value, key=b"k%d" % offset, offset=offset, timestamp=1000 + offset, headers=[]
    )


def avro(rec: dict) -> bytes:  # type: ignore[type-arg]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(str(ROOT / "schemas/text_record.avsc")), rec)
    return buf.getvalue()


GOOD = [
    "CPU temperature is 97 C on node 4 and rising",
    "disk /var is 99% full",
    "ok",
    "Could you please reset my password? " * 5,
    "connection to upstream timed out after 30 s",
]


def test_text_records_become_embeddings_and_labels_bad_ones_are_dead_lettered() -> None:
    pytest.importorskip("tokenizers")
    from streamflow.agents.inference import InferenceHandler
    from streamflow.inference.session import load_model
    from streamflow.model import minilm
    from streamflow.stages.tokenizer import TextTokenizer

    s = load_settings(
        PIPELINE, {"model.bucket_rows": 2}, environ={}
    )  # several buckets from a few texts
    ctx = StageContext(s, "clean", Metrics.create(CollectorRegistry()), producer=None)  # type: ignore[arg-type]
    values = [
        json.dumps({"id": f"t{i}", "timestamp": 5 + i, "text": t}).encode()
        for i, t in enumerate(GOOD)
    ]
    values.append(avro({"id": "a", "timestamp": 9, "source": "mail", "text": GOOD[1]}))
    bad = [
        json.dumps({"id": "b1", "timestamp": 1, "text": "   "}).encode(),
        json.dumps({"id": "b2", "timestamp": 1}).encode(),
        json.dumps({"id": "b3", "timestamp": 1, "text": 5}).encode(),
        json.dumps({"id": "b4", "timestamp": 1, "text": "x" * 9000}).encode(),
    ]
    cleaned, rejected = CleanHandler(ctx).process(
        "text.raw", 1, [msg(v, i) for i, v in enumerate(values + bad)]
    )
    assert [r.source_offset for r in rejected] == [6, 7, 8, 9]
    assert [r.reason for r in rejected][:2] == [
        "text: empty text (only whitespace)",
        "missing required field text",
    ]
    assert (
        "expected a string" in rejected[2].reason
        and "exceeds max_string_length" in rejected[3].reason
    )

    cleaned = decode_record_batch(encode_record_batch(cleaned))  # as the internal topic carries it
    assert cleaned.texts is not None and cleaned.texts.to_list()[5] == GOOD[1].encode()
    normalize = NormalizeHandler(replace(ctx, stage="normalize"))
    buckets, none = normalize.process(cleaned)
    assert not none and sum(len(b) for b in buckets) == len(values)
    assert len({b.features.shape[1] for b in buckets}) > 1  # one width per length bucket
    buckets = [decode_record_batch(encode_record_batch(b)) for b in buckets]

    inference = InferenceHandler(replace(ctx, stage="inference"), load_model(s))
    out, failed, delivered = asyncio.run(inference.score(buckets))
    assert not failed and len(out) == len(values)
    schema = load_schema(s.output.schema)
    results = {m.key: fastavro.schemaless_reader(io.BytesIO(m.value), schema, None) for m in out}

    tok = TextTokenizer(s.model.tokenizer, s.model.max_tokens)
    want = minilm.embed(minilm.onnx_session(MODEL), tok, [t for t in GOOD] + [GOOD[1]])
    for i, w in enumerate(want):
        r = results[b"k%d" % i]
        got = np.asarray(r["embedding"], dtype=np.float32)
        assert (
            got.shape == (384,)
            and float(got @ w) / float(np.linalg.norm(got) * np.linalg.norm(w)) > 0.999
        )
        assert r["model_name"] == "all-MiniLM-L6-v2" and -1 <= r["label_score"] <= 1
    assert [results[b"k%d" % i]["label"] for i in (0, 1, 3, 4)] == [
        "overheating",
        "disk",
        "other",
        "network",
    ]
    assert results[b"k5"]["id"] == "a" and results[b"k0"]["timestamp"] == 5

    samples = {
        (m.name, tuple(sorted(m.labels.items()))): m.value
        for fam in ctx.metrics.padding_waste.collect()
        for m in fam.samples
    }
    bucketed = samples[
        (
            "streamflow_padding_waste_ratio",
            (("batching", "bucketed"), ("pipeline", "text"), ("stage", "normalize")),
        )
    ]
    unbucketed = samples[
        (
            "streamflow_padding_waste_ratio",
            (("batching", "unbucketed"), ("pipeline", "text"), ("stage", "normalize")),
        )
    ]
    assert 0 <= bucketed < unbucketed

"""The text pipeline on a real broker: ~300 texts in, embeddings and labels out, bad ones
dead-lettered.

The stages run as real worker processes (as `streamflow up --pipeline pipelines/text.toml`
starts them); every embedding is checked against the exported model run directly on the
same text.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import fastavro
import numpy as np
import pytest

from streamflow.codecs import load_schema
from streamflow.collectors.produce import RawProducer
from streamflow.settings import Settings
from streamflow.supervisor import LocalPipeline
from tests.conftest import ROOT
from tests.integration.helpers import read_topic, running_pipeline, wait_for
from tests.integration.test_pipeline_e2e import by_source, metric_sum, scrape

pytestmark = pytest.mark.integration
PIPELINE = ROOT / "pipelines" / "text.toml"
MODEL = ROOT / "models" / "minilm" / "model.onnx"
if not MODEL.is_file():
    pytest.skip("run `streamflow model export minilm` first", allow_module_level=True)
pytest.importorskip("tokenizers")

OBVIOUS = {  # text -> the label it must get
    "CPU temperature is 98 C, the server is overheating": "overheating",
    "No space left on device: the disk is full": "disk",
    "Network unreachable: packets dropped, connection lost": "network",
    "Thanks, the invoice was paid yesterday": "other",
}
WORDS = (
    "fan",
    "disk",
    "node",
    "rack",
    "latency",
    "error",
    "timeout",
    "retry",
    "user",
    "ticket",
    "the",
    "is",
    "slow",
    "again",
    "after",
    "update",
    "service",
    "restarted",
    "memory",
    "queue",
    "backup",
    "failed",
)


def texts(n: int, seed: int = 5) -> list[str]:
    """Log lines and tickets from 1 to ~300 words (some truncated at max_tokens)."""
    rng = np.random.default_rng(seed)
    lengths = np.concatenate(
        [rng.integers(1, 12, n // 2), rng.integers(12, 60, n // 3), rng.integers(60, 300, n)]
    )
    out = [" ".join(rng.choice(WORDS, size=int(k))) for k in lengths[: n - len(OBVIOUS)]]
    return list(OBVIOUS) + out


def bad_records() -> dict[str, bytes]:
    """reason code -> a record that must be dead-lettered with it."""
    return {
        "empty": json.dumps({"id": "e", "timestamp": 1, "text": "  \t "}).encode(),
        "missing_required": json.dumps({"id": "m", "timestamp": 1}).encode(),
        "wrong_type": json.dumps(
            {"id": "w", "timestamp": 1, "text": ["not", "a", "string"]}
        ).encode(),
        "too_large": json.dumps({"id": "l", "timestamp": 1, "text": "x" * 9000}).encode(),
        "invalid_utf8": b'{"id": "u", "timestamp": 1, "text": "caf\xe9"}',
        "invalid_json": b'{"id": "j", "timestamp": 1, "text": ',
    }


@pytest.fixture(params=["stages", "chained"])
def pipeline(
    request: pytest.FixtureRequest, pipeline_overrides: dict[str, str]
) -> Iterator[tuple[Settings, LocalPipeline]]:
    with running_pipeline(
        {**pipeline_overrides, "runtime.topology": request.param}, PIPELINE
    ) as running:
        yield running


def test_texts_get_embeddings_matching_the_model_and_bad_ones_are_dead_lettered(
    pipeline: tuple[Settings, LocalPipeline], bootstrap: str
) -> None:
    settings, pipe = pipeline
    t = settings.topics
    raw = RawProducer(settings, bootstrap)
    schema = load_schema(settings.input.schema)
    good = texts(300)
    for i, text in enumerate(good):
        rec = {"id": f"r{i}", "timestamp": 1_700_000_000_000 + i, "source": "test", "text": text}
        if i % 2:
            raw.send(json.dumps(rec).encode(), rec["id"].encode())
        else:  # Avro, as `streamflow produce` writes it
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, schema, rec)
            raw.send(buf.getvalue(), rec["id"].encode())
    bad = bad_records()
    for code, value in bad.items():
        raw.send(value, code.encode())
    assert raw.flush() == 0
    n = len(good) + len(bad)

    def accounted():  # type: ignore[no-untyped-def]
        scored = by_source(read_topic(bootstrap, t.scored, idle_s=0.5))
        dead = by_source(read_topic(bootstrap, t.dlq, idle_s=0.5))
        return (scored, dead) if len(scored) + len(dead) >= n else None

    result = wait_for(accounted, timeout_s=90, interval_s=1)
    assert result, f"not every record came out; logs in {pipe.log_dir}"
    scored, dead = result
    assert len(scored) == len(good) and len(dead) == len(bad)
    assert {
        m.key.decode(): m.headers["sf-reason-code"].decode() for m in dead.values() if m.key
    } == {code: code for code in bad}
    assert all(
        m.headers["sf-stage"] == b"clean" and m.value == bad[m.key.decode()]
        for m in dead.values()
        if m.key
    )

    out_schema = load_schema(settings.output.schema)
    results = {
        m.key.decode(): (m, fastavro.schemaless_reader(io.BytesIO(m.value), out_schema, None))
        for m in scored.values()
        if m.key
    }
    assert set(results) == {f"r{i}" for i in range(len(good))}

    from streamflow.model import minilm
    from streamflow.stages.tokenizer import TextTokenizer

    tok = TextTokenizer(settings.model.tokenizer, settings.model.max_tokens)
    want = minilm.embed(minilm.onnx_session(MODEL), tok, good)
    got = np.array([results[f"r{i}"][1]["embedding"] for i in range(len(good))], dtype=np.float32)
    assert got.shape == (len(good), 384)
    cos = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() > 0.999, f"lowest cosine {cos.min()} for {good[int(cos.argmin())][:80]!r}"
    for i, (text, label) in enumerate(OBVIOUS.items()):
        assert good[i] == text and results[f"r{i}"][1]["label"] == label, (
            text,
            results[f"r{i}"][1]["label"],
        )
    for i in range(len(good)):
        m, r = results[f"r{i}"]
        assert r["id"] == f"r{i}" and r["timestamp"] == 1_700_000_000_000 + i
        assert (
            r["model_name"] == "all-MiniLM-L6-v2"
            and r["model_version"] == "1.0.0"
            and -1 <= r["label_score"] <= 1
        )
        assert (
            m.headers["sf-source-topic"].decode() == t.raw
            and m.headers["sf-model"] == b"all-MiniLM-L6-v2"
        )

    def metrics_settled():  # type: ignore[no-untyped-def]
        m = scrape(pipe.metrics_url)
        return (
            m
            if metric_sum(m, "streamflow_records_total", stage="inference", outcome="ok")
            >= len(good)
            else None
        )

    m = wait_for(metrics_settled, timeout_s=30)
    assert m, "metrics never caught up"
    assert metric_sum(m, "streamflow_dead_letters_total") == len(bad)
    for stage in ("normalize", "inference"):
        bucketed = metric_sum(m, "streamflow_padding_waste_ratio", stage=stage, batching="bucketed")
        unbucketed = metric_sum(
            m, "streamflow_padding_waste_ratio", stage=stage, batching="unbucketed"
        )
        assert 0 <= bucketed < unbucketed, (stage, bucketed, unbucketed)

"""Text records in, text results out, and the texts column of internal batches."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import numpy as np

from streamflow.codecs import (
    ResultEncoder,
    TextDecoder,
    decode_record_batch,
    encode_record_batch,
    load_schema,
)
from streamflow.records import BytesColumn, RecordBatch
from streamflow.settings import LimitSettings

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
RECORD, RESULT = str(SCHEMAS / "text_record.avsc"), str(SCHEMAS / "text_result.avsc")


def avro(rec: dict) -> bytes:  # type: ignore[type-arg]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(RECORD), rec)
    return buf.getvalue()


def test_text_records_decode_from_avro_and_json_or_get_a_reason() -> None:
    dec = TextDecoder(RECORD, "text", key_field="id", limits=LimitSettings(max_string_length=50))
    good = avro({"id": "a", "timestamp": 5, "text": "disk full"})
    bad_utf8 = good.replace(b"disk", b"d\xffsk")
    values = [
        good,
        b'{"id": "b", "timestamp": 6, "text": "caf\\u00e9"}',
        avro({"id": "c", "timestamp": 7}),
        bad_utf8,
        b'{"id": "d", "timestamp": 1, "text": 3}',
        avro({"id": "e", "timestamp": 1, "text": "x" * 51}),
        b'{"timestamp": 1, "text": "no id"}',
    ]
    d = dec.decode_batch(values)
    assert d.texts[:3] == ["disk full", "café", None] and d.device_ids[:3] == ["a", "b", "c"]
    assert d.event_ms[:3].tolist() == [5, 6, 7] and d.errors[:3] == [None, None, None]
    codes = d.codes[3:]
    assert codes == ["invalid_utf8", "wrong_type", "too_large", "missing_field"], d.errors


def test_internal_batches_carry_texts_and_tabular_ones_stay_as_they_were() -> None:
    n = 3
    cols = {
        "keys": BytesColumn.from_list([b"k"] * n),
        "values": BytesColumn.from_list([b"v"] * n),
        "device_ids": BytesColumn.from_list([b"d"] * n),
    }
    base = RecordBatch(
        "raw",
        1,
        np.arange(n),
        np.zeros(n, np.int64),
        event_ms=np.ones(n, np.int64),
        features=np.zeros((n, 0), np.float32),
        **cols,
    )
    texts = BytesColumn.from_list([t.encode() for t in ("a", "é 🔥", "")])
    back = decode_record_batch(
        encode_record_batch(RecordBatch(**{**base.__dict__, "texts": texts}))
    )
    assert back.texts is not None and back.texts.to_list() == [b"a", "é 🔥".encode(), b""]
    assert back.select(np.array([2, 1])).texts.to_list() == [b"", "é 🔥".encode()]  # type: ignore[union-attr]
    plain = encode_record_batch(base)
    header = json.loads(plain[8 : 8 + int.from_bytes(plain[4:8], "big")])
    assert [c[0] for c in header["c"]] == [
        "offsets",
        "ingest_ms",
        "event_ms",
        "features",
        "keys",
        "values",
        "device_ids",
    ]  # the columns telemetry uses: no texts
    assert decode_record_batch(plain).texts is None


def test_text_results_encode_as_avro_and_json() -> None:
    emb = np.array([[0.5, -0.25], [1 / 3, 0.0]], dtype=np.float32)
    named = {"id": ["a", "b"], "timestamp": [5, 6], "embedding": emb.tolist(),
             "label": ["disk", "other"], "label_score": [0.9, 0.1], "model_name": ["m"] * 2,
             "model_version": ["1"] * 2, "latency_ms": [2.0, 3.0]}  # fmt: skip
    avro_out = ResultEncoder.from_file(RESULT).encode(named, 2)
    r = fastavro.schemaless_reader(io.BytesIO(avro_out[1]), load_schema(RESULT), None)
    assert r["id"] == "b" and r["label"] == "other" and r["label_score"] == 0.1
    assert np.array_equal(np.asarray(r["embedding"], dtype=np.float32), emb[1])  # float32 exactly
    j = json.loads(ResultEncoder.from_file(RESULT, format="json").encode(named, 2)[0])
    assert j["embedding"] == [0.5, -0.25] and j["model_name"] == "m" and j["timestamp"] == 5

"""Records out: scored results (Avro or JSON, one message per row) and JSON lines for people."""

from __future__ import annotations

import copy
import io
import json
import math
import struct
from collections.abc import Sequence
from typing import Any

import fastavro
import numpy as np

from streamflow.codecs.avro import WIRE_MAGIC, RecordCodec, _raw_schema, _strip_logical_types
from streamflow.codecs.flatavro import compile_writer

RESULT_FIELDS = (
    "device_id",
    "timestamp",
    "score",
    "label",
    "model_name",
    "model_version",
    "latency_ms",
)
TEXT_RESULT_FIELDS = (
    "id",
    "timestamp",
    "embedding",
    "label",
    "label_score",
    "model_name",
    "model_version",
    "latency_ms",
)


class _Encoder:
    """A result schema's codec and, with a schema registry, the Confluent wire-format prefix."""

    def __init__(
        self,
        schema_path: str,
        *,
        format: str = "avro",
        schema_registry_url: str = "",
        topic: str = "",
    ) -> None:
        self.codec = RecordCodec(
            schema_path, format=format, schema_registry_url=schema_registry_url, topic=topic
        )
        self.format = format
        self._prefix = b""
        if self.codec.registry is not None and format == "avro":
            self._prefix = struct.pack(
                ">bI", WIRE_MAGIC, self.codec.registry.register(self.codec.subject, schema_path)
            )


class ResultEncoder(_Encoder):
    """Encodes scored results, one message per row."""

    def __init__(self, schema_path: str, **kwargs: Any) -> None:
        super().__init__(schema_path, **kwargs)
        # The shipped result schema is flat, in this field order: a generated writer (flatavro).
        raw = _strip_logical_types(_raw_schema(schema_path))
        in_order = [f.get("name") for f in raw.get("fields", [])] == list(RESULT_FIELDS)
        self._write = compile_writer(raw) if in_order else None

    def encode_batch(
        self,
        device_ids: Sequence[str],
        event_ms: np.ndarray,
        scores: np.ndarray,
        labels: Sequence[str],
        model_name: str,
        model_version: str,
        latency_ms: np.ndarray,
    ) -> list[bytes]:
        ts, sc, lat = (
            np.asarray(event_ms).tolist(),
            np.asarray(scores, dtype=np.float64).tolist(),
            np.asarray(latency_ms, dtype=np.float64).tolist(),
        )
        out: list[bytes] = []
        if self.format == "json":
            for d, t, s, lb, la in zip(device_ids, ts, sc, labels, lat, strict=True):
                out.append(
                    json.dumps(
                        {
                            "device_id": d,
                            "timestamp": t,
                            "score": s,
                            "label": lb,
                            "model_name": model_name,
                            "model_version": model_version,
                            "latency_ms": round(la, 3),
                        },
                        separators=(",", ":"),
                    ).encode()
                )
            return out
        prefix = self._prefix
        if self._write is not None:
            w = self._write
            return [
                prefix + w(d, t, s, lb, model_name, model_version, la)
                for d, t, s, lb, la in zip(device_ids, ts, sc, labels, lat, strict=True)
            ]
        schema, write = self.codec.schema, fastavro.schemaless_writer
        rec: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
        for d, t, s, lb, la in zip(device_ids, ts, sc, labels, lat, strict=True):
            rec["device_id"], rec["timestamp"], rec["score"], rec["label"], rec["latency_ms"] = (
                d,
                t,
                s,
                lb,
                la,
            )
            buf = io.BytesIO()
            buf.write(prefix)
            write(buf, schema, rec)
            out.append(buf.getvalue())
        return out


class TextResultEncoder(_Encoder):
    """Encodes text-embedding results (``TEXT_RESULT_FIELDS``), one message per row; the
    embedding as an array of float32."""

    def encode_batch(
        self,
        ids: Sequence[str],
        event_ms: np.ndarray,
        embeddings: np.ndarray,
        labels: Sequence[str],
        label_scores: np.ndarray,
        model_name: str,
        model_version: str,
        latency_ms: np.ndarray,
    ) -> list[bytes]:
        ts = np.asarray(event_ms).tolist()
        # float32 values as Python floats: Avro "float" writes them back exactly
        emb = np.asarray(embeddings, dtype=np.float32).tolist()
        sc = np.asarray(label_scores, dtype=np.float64).tolist()
        lat = np.asarray(latency_ms, dtype=np.float64).tolist()
        out: list[bytes] = []
        schema, write = self.codec.schema, fastavro.schemaless_writer
        for i, t, e, lb, s, la in zip(ids, ts, emb, labels, sc, lat, strict=True):
            rec = {
                "id": i,
                "timestamp": t,
                "embedding": e,
                "label": lb,
                "label_score": s,
                "model_name": model_name,
                "model_version": model_version,
                "latency_ms": la,
            }
            if self.format == "json":
                rec["latency_ms"] = round(la, 3)
                out.append(json.dumps(rec, separators=(",", ":")).encode())
                continue
            buf = io.BytesIO()
            buf.write(self._prefix)
            write(buf, schema, rec)
            out.append(buf.getvalue())
        return out


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # "nan", "inf": JSON has no literal for them
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


def to_json_line(record: dict[str, Any]) -> str:
    """One line of strict JSON; non-finite floats become the strings "nan", "inf", "-inf"."""
    return json.dumps(_json_safe(copy.copy(record)), separators=(", ", ": "), allow_nan=False)

"""Records out: scored results (Avro or JSON, one message per row) and JSON lines for people."""

from __future__ import annotations

import copy
import io
import json
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import fastavro

from streamflow.codecs.avro import WIRE_MAGIC, SchemaRegistry, _raw_schema, _strip_logical_types
from streamflow.codecs.flatavro import compile_writer


class ResultEncoder:
    """Encodes result records, one message per row, for a result schema: the user's file
    (``output.schema``) or the one generated from the pipeline's declaration. Avro (with a schema
    registry, the Confluent wire-format prefix) or JSON with the same fields in the same order.

    A flat schema gets a generated writer (``flatavro``); others go through fastavro."""

    def __init__(
        self,
        schema: dict[str, Any],
        *,
        format: str = "avro",
        registry: SchemaRegistry | None = None,
        topic: str = "",
    ) -> None:
        plain = _strip_logical_types(copy.deepcopy(schema))
        self.fields: list[str] = [f["name"] for f in schema.get("fields", [])]
        self.defaults = {
            f["name"]: f["default"] for f in schema.get("fields", []) if "default" in f
        }
        self.format = format
        self.schema = fastavro.parse_schema(plain)
        self._write = compile_writer(plain)
        self._prefix = b""
        if registry is not None and format == "avro":
            self._prefix = struct.pack(
                ">bI", WIRE_MAGIC, registry.register(f"{topic}-value", schema)
            )

    @classmethod
    def from_file(cls, path: str, **kwargs: Any) -> ResultEncoder:
        return cls(_raw_schema(path), **kwargs)

    def encode(self, named: Mapping[str, Sequence[Any]], n: int) -> list[bytes]:
        """``n`` messages from ``named`` columns (a list of Python values per field name), in the
        schema's field order; a field without a column takes its default. In JSON,
        ``latency_ms`` is rounded to the microsecond."""
        columns = [named[f] if f in named else [self.defaults.get(f)] * n for f in self.fields]
        rows = zip(*columns, strict=True)
        if self.format == "json":
            names = self.fields
            if "latency_ms" in names:
                i = names.index("latency_ms")
                cols = list(columns)
                cols[i] = [None if v is None else round(v, 3) for v in cols[i]]
                rows = zip(*cols, strict=True)
            return [
                json.dumps(dict(zip(names, row, strict=True)), separators=(",", ":")).encode()
                for row in rows
            ]
        prefix = self._prefix
        if self._write is not None:
            w = self._write
            return [prefix + w(*row) for row in rows]
        schema, write, names = self.schema, fastavro.schemaless_writer, self.fields
        out: list[bytes] = []
        for row in rows:
            buf = io.BytesIO()
            buf.write(prefix)
            write(buf, schema, dict(zip(names, row, strict=True)))
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

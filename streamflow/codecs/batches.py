"""Columnar record batches for the internal topics (``SFB2``): a JSON header naming each column,
then raw numpy buffers, decoded zero-copy. ``SFB1`` messages (a fixed count of buffers) still
decode."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from streamflow.errors import DecodeError
from streamflow.records import BytesColumn, ReasonCode, RecordBatch

MAGIC = b"SFB2"  # named columns
MAGIC_V1 = (
    b"SFB1"  # 13 or 16 buffers in a fixed order: still decoded (messages written before SFB2)
)
_HEADER = struct.Struct(">4sI")  # magic, header length


def _corrupt(reason: str) -> DecodeError:
    """An internal batch message that does not decode: ``ReasonCode.CORRUPT_BATCH``."""
    return DecodeError(reason, ReasonCode.CORRUPT_BATCH)


# The columns of a batch, by name: (RecordBatch field, wire type). Fixed-width columns travel as
# one buffer; a bytes column as three (end offsets int64, null flags bool, the data).
INT64_COLUMNS = ("offsets", "ingest_ms", "event_ms")
BYTES_COLUMNS = ("keys", "values", "device_ids", "texts")  # texts: optional (text pipelines)


def _columns(batch: RecordBatch) -> tuple[list[list[Any]], list[bytes]]:
    """(column descriptors [name, type, [buffer lengths], shape], buffers in order)."""
    specs: list[list[Any]] = []
    blobs: list[bytes] = []
    for name in INT64_COLUMNS:
        blob = np.ascontiguousarray(getattr(batch, name), np.int64).tobytes()
        specs.append([name, "i8", [len(blob)], [len(batch)]])
        blobs.append(blob)
    feats = np.ascontiguousarray(batch.features, np.float32)
    blob = feats.tobytes()
    specs.append(["features", "f4", [len(blob)], list(feats.shape)])
    blobs.append(blob)
    for name in BYTES_COLUMNS:
        col: BytesColumn | None = getattr(batch, name)
        if col is None:
            continue
        parts = [
            np.ascontiguousarray(col.ends, np.int64).tobytes(),
            np.ascontiguousarray(col.null, np.bool_).tobytes(),
            col.data,
        ]
        specs.append([name, "bytes", [len(p) for p in parts], [len(batch)]])
        blobs += parts
    for name, values in batch.columns.items():  # named columns: numbers as they are, others JSON
        arr = np.asarray(values)
        if arr.dtype.kind in "fiub":
            blob, kind = np.ascontiguousarray(arr).tobytes(), arr.dtype.str
        else:
            blob, kind = json.dumps(arr.tolist(), separators=(",", ":")).encode(), "json"
        specs.append([f"col:{name}", kind, [len(blob)], [len(batch)]])
        blobs.append(blob)
    return specs, blobs


def encode_record_batch(batch: RecordBatch) -> bytes:
    """``SFB2``: a JSON header naming each column (name, type, buffer lengths, shape), then the
    buffers. A reader finds columns by name, so a batch may carry columns another does not."""
    specs, blobs = _columns(batch)
    header = json.dumps(
        {
            "t": batch.source_topic,
            "p": batch.source_partition,
            "s": batch.stage,
            "n": len(batch),
            "x": batch.extra,
            "c": specs,
        },
        separators=(",", ":"),
    ).encode()
    return b"".join([_HEADER.pack(MAGIC, len(header)), header, *blobs])


def _batch_header(data: bytes) -> tuple[dict[str, Any], int]:
    if not data or len(data) < _HEADER.size:
        raise _corrupt("record batch: too short")
    magic, hlen = _HEADER.unpack_from(data)
    if magic not in (MAGIC, MAGIC_V1):
        raise _corrupt(f"record batch: bad magic {magic!r}")
    end = _HEADER.size + hlen
    if end > len(data):
        raise _corrupt("record batch: truncated header")
    try:
        header = json.loads(data[_HEADER.size : end])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _corrupt("record batch: header is not JSON") from None
    if not isinstance(header, dict):
        raise _corrupt("record batch: header is not a JSON object")
    header["v"] = 1 if magic == MAGIC_V1 else 2
    return header, end


def encode_record_batches(batch: RecordBatch, max_bytes: int) -> list[bytes]:
    """``batch`` encoded as one message, or as several of at most ``max_bytes`` each when it is
    larger (a single row larger than that still goes out alone)."""
    data = encode_record_batch(batch)
    n = len(batch)
    if len(data) <= max_bytes or n <= 1:
        return [data]
    parts = min(n, -(-len(data) // max_bytes) + 1)  # one spare part: rows differ in size
    bounds = np.linspace(0, n, parts + 1).astype(np.int64)
    out: list[bytes] = []
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        if hi > lo:
            out += encode_record_batches(batch.select(np.arange(lo, hi)), max_bytes)
    return out


def record_batch_length(data: bytes) -> int:
    """Rows in an encoded batch, from its header alone."""
    return int(_batch_header(data)[0]["n"])


def decode_record_batch(data: bytes) -> RecordBatch:
    header, pos = _batch_header(data)
    if header["v"] == 1:
        return _decode_v1(data, header, pos)
    try:
        n, view = int(header["n"]), memoryview(data)
        columns: dict[str, Any] = {}
        for name, kind, lengths, shape in header["c"]:
            parts = []
            for ln in lengths:
                if int(ln) < 0 or pos + int(ln) > len(data):
                    raise _corrupt(
                        f"record batch: column {name!r} runs past the end of the message"
                    )
                parts.append(view[pos : pos + int(ln)])
                pos += int(ln)
            arr: np.ndarray | BytesColumn
            if name.startswith("col:"):  # a named column (pass-through fields)
                arr = _named_column(kind, parts[0], n)
            elif kind == "i8":
                arr = np.frombuffer(parts[0], dtype=np.int64)
            elif kind == "f4":
                arr = np.frombuffer(parts[0], dtype=np.float32).reshape([int(d) for d in shape])
            elif kind == "bytes":
                ends = np.frombuffer(parts[0], dtype=np.int64)
                null = np.frombuffer(parts[1], dtype=np.bool_)
                blob = bytes(parts[2])
                if len(ends) != n or len(null) != n or (n and int(ends[-1]) != len(blob)):
                    raise _corrupt("record batch: inconsistent column lengths")
                arr = BytesColumn(blob, ends, null)
            else:
                raise _corrupt(f"record batch: column {name!r} has unknown type {kind!r}")
            if len(arr) != n:
                raise _corrupt("record batch: inconsistent column lengths")
            columns[str(name)] = arr
        if pos != len(data):
            raise _corrupt(f"record batch: {len(data) - pos} bytes after the last column")
        missing = [c for c in (*INT64_COLUMNS, "features", *BYTES_COLUMNS[:3]) if c not in columns]
        if missing:
            raise _corrupt(f"record batch: no column {', '.join(missing)}")
        return RecordBatch(
            source_topic=str(header["t"]),
            source_partition=int(header["p"]),
            offsets=columns["offsets"],
            ingest_ms=columns["ingest_ms"],
            event_ms=columns["event_ms"],
            keys=columns["keys"],
            values=columns["values"],
            device_ids=columns["device_ids"],
            features=columns["features"],
            stage=str(header["s"]),
            extra=dict(header.get("x") or {}),
            texts=columns.get("texts"),
            columns={k[4:]: v for k, v in columns.items() if k.startswith("col:")},
        )
    except DecodeError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise _corrupt(f"record batch: malformed ({type(exc).__name__}: {exc})") from None


def _named_column(kind: str, part: memoryview, n: int) -> np.ndarray:
    if kind == "json":
        items = json.loads(bytes(part))
        if not isinstance(items, list) or len(items) != n:
            raise _corrupt("record batch: inconsistent column lengths")
        arr = np.empty(n, dtype=object)
        arr[:] = items
        return arr
    dtype = np.dtype(kind)
    if dtype.kind not in "fiub":
        raise _corrupt(f"record batch: a named column of type {kind!r}")
    return np.frombuffer(part, dtype=dtype)


def _decode_v1(data: bytes, header: dict[str, Any], pos: int) -> RecordBatch:
    """An ``SFB1`` batch: three int64 columns, the features, then 3 or 4 bytes columns."""
    try:
        n, f, lengths = int(header["n"]), int(header["f"]), [int(x) for x in header["l"]]
        view = memoryview(data)
        if len(lengths) not in (13, 16) or pos + sum(lengths) != len(data):
            raise _corrupt(
                f"record batch: {len(data) - pos} body bytes, header announces {sum(lengths)}"
            )
        parts = []
        for ln in lengths:
            parts.append(view[pos : pos + ln])
            pos += ln
        i64 = [np.frombuffer(parts[i], dtype=np.int64) for i in range(3)]
        feats = np.frombuffer(parts[3], dtype=np.float32).reshape(n, f)
        cols = []
        n_cols = 3 if len(lengths) == 13 else 4  # the 4th: texts (a text pipeline's cleaned batch)
        for j in range(n_cols):
            ends = np.frombuffer(parts[4 + 2 * j], dtype=np.int64)
            null = np.frombuffer(parts[5 + 2 * j], dtype=np.bool_)
            blob = bytes(parts[4 + 2 * n_cols + j])
            if len(ends) != n or len(null) != n or (n and int(ends[-1]) != len(blob)):
                raise _corrupt("record batch: inconsistent column lengths")
            cols.append(BytesColumn(blob, ends, null))
        if any(len(a) != n for a in i64):
            raise _corrupt("record batch: inconsistent column lengths")
        return RecordBatch(
            source_topic=str(header["t"]),
            source_partition=int(header["p"]),
            offsets=i64[0],
            ingest_ms=i64[1],
            event_ms=i64[2],
            keys=cols[0],
            values=cols[1],
            device_ids=cols[2],
            features=feats,
            stage=str(header["s"]),
            extra=dict(header.get("x") or {}),
            texts=cols[3] if n_cols == 4 else None,
        )
    except DecodeError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise _corrupt(f"record batch: malformed ({type(exc).__name__}: {exc})") from None

"""Columnar record batches for the internal topics (``SFB1``): a JSON header and raw numpy
buffers, decoded zero-copy."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from streamflow.errors import DecodeError
from streamflow.records import BytesColumn, ReasonCode, RecordBatch

MAGIC = b"SFB1"
_HEADER = struct.Struct(">4sI")  # magic, header length


def _corrupt(reason: str) -> DecodeError:
    """An internal batch message that does not decode: ``ReasonCode.CORRUPT_BATCH``."""
    return DecodeError(reason, ReasonCode.CORRUPT_BATCH)


def encode_record_batch(batch: RecordBatch) -> bytes:
    cols = [batch.keys, batch.values, batch.device_ids] + ([batch.texts] if batch.texts is not None else [])
    arrays: list[np.ndarray] = [np.ascontiguousarray(batch.offsets, np.int64), np.ascontiguousarray(batch.ingest_ms, np.int64),
              np.ascontiguousarray(batch.event_ms, np.int64), np.ascontiguousarray(batch.features, np.float32)]
    for c in cols:
        arrays += [np.ascontiguousarray(c.ends, np.int64), np.ascontiguousarray(c.null, np.bool_)]
    blobs = [a.tobytes() for a in arrays] + [c.data for c in cols]
    header = json.dumps({
        "t": batch.source_topic, "p": batch.source_partition, "s": batch.stage, "n": len(batch),
        "f": int(batch.features.shape[1]) if batch.features.ndim == 2 else 0, "x": batch.extra,
        "l": [len(b) for b in blobs],
    }, separators=(",", ":")).encode()
    return b"".join([_HEADER.pack(MAGIC, len(header)), header, *blobs])


def _batch_header(data: bytes) -> tuple[dict[str, Any], int]:
    if not data or len(data) < _HEADER.size:
        raise _corrupt("record batch: too short")
    magic, hlen = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise _corrupt(f"record batch: bad magic {magic!r}")
    end = _HEADER.size + hlen
    if end > len(data):
        raise _corrupt("record batch: truncated header")
    try:
        header = json.loads(data[_HEADER.size:end])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _corrupt("record batch: header is not JSON") from None
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
    try:
        n, f, lengths = int(header["n"]), int(header["f"]), [int(x) for x in header["l"]]
        view = memoryview(data)
        if len(lengths) not in (13, 16) or pos + sum(lengths) != len(data):
            raise _corrupt(f"record batch: {len(data) - pos} body bytes, header announces "
                           f"{sum(lengths)}")
        parts = []
        for ln in lengths:
            parts.append(view[pos:pos + ln])
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
        return RecordBatch(source_topic=str(header["t"]), source_partition=int(header["p"]), offsets=i64[0],
                           ingest_ms=i64[1], event_ms=i64[2], keys=cols[0], values=cols[1], device_ids=cols[2],
                           features=feats, stage=str(header["s"]), extra=dict(header.get("x") or {}),
                           texts=cols[3] if n_cols == 4 else None)
    except DecodeError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise _corrupt(f"record batch: malformed ({type(exc).__name__}: {exc})") from None

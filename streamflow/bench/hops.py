"""Per-hop latency of a latency run, from what the bench sees outside the system under test.

Each scored record passes points the bench can date without touching the pipeline:

- ``raw``: the raw message's timestamp (CreateTime, set by the feeder's producer; the
  ``sf-ingest-ms`` header of the result repeats it);
- ``<step> out``: for the stage topology, the CreateTime of the internal-topic message that
  carried the record out of that step (librdkafka stamps it when the stage calls produce);
- ``scored``: raw timestamp + the result's ``latency_ms`` field (taken by the inference step
  after the model ran, before the result was encoded);
- ``produced``: the result message's CreateTime (the produce call);
- ``received``: its arrival at the bench's consumer (``arrivals.py``).

Kafka timestamps are whole milliseconds (librdkafka truncates): the CreateTime points are read
as the middle of their millisecond (+0.5 ms), so a hop is right to about a millisecond, and the
hops' sum may differ from the whole-run end-to-end figure (which reads the raw timestamp as
is) by half of one.

The hops are the differences between consecutive points, per record; ``hop_table`` gives their
p50 and p99 over the run and, for the tail, the same hops of the records whose end-to-end
latency is at or above its p99, with each hop's share of those records' mean latency: what
makes a p99 record late. Fetch, hand-off to the agent, handling and the broker's
acknowledgement happen inside a process: the in-process histograms (``inprocess.py``) show
them per batch, not per record.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import fastavro
import numpy as np

from streamflow.bench.arrivals import source_key
from streamflow.bench.results import Hop
from streamflow.bench.scan import Record, Visitor
from streamflow.headers import H_INGEST_MS, H_SOURCE_OFFSET, H_SOURCE_PARTITION

LATENCY_FIELD = "latency_ms"
MID_MS = 0.5  # a CreateTime is truncated to its millisecond: read it as the middle of it


def align(keys: np.ndarray, point_keys: np.ndarray, point_ms: np.ndarray) -> np.ndarray:
    """The time of each of ``keys`` at a point that dated ``point_keys`` (NaN where the point
    did not see a key; the earliest time where it saw one twice)."""
    out = np.full(len(keys), np.nan)
    if not len(point_keys) or not len(keys):
        return out
    order = np.lexsort((point_ms, point_keys))  # by key, then time: the first of a key is earliest
    k, t = point_keys[order], point_ms[order]
    first = np.ones(len(k), dtype=bool)
    first[1:] = k[1:] != k[:-1]
    k, t = k[first], t[first]
    i = np.clip(np.searchsorted(k, keys), 0, len(k) - 1)
    hit = k[i] == keys
    out[hit] = t[i[hit]]
    return out


def _p50(d: np.ndarray) -> float:
    return round(float(np.percentile(d, 50)), 1) if len(d) else float("nan")


def hop_table(
    points: list[tuple[str, np.ndarray]],
    side: Sequence[tuple[str, str, np.ndarray]] = (),
    window: np.ndarray | None = None,
) -> list[Hop]:
    """Hops between consecutive points (name, time of each record in ms, NaN: not seen), all
    arrays over the same records, then ``side`` hops (from a point's name, to a name, times)
    that are not on the results' path (a commit); the tail is the records whose first-to-last
    latency is at or above its p99. With ``window`` (each record's window of the run), each
    hop's p50 in the first and the last window: where the drift over the run comes from."""
    if len(points) < 2 or not len(points[0][1]):
        return []
    e2e = points[-1][1] - points[0][1]
    done = np.isfinite(e2e)
    if not done.any():
        return []
    tail = done & (e2e >= np.percentile(e2e[done], 99))
    tail_mean = float(np.mean(e2e[tail]))
    first = last = np.zeros(len(e2e), dtype=bool)
    if window is not None and len(window) and window.max() > window.min():
        first, last = window == window.min(), window == window.max()
    at = dict(points)
    pairs = [
        (a, b, tb - ta, True) for (a, ta), (b, tb) in zip(points[:-1], points[1:], strict=True)
    ]
    pairs += [(a, b, tb - at[a], False) for a, b, tb in side if a in at]
    hops = []
    for a, b, d, on_path in pairs:
        ok = np.isfinite(d)
        if not ok.any():
            continue
        t = tail & ok
        hops.append(
            Hop(
                f"{a} -> {b}",
                int(ok.sum()),
                round(float(np.percentile(d[ok], 50)), 1),
                round(float(np.percentile(d[ok], 99)), 1),
                round(float(np.percentile(d[t], 50)), 1) if t.any() else float("nan"),
                round(float(np.mean(d[t])) / tail_mean, 3)
                if on_path and t.any() and tail_mean
                else float("nan"),
                _p50(d[first & ok]),
                _p50(d[last & ok]),
            )
        )
    return hops


class HopCollector:
    """Visitors for ``scan.scan_topics``: the records' times at each point of their trip."""

    def __init__(self, result_format: str, result_schema: Any) -> None:
        self.format = result_format
        self.schema = fastavro.parse_schema(result_schema) if result_format != "json" else None
        names = (
            {f["name"] for f in result_schema.get("fields", [])}
            if isinstance(result_schema, dict)
            else set()
        )
        self.has_latency = result_format == "json" or LATENCY_FIELD in names
        self.internal: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        self.result_keys: list[int] = []
        self.result_ingest: list[int] = []
        self.result_created: list[int] = []
        self.result_latency: list[float] = []

    def internal_visitor(self, role: str) -> Visitor:
        """For an internal topic: every record of each batch message at its CreateTime."""
        from streamflow.codecs import decode_record_batch

        keys, times = self.internal.setdefault(role, ([], []))

        def visit(r: Record) -> None:
            if not r.value:
                return
            b = decode_record_batch(r.value)
            keys.append(source_key(b.source_partition, b.offsets))
            times.append(np.full(len(b), r.timestamp_ms + MID_MS))

        return visit

    def result_visitor(self) -> Visitor:
        """For the sink topic: each result's source, raw timestamp, CreateTime, latency_ms."""

        def visit(r: Record) -> None:
            h = {k: v for k, v in r.headers}
            try:
                p = int(h.get(H_SOURCE_PARTITION, b"-1"))
                o = int(h.get(H_SOURCE_OFFSET, b"-1"))
                ingest = int(h.get(H_INGEST_MS, b"0"))
            except ValueError:
                return
            self.result_keys.append((p << 40) | o)
            self.result_ingest.append(ingest)
            self.result_created.append(r.timestamp_ms)
            self.result_latency.append(self._latency(r.value))

        return visit

    def _latency(self, value: bytes | None) -> float:
        if not self.has_latency or not value:
            return float("nan")
        try:
            if self.schema is None:
                got = json.loads(value).get(LATENCY_FIELD)
            else:
                got = fastavro.schemaless_reader(io.BytesIO(value), self.schema, None)
                got = got.get(LATENCY_FIELD) if isinstance(got, dict) else None
        except Exception:  # a result this reader cannot decode: no "scored" point for it
            return float("nan")
        return float(got) if isinstance(got, int | float) else float("nan")

    def points(
        self, keys: np.ndarray, ingest_ms: np.ndarray, arrival_ms: np.ndarray, steps: list[str]
    ) -> list[tuple[str, np.ndarray]]:
        """The points of the received results (``keys``), in trip order: raw, each internal
        step's output (``steps``: roles in order), scored, produced, received."""
        out: list[tuple[str, np.ndarray]] = [("raw", ingest_ms + MID_MS)]
        for role in steps:
            ks, ts = self.internal.get(role, ([], []))
            if ks:
                out.append((role, align(keys, np.concatenate(ks), np.concatenate(ts))))
        rk = np.asarray(self.result_keys, dtype=np.int64)
        if self.has_latency:
            scored = np.asarray(self.result_ingest, np.float64) + np.asarray(self.result_latency)
            out.append(("scored", align(keys, rk, scored)))
        created = np.asarray(self.result_created, np.float64) + MID_MS
        out.append(("produced", align(keys, rk, created)))
        out.append(("received", arrival_ms))
        return out

"""Per-hop latency from the points the bench can date, and what makes the tail late."""

from __future__ import annotations

import io
import math
from pathlib import Path

import fastavro
import numpy as np

from streamflow.bench.arrivals import source_key
from streamflow.bench.commits import commit_times, raw_group
from streamflow.bench.hops import HopCollector, align, hop_table
from streamflow.bench.scan import Record
from streamflow.codecs import encode_record_batch
from streamflow.records import BytesColumn, RecordBatch
from streamflow.settings.loading import load_settings

PIPELINE = Path(__file__).parents[3] / "pipelines" / "telemetry.toml"


def test_align_finds_each_key_and_leaves_the_unseen_as_nan() -> None:
    got = align(np.array([5, 1, 9]), np.array([1, 5, 7]), np.array([10.0, 50.0, 70.0]))
    assert got[:2].tolist() == [50.0, 10.0] and math.isnan(got[2])


def test_align_takes_the_earliest_time_of_a_key_seen_twice() -> None:
    got = align(np.array([3]), np.array([3, 3, 2]), np.array([40.0, 30.0, 1.0]))
    assert got.tolist() == [30.0]


def test_hops_are_differences_of_consecutive_points_and_the_tail_shows_the_late_hop() -> None:
    n = 1000
    raw = np.zeros(n)
    out = raw + 2.0
    late = np.arange(n) >= n - 10  # ten records wait 100 ms more between out and received
    received = out + 5.0 + np.where(late, 100.0, 0.0)
    hops = hop_table([("raw", raw), ("out", out), ("received", received)])
    assert [(h.name, h.records, h.p50_ms) for h in hops] == [
        ("raw -> out", n, 2.0),
        ("out -> received", n, 5.0),
    ]
    assert hops[1].tail_p50_ms == 105.0
    assert hops[1].tail_share > 0.95 and hops[0].tail_share < 0.05


def test_a_point_that_missed_some_records_counts_the_others() -> None:
    mid = np.array([1.0, np.nan, 1.0])
    hops = hop_table([("raw", np.zeros(3)), ("mid", mid), ("end", np.full(3, 4.0))])
    assert [h.records for h in hops] == [2, 2]


def test_side_hops_start_from_a_named_point_and_have_no_share_of_the_path() -> None:
    hops = hop_table(
        [("raw", np.zeros(4)), ("received", np.full(4, 10.0))],
        [("raw", "raw committed", np.full(4, 900.0))],
    )
    assert hops[-1].name == "raw -> raw committed" and hops[-1].p50_ms == 900.0
    assert math.isnan(hops[-1].tail_share)


def test_commit_time_is_the_first_sample_past_the_offset() -> None:
    keys = source_key(np.array([0, 0, 1, 1]), np.array([0, 5, 3, 9]))
    samples = [(100.0, 0, 3), (200.0, 0, 10), (150.0, 1, 4)]
    got = commit_times(keys, samples)
    assert got[:3].tolist() == [100.0, 200.0, 150.0] and math.isnan(got[3])


def test_the_raw_group_is_the_one_that_reads_the_raw_topic() -> None:
    settings = load_settings(str(PIPELINE), {"name": "bench-x"})
    assert raw_group("streamflow", settings) == settings.group_id("clean")
    assert raw_group("chained", settings) == settings.group_id("chained")
    assert raw_group("limit-5ms", settings) == settings.name


def _internal(partition: int, offsets: list[int]) -> bytes:
    n = len(offsets)
    empty = BytesColumn.from_list([b""] * n)
    return encode_record_batch(
        RecordBatch(
            "raw", partition, np.array(offsets, np.int64), np.zeros(n, np.int64), empty, empty,
            empty, np.zeros(n, np.int64), np.zeros((n, 2), np.float32),
        )
    )  # fmt: skip


def test_collector_dates_records_at_internal_topics_and_results() -> None:
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "score", "type": "double"}, {"name": "latency_ms", "type": "double"}],
    }
    c = HopCollector("avro", schema)
    c.internal_visitor("clean out")(Record(0, 0, 1010, [], _internal(2, [7, 8])))
    value = io.BytesIO()
    fastavro.schemaless_writer(value, schema, {"score": 0.5, "latency_ms": 30.0})
    headers = [("sf-source-partition", b"2"), ("sf-source-offset", b"7"), ("sf-ingest-ms", b"1000")]
    c.result_visitor()(Record(0, 0, 1040, headers, value.getvalue()))
    keys = source_key(np.array([2]), np.array([7]))
    points = dict(c.points(keys, np.array([1000.0]), np.array([1050.0]), ["clean out"]))
    assert list(points) == ["raw", "clean out", "scored", "produced", "received"]
    # CreateTime points are read as the middle of their millisecond
    assert points["clean out"].tolist() == [1010.5]
    assert points["scored"].tolist() == [1030.0]
    assert points["produced"].tolist() == [1040.5]


def test_each_hop_shows_its_p50_in_the_first_and_last_window_where_the_drift_is() -> None:
    n = 100
    window = np.repeat([0, 1, 2, 3], n // 4)
    raw = np.zeros(n)
    out = raw + 3.0  # the same in every window
    received = out + 5.0 + 10.0 * window  # this hop drifts
    hops = hop_table([("raw", raw), ("out", out), ("received", received)], window=window)
    assert [(h.first_p50_ms, h.last_p50_ms) for h in hops] == [(3.0, 3.0), (5.0, 35.0)]
    assert math.isnan(hop_table([("raw", raw), ("out", out)])[0].first_p50_ms)

"""Latency per window of the feed, and the run's steady part."""

from __future__ import annotations

import numpy as np

from streamflow.bench.latency import steady_span, window_of, windows
from streamflow.bench.systems import consume_wait_ms


def test_windows_split_the_run_by_raw_timestamp() -> None:
    start = 1_000_000.0
    ingest = np.array([start + 10, start + 20, start + 5_010, start + 5_020, start + 12_000])
    latency = np.array([10.0, 30.0, 100.0, 300.0, 7.0])
    got = windows(ingest, latency, start, width_s=5.0)
    assert [(w.start_s, w.records) for w in got] == [(0.0, 2), (5.0, 2), (10.0, 1)]
    assert got[1].p50_ms == 200.0 and got[1].p99_ms == 298.0
    assert windows(np.array([]), np.array([]), start) == []


def test_records_before_the_start_count_in_the_first_window() -> None:
    got = windows(np.array([990.0, 1010.0]), np.array([1.0, 3.0]), 1000.0, width_s=5.0)
    assert [(w.start_s, w.records, w.p50_ms) for w in got] == [(0.0, 2, 2.0)]


def test_an_empty_window_is_left_out_not_reported_as_nan() -> None:
    got = windows(np.array([0.0, 11_000.0]), np.array([1.0, 2.0]), 0.0, width_s=5.0)
    assert [w.start_s for w in got] == [0.0, 10.0]


def test_the_steady_part_leaves_out_the_first_window_of_a_long_enough_run() -> None:
    assert steady_span(100.0, 120.0, 5.0) == (105.0, 120.0)
    assert steady_span(100.0, 108.0, 5.0) == (100.0, 108.0)  # too short: all of it


def test_plain_loops_are_named_by_their_consume_wait() -> None:
    assert consume_wait_ms("limit") == 5.0
    assert consume_wait_ms("limit-5ms") == 5.0
    assert consume_wait_ms("limit-50ms") == 50.0
    assert consume_wait_ms("limit-2.5ms") == 2.5
    assert consume_wait_ms("chained") is None
    assert consume_wait_ms("limit-fast") is None


def test_window_of_counts_from_the_start() -> None:
    got = window_of(np.array([900.0, 1000.0, 5999.0, 6000.0]), 1000.0, width_s=5.0)
    assert got.tolist() == [0, 0, 0, 1]

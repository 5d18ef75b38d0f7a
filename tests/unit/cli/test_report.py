"""streamflow report's own rate and quantile arithmetic (streamflow/report.py), on recorded
samples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from streamflow.cli.report import from_samples, histogram_quantile, render
from streamflow.errors import ConfigError

LE = ("0.01", "0.05", "0.1", "0.5", "+Inf")


def test_histogram_quantile_interpolates_like_promql() -> None:
    buckets = {0.01: 0.0, 0.05: 50.0, 0.1: 90.0, 0.5: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01 + 0.04 * 50 / 50)
    assert histogram_quantile(0.9, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.1 + 0.4 * 5 / 10)
    assert (
        histogram_quantile(0.99, {0.1: 10.0, math.inf: 100.0}) == 0.1
    )  # in +Inf: the top finite bound
    assert math.isnan(histogram_quantile(0.5, {0.1: 0.0, math.inf: 0.0}))


def write_samples(path: Path, seconds: int) -> None:
    """1,000 records/s through clean, 990 ok to inference, 10 dead letters/s; every result
    between 10 and 50 ms."""
    with path.open("w") as out:
        for t in range(seconds + 1):
            m = [
                [
                    "streamflow_records_total",
                    {"pipeline": "p", "stage": "clean", "outcome": "ok"},
                    990.0 * t,
                ],
                [
                    "streamflow_records_total",
                    {"pipeline": "p", "stage": "clean", "outcome": "rejected"},
                    10.0 * t,
                ],
                [
                    "streamflow_dead_letters_total",
                    {"pipeline": "p", "stage": "clean", "reason": "nan"},
                    10.0 * t,
                ],
                [
                    "streamflow_consumer_lag_records",
                    {"pipeline": "p", "stage": "clean", "topic": "r", "partition": "0"},
                    float(max(0, 5 - t)),
                ],
                [
                    "streamflow_records_total",
                    {"pipeline": "other", "stage": "clean", "outcome": "ok"},
                    5e6 * t,
                ],
            ]
            cumulative = (0.0, 990.0 * t, 990.0 * t, 990.0 * t, 990.0 * t)
            m += [
                ["streamflow_end_to_end_latency_seconds_bucket", {"pipeline": "p", "le": le}, c]
                for le, c in zip(LE, cumulative, strict=True)
            ]
            out.write(json.dumps({"t": 1000.0 + t, "m": m}) + "\n")


def test_rates_quantiles_and_lag_from_recorded_samples(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    write_samples(path, 12)
    p = from_samples(path, "p", window_s=5.0)
    assert {v for _, v in p.throughput["clean"]} == {
        1000.0
    }  # ok + rejected; the other pipeline left out
    assert {v for _, v in p.dead_letters["nan"]} == {10.0}
    assert [v for _, v in p.lag["clean"]][-1] == 0.0
    p50 = [v for _, v in p.latency_ms["p50"]]
    assert all(v == pytest.approx(30.0) for v in p50)  # half-way through the 10-50 ms bucket
    png = render(p, tmp_path / "r.png", "test")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_run_too_short_to_plot_says_so(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    write_samples(path, 0)
    with pytest.raises(ConfigError, match="at least two"):
        from_samples(path, "p")

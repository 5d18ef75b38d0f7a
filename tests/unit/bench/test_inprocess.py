"""Quantiles of the stages' own histograms over a run, from two scrapes."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streamflow.bench.inprocess import parse_histograms, quantile, run_quantiles


def test_quantile_interpolates_within_the_bucket() -> None:
    buckets = {0.01: 0.0, 0.02: 100.0, math.inf: 100.0}
    assert quantile(buckets, 0.5) == 0.015
    assert math.isnan(quantile({0.01: 0.0, math.inf: 0.0}, 0.5))


def test_quantile_in_the_inf_bucket_is_the_highest_bound() -> None:
    assert quantile({0.01: 1.0, math.inf: 100.0}, 0.99) == 0.01


def test_run_quantiles_read_what_was_observed_between_two_scrapes() -> None:
    r = CollectorRegistry()
    h = Histogram(
        "streamflow_queue_delay_seconds", "", ["pipeline", "stage"], registry=r,
        buckets=(0.001, 0.01, 0.1),
    )  # fmt: skip
    for _ in range(50):
        h.labels("p", "clean").observe(0.05)  # before the run: left out
    before = parse_histograms(generate_latest(r).decode())
    for _ in range(100):
        h.labels("p", "clean").observe(0.005)
    after = parse_histograms(generate_latest(r).decode())
    [q] = run_quantiles(before, after)
    assert (q.name, q.per, q.count) == ("queue_delay clean", "batch", 100.0)
    assert 1.0 < q.p50_ms < 10.0 and q.p99_ms <= 10.0


def test_other_metrics_are_ignored() -> None:
    text = 'other_bucket{le="1.0"} 3.0\n'
    assert parse_histograms(text) == {}


def test_gc_pauses_are_counted_per_pause_over_every_generation() -> None:
    r = CollectorRegistry()
    h = Histogram(
        "streamflow_gc_pause_seconds", "", ["pipeline", "stage", "generation"], registry=r,
        buckets=(0.001, 0.01, 0.1),
    )  # fmt: skip
    before = parse_histograms(generate_latest(r).decode())
    for generation, pause in (("0", 0.0005), ("0", 0.0005), ("2", 0.05)):
        h.labels("p", "chained", generation).observe(pause)
    [q] = run_quantiles(before, parse_histograms(generate_latest(r).decode()))
    assert (q.name, q.per, q.count) == ("gc_pause chained", "pause", 3.0)
    assert q.p50_ms <= 1.0 and q.p99_ms > 10.0

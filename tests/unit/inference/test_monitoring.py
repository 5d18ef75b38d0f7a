"""Input drift (PSI over the training bins, on a sliding window) and the model-output metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamflow.errors import ConfigError
from streamflow.inference.monitoring import (
    DriftMonitor,
    OutputMonitor,
    bin_index,
    drift_bins,
    psi,
    read_drift_bins,
)
from streamflow.metrics import Metrics
from streamflow.settings import Settings, with_overrides
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE

RNG = np.random.default_rng(3)
TRAIN = RNG.normal(50.0, 10.0, 50_000)  # one feature's training values: mean 50, std 10


def counts(bins: tuple[list[float], list[float]], values: np.ndarray) -> np.ndarray:
    edges, expected = bins
    return np.bincount(bin_index(np.array(edges), values), minlength=len(expected))


def test_drift_bins_are_training_deciles_with_their_fractions() -> None:
    edges, expected = drift_bins(TRAIN)
    assert len(edges) == 9 and len(expected) == 10
    assert edges == sorted(edges) and edges[4] == pytest.approx(50.0, abs=0.5)
    assert sum(expected) == pytest.approx(1.0, abs=1e-5)
    assert all(f == pytest.approx(0.1, abs=1e-3) for f in expected)


def test_a_point_mass_gets_one_right_closed_bin() -> None:
    """Half the rows are 0 (a device without a GPU): the four deciles at 0 collapse into one
    edge, and the zeros sit in the bin (-inf, 0] that it closes, in training and live."""
    values = np.concatenate([np.zeros(5000), RNG.uniform(1, 100, 5000)])
    edges, expected = drift_bins(values)
    assert edges[0] == 0.0 < edges[1] and len(edges) == 6 and len(expected) == 7
    assert expected[0] == pytest.approx(0.5)
    assert bin_index(np.array(edges), np.array([0.0, 1e-9, -3.0])).tolist() == [0, 1, 0]


def test_psi_is_near_zero_on_the_training_distribution_and_large_after_a_shift() -> None:
    bins = drift_bins(TRAIN)
    same = RNG.normal(50.0, 10.0, 10_000)
    shifted = RNG.normal(60.0, 10.0, 10_000)  # one std
    assert psi(bins.expected, counts(bins, same)) < 0.02
    assert psi(bins.expected, counts(bins, shifted)) > 0.6  # about 1 = (shift / std) ** 2
    half = RNG.normal(52.5, 10.0, 10_000)  # a quarter std: (0.25) ** 2, moderate at most
    assert 0.02 < psi(bins.expected, counts(bins, half)) < 0.25


def test_psi_stays_finite_when_a_bin_is_empty() -> None:
    """Every value beyond the training range: the empty bins count as EPSILON, not 0."""
    bins = drift_bins(TRAIN)
    value = psi(bins.expected, counts(bins, np.full(1000, 500.0)))
    assert np.isfinite(value) and value > 5
    assert psi([0.5, 0.5], [0, 0]) == 0.0


# ---- the monitor, on the telemetry pipeline's features ----------------------------------------

MONITORED = ("cpu_temp_c", "power_w")  # the others have no drift bins in this stats file


def settings_with(tmp_path: Path, window: int, **extra: object) -> Settings:
    edges, expected = drift_bins(TRAIN)
    bins = {"drift_edges": edges, "drift_expected": expected}
    features = {n: {"mean": 0.0, "std": 1.0, **bins} for n in MONITORED}
    features["fan_rpm"] = {"mean": 0.0, "std": 1.0}  # statistics, but no bins
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"features": features}))
    base = load_settings(PIPELINE, environ={})
    return with_overrides(
        base,
        model={"stats": str(path)},
        monitoring={"drift_window": window, **extra},
    )


def batch(n: int, shift: float = 0.0) -> np.ndarray:
    """n cleaned rows of the pipeline's 16 features; the monitored ones drawn like TRAIN."""
    x = RNG.normal(0.0, 1.0, (n, 16)).astype(np.float32)
    for name in MONITORED:
        x[:, PIPELINE_FEATURES.index(name)] = RNG.normal(50.0 + shift, 10.0, n)
    return x


PIPELINE_FEATURES = load_settings(PIPELINE, environ={}).feature_names


def test_only_features_with_bins_are_monitored_and_published_after_enough_records(
    tmp_path: Path,
) -> None:
    s = settings_with(tmp_path, window=5000)
    monitor, m = DriftMonitor(s), Metrics.create()
    assert monitor.names == list(MONITORED)

    def gauge(feature: str) -> float | None:
        labels = {"pipeline": s.name, "feature": feature}
        return m.registry.get_sample_value("streamflow_input_drift_psi", labels)

    monitor.observe(batch(999), m)
    assert gauge("cpu_temp_c") is None  # under min(drift_window, 1000) records: noise
    monitor.observe(batch(1), m)
    assert all(v is not None and v < 0.05 for v in map(gauge, MONITORED))
    assert gauge("fan_rpm") is None and gauge("gpu_temp_c") is None


def test_the_window_slides_old_records_drop_out(tmp_path: Path) -> None:
    s = settings_with(tmp_path, window=2000)
    monitor = DriftMonitor(s)
    for i in range(6):
        monitor.observe(batch(700))
        assert min(700 * (i + 1), 1800) <= monitor.n <= 2000  # give or take a chunk (a tenth)
    assert max(monitor.psi().values()) < 0.1
    monitor.observe(batch(2000, shift=30.0))  # three std: the whole window drifted
    assert min(monitor.psi().values()) > 2
    monitor.observe(batch(900))  # half and half
    assert 0.25 < min(monitor.psi().values()) < max(monitor.psi().values()) < 5
    for _ in range(3):
        monitor.observe(batch(700))  # the drifted records have left the window
    assert max(monitor.psi().values()) < 0.1


def test_the_window_matches_a_direct_count_of_the_last_records(tmp_path: Path) -> None:
    """Batches that line up with the chunks: the window is exactly the last 1000 records."""
    s = settings_with(tmp_path, window=1000)
    monitor = DriftMonitor(s)
    rows = np.concatenate([batch(100, shift=3.0 * i) for i in range(25)])
    for start in range(0, len(rows), 100):
        monitor.observe(rows[start : start + 100])
    bins = drift_bins(TRAIN)
    for name, value in monitor.psi().items():
        last = rows[-1000:, PIPELINE_FEATURES.index(name)]
        assert value == pytest.approx(psi(bins.expected, counts(bins, last)))


def test_a_batch_larger_than_the_window_keeps_its_last_records(tmp_path: Path) -> None:
    monitor = DriftMonitor(settings_with(tmp_path, window=1000))
    monitor.observe(np.concatenate([batch(5000, shift=40.0), batch(1000)]))
    assert monitor.n == 1000 and max(monitor.psi().values()) < 0.1


def test_without_bins_or_with_drift_off_nothing_is_monitored(tmp_path: Path) -> None:
    assert not DriftMonitor(settings_with(tmp_path, window=1000, drift=False)).enabled
    plain = with_overrides(load_settings(PIPELINE, environ={}), model={"stats": ""})
    monitor = DriftMonitor(plain)
    monitor.observe(batch(2000), Metrics.create())  # nothing to do, nothing raised
    assert not monitor.enabled and monitor.psi() == {}


def test_the_telemetry_model_ships_bins_for_every_feature() -> None:
    s = load_settings(PIPELINE, environ={})
    bins = read_drift_bins(s)
    assert set(bins) == set(s.feature_names)
    assert all(abs(sum(b.expected) - 1) < 1e-5 for b in bins.values())


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"drift_edges": [1.0, 2.0], "drift_expected": [0.5, 0.5]}, "one more fraction"),
        ({"drift_edges": [2.0, 1.0], "drift_expected": [0.3, 0.3, 0.4]}, "increasing"),
        ({"drift_edges": "1,2", "drift_expected": [0.3, 0.3, 0.4]}, "lists of numbers"),
        ({"drift_edges": [1.0], "drift_expected": [-0.5, 1.5]}, "fractions >= 0"),
    ],
)
def test_malformed_bins_fail_at_start_up_naming_the_feature(
    tmp_path: Path, entry: dict[str, object], message: str
) -> None:
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"features": {"power_w": entry}}))
    s = with_overrides(load_settings(PIPELINE, environ={}), model={"stats": str(path)})
    with pytest.raises(ConfigError, match=rf"features\.power_w: .*{message}"):
        DriftMonitor(s)


def test_a_window_below_one_record_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="monitoring.drift_window"):
        DriftMonitor(settings_with(tmp_path, window=0))


# ---- outputs ------------------------------------------------------------------------------------


def test_output_histogram_per_model_version_and_output() -> None:
    m = Metrics.create()
    OutputMonitor(m, "p").observe(
        "anomaly", "2", {"score": np.array([0.0, 0.05, 0.5, 0.95, 1.0, 7.5])}, {}
    )

    def bucket(le: str) -> float | None:
        labels = {"pipeline": "p", "model": "anomaly", "version": "2", "output": "score", "le": le}
        return m.registry.get_sample_value("streamflow_model_output_bucket", labels)

    assert [bucket(le) for le in ("0.0", "0.1", "0.5", "0.9", "1.0", "+Inf")] == [1, 2, 3, 3, 5, 6]


def test_predicted_labels_are_counted_with_few_label_values() -> None:
    m = Metrics.create()
    out = OutputMonitor(m, "p", max_labels=3)
    out.observe("clf", "1", {}, {"label": ["a", "b", "a", "c"]})
    out.observe("clf", "1", {}, {"label": ["d", "e", "a", "d"], "tag": ["x"]})

    def count(output: str, label: str) -> float | None:
        labels = {"pipeline": "p", "model": "clf", "version": "1", "output": output}
        return m.registry.get_sample_value(
            "streamflow_predictions_total", labels | {"label": label}
        )

    assert [count("label", v) for v in ("a", "b", "c", "other")] == [3, 1, 1, 3]
    assert count("label", "d") is None and count("tag", "x") == 1  # the cap is per output

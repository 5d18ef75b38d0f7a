"""Watching the model, not only the pipeline: input drift per feature and the model's outputs.

**Drift.** Per feature, the population stability index (PSI) between the training
distribution and the last ``monitoring.drift_window`` cleaned records, over fixed bins stored
in ``model.stats`` (``features.<name>.drift_edges`` and ``drift_expected``, written by the
training script through ``drift_bins``). The bins are the one convention the trainer and the
monitor share:

- ``drift_edges`` e_1 < ... < e_{k-1} cut the line into k right-closed bins
  (-inf, e_1], (e_1, e_2], ..., (e_{k-1}, +inf); a value's bin is
  ``np.searchsorted(edges, value, side="left")``. Right-closed, so a point mass that a decile
  lands on (0 for every device without a GPU, a category's index) sits in the bin that edge
  closes, the same way in training and live.
- The edges are the training deciles of the feature's cleaned, un-normalized value (before
  log1p or z-score: what the clean step hands to normalize), duplicates removed: a discrete
  feature gets fewer than 10 bins. ``drift_expected`` is the fraction of training rows in each.

PSI = sum over bins of (a - e) * ln(a / e), ``a`` the window's fraction, ``e`` the training
fraction, both floored at ``EPSILON``. It is the symmetric Kullback-Leibler divergence of the
two binned distributions: 0 for the same distribution, about (shift / std)^2 for a normal
feature shifted by ``shift`` (1 std: about 1), and the usual reading is < 0.1 stable, 0.1 to
0.25 moderate, > 0.25 a shift worth looking at (``monitoring.max_input_psi``). An undrifted
window of N records scores about (k - 1) / N by sampling noise alone (0.009 at N = 1000), so
nothing is published before ``min(drift_window, 1000)`` records.

**Outputs.** Per model and version, a histogram of each output's values (scores and
probabilities: buckets 0.0, 0.1, ..., 1.0) and a count of the labels predicted, at most
``MAX_LABELS`` distinct labels per output (the rest count as ``other``).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from streamflow.errors import ConfigError
from streamflow.metrics import Metrics, observe_many
from streamflow.settings.schema import Settings

EPSILON = 1e-4  # the least fraction a bin counts as: one record in a 10,000-record window
CHUNKS = 10  # the window is kept as this many chunks of counts; the oldest goes whole
MIN_PUBLISH = 1000  # records in the window before a PSI is published (or the window, if less)
PUBLISH_INTERVAL_S = 1.0  # the drift gauges are set at most this often (Prometheus scrapes ~15 s)
MAX_LABELS = 32  # distinct label values counted per output; the rest count as "other"
OTHER = "other"


class DriftBins(NamedTuple):
    """A feature's fixed bins: ``edges`` (k - 1 interior cut points), ``expected`` (k fractions
    of the training rows, summing to 1)."""

    edges: list[float]
    expected: list[float]


def bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each value's bin: 0 for (-inf, e_1], i for (e_i, e_{i+1}], k - 1 for (e_{k-1}, +inf)."""
    return np.searchsorted(edges, values, side="left")


def drift_bins(values: np.ndarray, bins: int = 10) -> DriftBins:
    """The training side of the drift convention: ``bins`` quantile bins of ``values`` (the
    feature's cleaned training values; non-finite ones are left out) and the fraction of rows in
    each. Edges are kept to 6 significant digits and the fractions counted against those edges,
    so what the monitor reads back is exactly what was counted."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if not v.size:
        raise ValueError("drift_bins: no finite values")
    if bins < 2:
        raise ValueError(f"drift_bins: bins must be >= 2, got {bins}")
    cuts = np.quantile(v, np.arange(1, bins) / bins)
    edges = np.unique(np.array([float(f"{c:.6g}") for c in cuts.tolist()]))
    counts = np.bincount(bin_index(edges, v), minlength=len(edges) + 1)
    expected = counts / v.size
    return DriftBins([float(e) for e in edges], [round(float(f), 6) for f in expected])


def psi(expected: Sequence[float] | np.ndarray, actual_counts: Sequence[int] | np.ndarray) -> float:
    """The population stability index of ``actual_counts`` (records per bin) against the
    ``expected`` fractions; both sides floored at ``EPSILON`` (an empty bin would make it
    infinite). 0.0 when nothing was counted."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual_counts, dtype=np.float64)
    total = a.sum()
    if total <= 0:
        return 0.0
    return float(_psi_terms(e / e.sum(), a / total).sum())


def _psi_terms(e: np.ndarray, a: np.ndarray) -> np.ndarray:
    e, a = np.maximum(e, EPSILON), np.maximum(a, EPSILON)
    return (a - e) * np.log(a / e)


def read_drift_bins(settings: Settings) -> dict[str, DriftBins]:
    """The bins of each feature in ``model.stats`` that has them ({} without a stats file, or
    with ``monitoring.drift`` off). A malformed entry is a ConfigError naming it."""
    path = settings.model.stats
    if not (settings.monitoring.drift and path):
        return {}
    try:
        data: Any = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"model.stats: cannot read {path}: {exc}") from exc
    feats = data.get("features", data) if isinstance(data, dict) else None
    if not isinstance(feats, dict):
        raise ConfigError(f"model.stats: expected an object of per-feature statistics in {path}")
    out = {}
    for name in settings.feature_names:
        stats = feats.get(name)
        if not isinstance(stats, dict) or "drift_edges" not in stats:
            continue
        edges, expected = stats.get("drift_edges"), stats.get("drift_expected")
        where = f"model.stats: features.{name}"
        if not (
            isinstance(edges, list)
            and isinstance(expected, list)
            and len(expected) == len(edges) + 1
            and all(isinstance(x, int | float) for x in [*edges, *expected])
        ):
            raise ConfigError(
                f"{where}: drift_edges (k - 1 numbers) and drift_expected (k fractions) "
                f"must be lists of numbers, one more fraction than edges ({path})"
            )
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)) or not all(
            math.isfinite(x) for x in edges
        ):
            raise ConfigError(f"{where}: drift_edges must be finite and increasing ({path})")
        if any(f < 0 for f in expected) or not sum(expected) > 0:
            raise ConfigError(f"{where}: drift_expected must be fractions >= 0, not all 0 ({path})")
        out[name] = DriftBins([float(x) for x in edges], [float(x) for x in expected])
    return out


class DriftMonitor:
    """Input drift per feature over a sliding window of cleaned records (the normalize step).

    The window holds the last ``monitoring.drift_window`` records, give or take a tenth: counts
    are kept in ``CHUNKS`` chunks and the oldest chunk is dropped whole. ``observe`` costs a
    ``searchsorted`` per monitored feature and one ``bincount`` per chunk the batch touches: no
    Python per record."""

    def __init__(self, settings: Settings) -> None:
        self.pipeline = settings.name
        window = settings.monitoring.drift_window
        if window < 1:
            raise ConfigError(f"monitoring.drift_window: must be >= 1, got {window}")
        bins = read_drift_bins(settings)
        names = settings.feature_names
        self.names = [n for n in names if n in bins]
        self.columns = np.array([names.index(n) for n in self.names], dtype=np.intp)
        self.window = window
        self.chunk = -(-window // CHUNKS)  # records per chunk, rounded up
        self.publish_at = min(window, MIN_PUBLISH)
        k = [len(bins[n].expected) for n in self.names]
        self.offsets = np.cumsum([0, *k[:-1]]).astype(np.intp)  # each feature's first bin
        self.edges = [np.asarray(bins[n].edges, dtype=np.float64) for n in self.names]
        exp = [np.asarray(bins[n].expected) / sum(bins[n].expected) for n in self.names]
        self.expected = np.concatenate(exp) if exp else np.zeros(0)
        n_bins = int(sum(k))
        self.ring = np.zeros((CHUNKS, n_bins), dtype=np.int64)
        self.sizes = np.zeros(CHUNKS, dtype=np.int64)
        self.head = 0
        self.counts = np.zeros(n_bins, dtype=np.int64)  # the sum of the ring's rows
        self.n = 0  # records in the window
        self._gauges: tuple[Metrics, list[Any]] | None = None
        self._published = -math.inf  # when the gauges were last set (monotonic)
        self._pending = False  # a publication is scheduled on the event loop

    @property
    def enabled(self) -> bool:
        return bool(self.names)

    def observe(self, features: np.ndarray, metrics: Metrics | None = None) -> None:
        """Count ``features`` (the cleaned batch: float32[n, F], one column per feature in
        ``settings.features`` order) into the window and, once it holds enough records, set
        ``streamflow_input_drift_psi`` per feature on ``metrics``."""
        if not self.enabled or not len(features):
            return
        x = np.asarray(features)[-self.window :, self.columns].astype(np.float64)
        idx = np.empty(x.shape, dtype=np.intp)
        for j, edges in enumerate(self.edges):  # per feature, not per record
            idx[:, j] = bin_index(edges, x[:, j])
        idx += self.offsets
        start = 0
        while start < len(idx):
            if self.sizes[self.head] >= self.chunk:  # the chunk is full: drop the oldest
                self.head = (self.head + 1) % CHUNKS
                self.counts -= self.ring[self.head]
                self.n -= int(self.sizes[self.head])
                self.ring[self.head] = 0
                self.sizes[self.head] = 0
            take = min(self.chunk - int(self.sizes[self.head]), len(idx) - start)
            c = np.bincount(idx[start : start + take].ravel(), minlength=len(self.counts))
            self.ring[self.head] += c
            self.counts += c
            self.sizes[self.head] += take
            self.n += take
            start += take
        if metrics is None or self.n < self.publish_at:
            return
        # Published once the window holds enough, then at most every PUBLISH_INTERVAL_S (the
        # PSI of every feature per batch cost 100 µs a batch, most of a small batch's handling),
        # and once more after the last batch of a burst, so the gauges end on the latest window.
        wait = self._published + PUBLISH_INTERVAL_S - time.monotonic()
        if wait <= 0:
            self.publish(metrics)
        elif not self._pending:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (a test, a tool): publish now
                self.publish(metrics)
                return
            self._pending = True
            loop.call_later(wait, self.publish, metrics)

    def publish(self, metrics: Metrics) -> None:
        """Set ``streamflow_input_drift_psi`` per feature from the window now."""
        self._pending = False
        self._published = time.monotonic()
        for gauge, value in zip(self._bind(metrics), self.psi().values(), strict=True):
            gauge.set(value)

    def psi(self) -> dict[str, float]:
        """Each monitored feature's PSI over the window now ({} while it is empty)."""
        if not self.n:
            return {}
        terms = _psi_terms(self.expected, self.counts / self.n)
        return dict(zip(self.names, np.add.reduceat(terms, self.offsets).tolist(), strict=True))

    def _bind(self, metrics: Metrics) -> list[Any]:
        if self._gauges is None or self._gauges[0] is not metrics:
            g = metrics.input_drift
            self._gauges = (metrics, [g.labels(self.pipeline, n) for n in self.names])
        return self._gauges[1]


class OutputMonitor:
    """The model's outputs per model and version (the inference step): a histogram of each
    output's values and a count of each predicted label."""

    def __init__(self, metrics: Metrics, pipeline: str, max_labels: int = MAX_LABELS) -> None:
        self.metrics, self.pipeline, self.max_labels = metrics, pipeline, max_labels
        self.known: dict[str, set[str]] = {}  # per output: the label values counted by name
        self._children: dict[tuple[str, ...], Any] = {}  # labelled instruments, found once

    def observe(
        self,
        model: str,
        version: str,
        scores: Mapping[str, np.ndarray],
        labels: Mapping[str, Sequence[str] | np.ndarray],
    ) -> None:
        """``scores``: output name -> its values (any shape; every value is observed once: give
        a per-class probability its own name, e.g. ``<field>_<label>``); ``labels``: output name
        -> the label predicted for each record."""
        m, p, children = self.metrics, self.pipeline, self._children
        for output, values in scores.items():
            key: tuple[str, ...] = ("output", model, version, output)
            child = children.get(key)
            if child is None:
                child = children[key] = m.model_output.labels(p, model, version, output)
            observe_many(child, values)
        for output, predicted in labels.items():
            known = self.known.setdefault(output, set())
            if isinstance(predicted, np.ndarray):  # vectorised: one count per distinct label
                values, counts = np.unique(predicted.astype(str), return_counts=True)
                tally = dict(zip(values.tolist(), counts.tolist(), strict=True))
            else:
                tally = Counter(predicted)
            for label, count in tally.items():
                if label not in known:
                    if len(known) >= self.max_labels:
                        label = OTHER
                    else:
                        known.add(label)
                key = ("label", model, version, output, label)
                child = children.get(key)
                if child is None:
                    child = children[key] = m.predictions.labels(p, model, version, output, label)
                child.inc(count)

"""``streamflow report``: one PNG of a run (throughput, latency percentiles, lag, dead letters).

Two sources, the same four panels:

- a Prometheus server (``--prometheus URL``): range queries over the last ``--minutes``;
- the workers' own metrics, recorded while the run lasted (``--samples FILE``): ``streamflow
  demo`` scrapes its metrics endpoint every second into ``metrics.jsonl`` in its log folder
  (``MetricsRecorder``), and rates and quantiles are computed here the way PromQL's
  ``rate`` and ``histogram_quantile`` do.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from streamflow.cli import load, settings_args
from streamflow.errors import ConfigError

Points = list[tuple[float, float]]  # (unix time, value)
QUANTILES = (0.5, 0.95, 0.99)
E2E = "streamflow_end_to_end_latency_seconds_bucket"


@dataclass
class Panels:
    throughput: dict[str, Points] = field(default_factory=dict)  # records/s by stage
    latency_ms: dict[str, Points] = field(default_factory=dict)  # p50/p95/p99
    lag: dict[str, Points] = field(default_factory=dict)  # records behind, by stage
    dead_letters: dict[str, Points] = field(default_factory=dict)  # dead letters/s by reason


class MetricsRecorder(threading.Thread):
    """Scrapes a metrics endpoint every ``interval_s`` and appends streamflow's samples to
    ``path``."""

    def __init__(self, url: str, path: Path, interval_s: float = 1.0) -> None:
        super().__init__(name="streamflow-metrics-recorder", daemon=True)
        self.url, self.path, self.interval_s = url, path, interval_s
        self._halt = threading.Event()

    def run(self) -> None:
        with self.path.open("a") as out:
            while not self._halt.wait(self.interval_s):
                try:
                    text = urllib.request.urlopen(self.url, timeout=2).read().decode()
                except OSError:
                    continue  # a stage restarting: the next scrape will do
                samples = [
                    [s.name, s.labels, s.value]
                    for fam in text_string_to_metric_families(text)
                    for s in fam.samples
                    if s.name.startswith("streamflow_")
                ]
                out.write(json.dumps({"t": time.time(), "m": samples}) + "\n")
                out.flush()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """PromQL's histogram_quantile over cumulative ``{le: count}`` (linear within a bucket)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return math.nan
    rank = q * buckets[bounds[-1]]
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        count = buckets[b]
        if count >= rank:
            if math.isinf(b):
                return (
                    prev_bound  # in the +Inf bucket: the highest finite bound, as Prometheus says
                )
            if count == prev_count:
                return b
            return prev_bound + (b - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = b, count
    return bounds[-1]


def _sum_by(samples: Iterable[list[Any]], name: str, label: str, pipeline: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for n, labels, value in samples:
        if n == name and labels.get("pipeline", pipeline) == pipeline:
            out[labels.get(label, "")] += value
    return out


def from_samples(path: Path, pipeline: str, window_s: float = 5.0) -> Panels:
    """The panels from a ``MetricsRecorder`` file; rates over ``window_s`` like ``rate(x[5s])``."""
    snaps = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if len(snaps) < 2:
        raise ConfigError(
            f"--samples: {path} holds {len(snaps)} scrape(s); a report needs at least two"
        )
    p = Panels()
    j = 0
    for i in range(1, len(snaps)):
        t, now = snaps[i]["t"], snaps[i]["m"]
        while snaps[j + 1]["t"] <= t - window_s:
            j += 1
        dt = t - snaps[j]["t"]
        before = snaps[j]["m"]
        if dt <= 0:
            continue
        for series, name, label in (
            (p.throughput, "streamflow_records_total", "stage"),
            (p.dead_letters, "streamflow_dead_letters_total", "reason"),
        ):
            old = _sum_by(before, name, label, pipeline)
            for key, v in _sum_by(now, name, label, pipeline).items():
                series.setdefault(key, []).append((t, max(0.0, v - old.get(key, 0.0)) / dt))
        for key, v in _sum_by(now, "streamflow_consumer_lag_records", "stage", pipeline).items():
            p.lag.setdefault(key, []).append((t, v))
        old_b = {float(k): v for k, v in _sum_by(before, E2E, "le", pipeline).items()}
        new_b = {float(k): v for k, v in _sum_by(now, E2E, "le", pipeline).items()}
        delta = {le: new_b[le] - old_b.get(le, 0.0) for le in new_b}
        for q in QUANTILES:
            v = histogram_quantile(q, delta)
            if not math.isnan(v):
                p.latency_ms.setdefault(f"p{round(q * 100)}", []).append((t, v * 1000))
    return p


def _query_range(
    base: str, expr: str, start: float, end: float, step: float
) -> list[dict[str, Any]]:
    qs = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    try:
        body = json.loads(
            urllib.request.urlopen(f"{base.rstrip('/')}/api/v1/query_range?{qs}", timeout=30).read()
        )
    except OSError as exc:
        raise ConfigError(f"--prometheus: cannot query {base}: {exc}") from exc
    if body.get("status") != "success":
        raise ConfigError(f"--prometheus: {base} answered {body.get('error', body)} for {expr}")
    return list(body["data"]["result"])


def from_prometheus(base: str, pipeline: str, minutes: float, window: str = "30s") -> Panels:
    end = time.time()
    start, step = end - minutes * 60, max(1.0, minutes * 60 / 300)
    sel = f'pipeline="{pipeline}"'

    def series(expr: str, label: str, scale: float = 1.0) -> dict[str, Points]:
        return {
            r["metric"].get(label, label): [
                (float(t), float(v) * scale) for t, v in r["values"] if not math.isnan(float(v))
            ]
            for r in _query_range(base, expr, start, end, step)
        }

    p = Panels(
        throughput=series(
            f"sum by (stage) (rate(streamflow_records_total{{{sel}}}[{window}]))", "stage"
        ),
        lag=series(f"sum by (stage) (streamflow_consumer_lag_records{{{sel}}})", "stage"),
        dead_letters=series(
            f"sum by (reason) (rate(streamflow_dead_letters_total{{{sel}}}[{window}]))", "reason"
        ),
    )
    for q in QUANTILES:
        expr = f"histogram_quantile({q}, sum by (le) (rate({E2E}{{{sel}}}[{window}])))"
        for pts in series(expr, "quantile", 1000.0).values():
            p.latency_ms[f"p{round(q * 100)}"] = pts
    return p


def render(p: Panels, out: Path, title: str) -> Path:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(
            "streamflow report draws with matplotlib, which is not installed: "
            "pip install matplotlib (the package's `report` extra)"
        ) from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8), sharex=True)
    t0 = min(
        (
            pts[0][0]
            for panel in (p.throughput, p.latency_ms, p.lag, p.dead_letters)
            for pts in panel.values()
            if pts
        ),
        default=0.0,
    )
    for ax, (panel, heading, unit) in zip(
        axes.flat,
        (
            (p.throughput, "records per second, by stage", "records/s"),
            (p.latency_ms, "end-to-end latency", "ms"),
            (p.lag, "consumer lag, by stage", "records"),
            (p.dead_letters, "dead letters per second, by reason", "records/s"),
        ),
        strict=True,
    ):
        for name, pts in sorted(panel.items()):
            if pts:
                ax.plot([t - t0 for t, _ in pts], [v for _, v in pts], label=name, linewidth=1.2)
        ax.set_title(heading)
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        if panel:
            ax.legend(fontsize=8, loc="upper right")
        else:
            ax.text(
                0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey"
            )
    for ax in axes[1]:
        ax.set_xlabel("seconds since the first sample")
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow report --samples FILE | --prometheus URL``."""
    rp = sub.add_parser(
        "report", help="a PNG of a run: throughput, latency percentiles, lag, dead letters"
    )
    rp.add_argument(
        "--samples",
        default="",
        help="metrics recorded during a run (streamflow demo writes metrics.jsonl)",
    )
    rp.add_argument(
        "--prometheus", default="", help="a Prometheus server's URL, e.g. http://localhost:9090"
    )
    rp.add_argument(
        "--minutes", type=float, default=15.0, help="with --prometheus: how far back (default 15)"
    )
    rp.add_argument(
        "--out",
        default="streamflow-report.png",
        help="the PNG to write (default streamflow-report.png)",
    )
    settings_args(rp)
    rp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Draw the run's panels from one source into the PNG and say where it is."""
    s = load(args)
    if bool(args.samples) == bool(args.prometheus):
        raise ConfigError(
            "streamflow report: give exactly one of --samples FILE and --prometheus URL",
            source="command line",
        )
    if args.samples:
        panels = from_samples(Path(args.samples), s.name)
        source = args.samples
    else:
        panels = from_prometheus(args.prometheus, s.name, args.minutes)
        source = f"{args.prometheus}, last {args.minutes:g} min"
    out = render(panels, Path(args.out), f"streamflow pipeline {s.name} ({source})")
    print(f"streamflow report: {out}")
    return 0

"""What streamflow's own histograms say happened inside its processes during a latency run.

The hops the bench can date from outside (``hops.py``) leave out what happens in a process:
the fetch, the hand-off to the agent, the handling and the broker's acknowledgement. The
stages already measure some of it, per batch, on their metrics endpoint: how long after it was
produced upstream the oldest record of each fetch arrived (``streamflow_fetch_delay_seconds``:
the broker hop and the fetch wait), the wait of each
batch's oldest record in the stage's queue (``streamflow_queue_delay_seconds``: fetch to
hand-off), the time to handle a batch (``streamflow_stage_processing_seconds``), ONNX Runtime's
run (``streamflow_inference_seconds``), the raw timestamp to the results' delivery report
(``streamflow_end_to_end_latency_seconds``: the broker's acknowledgement), and the pauses of
Python's garbage collector (``streamflow_gc_pause_seconds``, every generation). The endpoint is
scraped at the start and the end of the run; the quantiles are read from the difference,
interpolated within buckets (as PromQL's ``histogram_quantile``), so they are only as fine as
the buckets.
"""

from __future__ import annotations

import math
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from streamflow.bench.results import Quantiles

HISTOGRAMS = {
    "streamflow_fetch_delay_seconds": "fetch_delay",
    "streamflow_queue_delay_seconds": "queue_delay",
    "streamflow_stage_processing_seconds": "processing",
    "streamflow_inference_seconds": "inference",
    "streamflow_end_to_end_latency_seconds": "end_to_end_at_ack",
    "streamflow_gc_pause_seconds": "gc_pause",
}
# what one observation is: a result, a pause of the garbage collector; the others a batch
PER = {"end_to_end_at_ack": "record", "gc_pause": "pause"}
Buckets = dict[tuple[str, str], dict[float, float]]  # (short name, stage) -> {le: cumulative}


def parse_histograms(text: str) -> Buckets:
    """The cumulative bucket counts of ``HISTOGRAMS`` in a Prometheus exposition, per stage
    (summed over the other labels)."""
    out: Buckets = {}
    for fam in text_string_to_metric_families(text):
        short = HISTOGRAMS.get(fam.name)
        if short is None:
            continue
        for s in fam.samples:
            if not s.name.endswith("_bucket"):
                continue
            key = (short, s.labels.get("stage", ""))
            le = float(s.labels["le"])
            buckets = out.setdefault(key, {})
            buckets[le] = buckets.get(le, 0.0) + s.value
    return out


def scrape(url: str) -> Buckets:
    try:
        return parse_histograms(urllib.request.urlopen(url, timeout=2).read().decode())
    except OSError:
        return {}


def quantile(buckets: dict[float, float], q: float) -> float:
    """The ``q`` quantile (0..1) of a histogram's cumulative buckets, linearly interpolated in
    the bucket it falls in (NaN when empty; the highest finite bound when in the +Inf bucket)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return float("nan")
    rank = q * buckets[bounds[-1]]
    lo_bound, lo_count = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lo_bound
            if count == lo_count:
                return le
            return lo_bound + (le - lo_bound) * (rank - lo_count) / (count - lo_count)
        lo_bound, lo_count = le, count
    return bounds[-1]


def run_quantiles(before: Buckets, after: Buckets) -> list[Quantiles]:
    """p50 and p99 (ms) of each histogram over what was observed between two scrapes."""
    out = []
    for (name, stage), b in sorted(after.items()):
        prior = before.get((name, stage), {})
        delta = {le: c - prior.get(le, 0.0) for le, c in b.items()}
        total = delta.get(math.inf, max(delta.values(), default=0.0))
        if total <= 0:
            continue
        out.append(
            Quantiles(
                f"{name} {stage}".strip(),
                PER.get(name, "batch"),
                total,
                round(quantile(delta, 0.5) * 1000, 2),
                round(quantile(delta, 0.99) * 1000, 2),
            )
        )
    return out

"""What ``streamflow bench e2e`` measures, as plain records (written whole to the JSON report)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Backlog:
    system: str
    records: int
    accounted: int
    duplicates: int
    seconds: float
    records_per_s: float
    cpu_us_per_record: float
    rss_mb: float
    scores_checked: int
    scores_max_abs_error: float
    processes: int = 1
    cpu_us_by_process: dict[str, float] = field(default_factory=dict)
    broker_cpu_us_per_record: float | None = None  # the embedded broker's CPU, when it is ours
    runs_records_per_s: list[float] = field(
        default_factory=list
    )  # every run; this one is the median
    # record batches the run left per partition, per topic role (raw, scored, dlq, internal.*)
    batches: dict[str, list[int]] = field(default_factory=dict)
    # why the run stopped before every record was accounted for ('' when it finished)
    unfinished: str = ""


@dataclass(frozen=True)
class Window:
    """Latency of the results whose raw records were produced in one window of the run."""

    start_s: float  # from the first raw record's timestamp
    records: int
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Hop:
    """One hop of the records' trip (from one point to the next), over the scored results."""

    name: str
    records: int
    p50_ms: float
    p99_ms: float
    tail_p50_ms: float  # the same hop of the records whose end-to-end latency is >= its p99
    tail_share: float  # this hop's share of those records' mean end-to-end latency (NaN: a
    # hop off the results' path, such as the commit)
    first_p50_ms: float = float("nan")  # p50 of the records of the run's first window
    last_p50_ms: float = float("nan")  # ... and of its last: last - first is this hop's drift


@dataclass(frozen=True)
class Quantiles:
    """An in-process histogram's p50 and p99 over a run (interpolated within its buckets)."""

    name: str  # metric and stage, e.g. "queue_delay clean"
    per: str  # what one observation is: "batch" or "record"
    count: float
    p50_ms: float
    p99_ms: float


@dataclass
class Latency:
    system: str
    rate: float
    seconds: float
    produced: int
    accounted: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    saturated: bool
    cpu_pct: float = 0.0  # the system's processes, in % of one core, while records flowed
    broker_cpu_pct: float | None = None  # the embedded broker's, likewise
    windows: list[Window] = field(default_factory=list)
    # CPU per record over the run's steady part (after its first window, until the feed ends)
    steady_cpu_us_per_record: float | None = None
    steady_broker_cpu_us_per_record: float | None = None
    batches: dict[str, list[int]] = field(default_factory=dict)
    hops: list[Hop] = field(default_factory=list)
    in_process: list[Quantiles] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be measured, and why


@dataclass(frozen=True)
class GoalRow:
    """One of issue 13's goals: a ratio of a streamflow topology to a limit loop's figure."""

    system: str
    metric: str  # throughput, cpu, broker, p50, p99 (cpu and broker also "steady" at a rate)
    rate: float | None  # None: the backlog
    value: float
    reference: float
    reference_system: str
    ratio: float
    bound: float
    at_least: bool  # the ratio must be >= bound (throughput), else <= bound
    verdict: str  # PASS, MISS, info (outside the goal's conditions), n/a (no figure)


@dataclass
class BenchResult:
    records: int
    backlog: list[Backlog] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    scaling: list[Backlog] = field(default_factory=list)
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)  # per streamflow kind
    goals: list[GoalRow] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)

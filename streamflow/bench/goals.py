"""Issue 13's goals: streamflow's topologies as ratios to the plain loop of the same run.

Throughput and CPU per record (and the broker's CPU per record, for the stages) are compared
with ``limit`` on the backlog; latency with the plain loop with a 5 ms consume wait
(``limit-5ms``, or ``limit``, whose wait is the same) at each input rate, on the whole run's
percentiles. A latency goal holds at 1,000 and 5,000 records/s over runs of at least 20 s:
other rates, and shorter runs, are reported as ``info``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streamflow.bench.results import Backlog, GoalRow, Latency
from streamflow.bench.systems import consume_wait_ms


@dataclass(frozen=True)
class Goal:
    metric: str  # throughput, cpu, broker, p50, p99
    bound: float
    at_least: bool = False  # the ratio must be >= bound, else <= bound


GOALS: dict[str, tuple[Goal, ...]] = {
    "chained": (
        Goal("throughput", 0.9, at_least=True),
        Goal("cpu", 1.2),
        Goal("p50", 1.2),
        Goal("p99", 1.5),
    ),
    "streamflow": (  # three hops: clean, normalize, inference
        Goal("throughput", 0.9, at_least=True),
        Goal("cpu", 1.5),  # all stages together
        Goal("broker", 2.0),
        Goal("p50", 2.5),
        Goal("p99", 3.0),
    ),
}
GOAL_RATES = (1000.0, 5000.0)
MIN_SECONDS = 20.0
LATENCY_WAIT_MS = 5.0


def throughput_reference(systems: Sequence[str]) -> str | None:
    """``limit`` when it ran, else another plain loop (its consume wait does not matter to a
    backlog)."""
    loops = [s for s in systems if consume_wait_ms(s) is not None]
    return "limit" if "limit" in loops else (loops[0] if loops else None)


def latency_reference(systems: Sequence[str]) -> str | None:
    """The plain loop with a 5 ms consume wait: ``limit-5ms`` when it ran, else ``limit``."""
    loops = [s for s in systems if consume_wait_ms(s) == LATENCY_WAIT_MS]
    return "limit-5ms" if "limit-5ms" in loops else (loops[0] if loops else None)


def _row(
    system: str,
    goal: Goal,
    rate: float | None,
    value: float | None,
    ref: float | None,
    ref_system: str,
    in_scope: bool = True,
) -> GoalRow:
    if value is None or ref is None or ref <= 0 or value != value or ref != ref:
        return GoalRow(
            system, goal.metric, rate, float("nan"), float("nan"), ref_system, float("nan"),
            goal.bound, goal.at_least, "n/a",
        )  # fmt: skip
    ratio = value / ref
    ok = ratio >= goal.bound if goal.at_least else ratio <= goal.bound
    verdict = ("PASS" if ok else "MISS") if in_scope else "info"
    return GoalRow(
        system, goal.metric, rate, value, ref, ref_system, round(ratio, 3), goal.bound,
        goal.at_least, verdict,
    )  # fmt: skip


def goal_rows(backlog: Sequence[Backlog], latency: Sequence[Latency]) -> list[GoalRow]:
    """Every goal of every streamflow topology that ran, with its verdict: throughput, CPU and
    broker CPU on the backlog (CPU and broker also over each latency run's steady part, as
    info), p50 and p99 at each rate."""
    rows: list[GoalRow] = []
    by = {b.system: b for b in backlog}
    tref = throughput_reference(list(by))
    lat = {(x.system, x.rate): x for x in latency}
    lref = latency_reference([x.system for x in latency])
    for system, goals in GOALS.items():
        mine = sorted((rate, x) for (s, rate), x in lat.items() if s == system)
        runs = [(x, lat[(lref, rate)]) for rate, x in mine if lref and (lref, rate) in lat]
        for g in goals:
            if g.metric in ("throughput", "cpu", "broker") and system in by and tref:
                mb, rb = by[system], by[tref]
                value, ref = {
                    "throughput": (mb.records_per_s, rb.records_per_s),
                    "cpu": (mb.cpu_us_per_record, rb.cpu_us_per_record),
                    "broker": (mb.broker_cpu_us_per_record, rb.broker_cpu_us_per_record),
                }[g.metric]
                rows.append(_row(system, g, None, value, ref, tref))
            for x, r in runs:
                if g.metric in ("cpu", "broker"):
                    steady = Goal(f"{g.metric} steady", g.bound, g.at_least)
                    value, ref = (
                        (x.steady_cpu_us_per_record, r.steady_cpu_us_per_record)
                        if g.metric == "cpu"
                        else (x.steady_broker_cpu_us_per_record, r.steady_broker_cpu_us_per_record)
                    )
                    rows.append(_row(system, steady, x.rate, value, ref, r.system, False))
                elif g.metric in ("p50", "p99"):
                    in_scope = (
                        x.rate in GOAL_RATES
                        and x.seconds >= MIN_SECONDS
                        and not (x.saturated or r.saturated)
                    )
                    value, ref = (x.p50_ms, r.p50_ms) if g.metric == "p50" else (x.p99_ms, r.p99_ms)
                    rows.append(_row(system, g, x.rate, value, ref, r.system, in_scope))
    return rows


def goals_markdown(rows: Sequence[GoalRow]) -> list[str]:
    """The goals as a markdown table (empty when none applies)."""
    if not rows:
        return []
    lines = [
        "",
        "Goals (issue 13): ratio to the plain loop of the same run; latency on the whole run's "
        f"percentiles, in scope at {', '.join(f'{r:,.0f}' for r in GOAL_RATES)}/s over runs of "
        f"at least {MIN_SECONDS:.0f} s (else info)",
        "",
        "| system | metric | rate/s | value | reference | ratio | goal | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rate = "backlog" if r.rate is None else f"{r.rate:,.0f}"
        bound = f"{'>=' if r.at_least else '<='} {r.bound:g}x"
        if r.verdict == "n/a":
            lines.append(
                f"| {r.system} | {r.metric} | {rate} | - | {r.reference_system} | - "
                f"| {bound} | n/a |"
            )
            continue
        lines.append(
            f"| {r.system} | {r.metric} | {rate} | {r.value:,.1f} "
            f"| {r.reference:,.1f} ({r.reference_system}) | {r.ratio:.2f} | {bound} "
            f"| {r.verdict} |"
        )
    return lines

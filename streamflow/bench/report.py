"""Benchmark output: JSON for machines, a markdown table and a PNG for people."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from streamflow.bench.goals import goals_markdown

LABELS = {
    "streamflow": "streamflow (3 faust stages)",
    "chained": "streamflow, chained topology (1 faust agent)",
    "limit": "plain confluent-kafka loop (limit)",
    "naive": "faust per-record agent (naive)",
}


def label(system: str) -> str:
    if system in LABELS:
        return LABELS[system]
    return f"plain loop, {system[6:]} wait ({system})" if system.startswith("limit-") else system


def to_json(result: Any) -> dict[str, Any]:
    data = asdict(result)
    systems: dict[str, Any] = {}
    for b in result.backlog:
        systems[b.system] = {
            "records_per_s": b.records_per_s,
            "cpu_us_per_record": b.cpu_us_per_record,
            "rss_mb": b.rss_mb,
            "broker_cpu_us_per_record": b.broker_cpu_us_per_record,
            "latency": {},
        }
    for lat in result.latency:
        systems.setdefault(lat.system, {"latency": {}})["latency"][str(int(lat.rate))] = {
            "p50_ms": lat.p50_ms,
            "p95_ms": lat.p95_ms,
            "p99_ms": lat.p99_ms,
            "max_ms": lat.max_ms,
            "saturated": lat.saturated,
            "cpu_pct": lat.cpu_pct,
            "broker_cpu_pct": lat.broker_cpu_pct,
            "steady_cpu_us_per_record": lat.steady_cpu_us_per_record,
            "steady_broker_cpu_us_per_record": lat.steady_broker_cpu_us_per_record,
            "windows": [asdict(w) for w in lat.windows],
            "batches": lat.batches,
        }
    for kind, ratios in result.ratios.items():
        systems.setdefault(kind, {}).update(ratios)
    data["systems"] = systems
    return data


def markdown(result: Any) -> str:
    reps = max((len(b.runs_records_per_s) for b in result.backlog), default=1)
    lines = [
        f"Backlog of {result.records:,} records ({result.machine.get('cpus')} CPUs, "
        "same run, same records, a fresh embedded broker per run unless a bootstrap is set"
        f"{f', median of {reps}' if reps > 1 else ''})",
        "",
        "| system | records/s | CPU µs/record | broker CPU µs/record "
        "| peak worker RSS MB | accounted "
        "| scores max error |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in result.backlog:
        broker = "-" if b.broker_cpu_us_per_record is None else f"{b.broker_cpu_us_per_record:.0f}"
        lines.append(
            f"| {label(b.system)} | {b.records_per_s:,.0f} "
            f"| {b.cpu_us_per_record:.0f} | {broker} | {b.rss_mb:.0f} "
            f"| {b.accounted:,}/{b.records:,} | {b.scores_max_abs_error:.1e} |"
        )
    for kind, ratios in result.ratios.items():
        lines += [
            "",
            f"{label(kind)}: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()),
        ]
    if any(len(b.runs_records_per_s) > 1 for b in result.backlog):
        lines += [
            "",
            "Median of "
            + ", ".join(
                f"{b.system} {'/'.join(f'{x:,.0f}' for x in b.runs_records_per_s)}"
                for b in result.backlog
            )
            + " records/s.",
        ]
    if result.scaling:
        lines += [
            "",
            "| topology | processes per stage | records/s | CPU µs/record | peak RSS MB |",
            "|---|---|---|---|---|",
        ]
        per = {"streamflow": 3, "chained": 1}
        lines += [
            f"| {b.system} | {b.processes // per.get(b.system, 1)} | {b.records_per_s:,.0f} | "
            f"{b.cpu_us_per_record:.0f} | {b.rss_mb:.0f} |"
            for b in result.scaling
        ]
    if result.latency:
        lines += [
            "",
            "| system | input rate/s | p50 ms | p95 ms | p99 ms | max ms "
            "| CPU % of a core | broker CPU % |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for lat in result.latency:
            sat = " (saturated)" if lat.saturated else ""
            lines.append(
                f"| {lat.system} | {lat.rate:,.0f}{sat} | {lat.p50_ms} | {lat.p95_ms} "
                f"| {lat.p99_ms} | {lat.max_ms} | {lat.cpu_pct:.0f} "
                f"| {lat.broker_cpu_pct if lat.broker_cpu_pct is not None else '-'} |"
            )
    lines += latency_details(result)
    lines += goals_markdown(result.goals)
    return "\n".join(lines) + "\n"


def latency_details(result: Any) -> list[str]:
    """Per latency run: p50/p99 per window, steady CPU per record, batches per partition, the
    per-hop breakdown and the in-process histograms."""
    lines: list[str] = []
    if result.latency:
        lines += [
            "",
            "Per 5-second window of the feed (p50/p99 ms), and CPU µs per record over the "
            "steady part (after the first window, until the feed ends)",
            "",
            "| system | rate/s | whole run p50/p99 | windows | CPU µs/record | broker µs/record |",
            "|---|---|---|---|---|---|",
        ]
        for lat in result.latency:
            wins = ", ".join(f"{w.p50_ms:g}/{w.p99_ms:g}" for w in lat.windows)
            lines.append(
                f"| {lat.system} | {lat.rate:,.0f} | {lat.p50_ms:g}/{lat.p99_ms:g} | {wins} "
                f"| {_num(lat.steady_cpu_us_per_record)} "
                f"| {_num(lat.steady_broker_cpu_us_per_record)} |"
            )
    runs = [(f"{b.system} backlog", b.batches) for b in result.backlog if b.batches] + [
        (f"{lat.system} {lat.rate:,.0f}/s", lat.batches) for lat in result.latency if lat.batches
    ]
    if runs:
        lines += [
            "",
            "Record batches left per partition (each topic's partitions, in order)",
            "",
            "| run | topic | batches per partition | total |",
            "|---|---|---|---|",
        ]
        for name, batches in runs:
            for role, per in batches.items():
                lines.append(f"| {name} | {role} | {'/'.join(map(str, per))} | {sum(per):,} |")
    hops = [lat for lat in result.latency if lat.hops or lat.in_process]
    if hops:
        lines += [
            "",
            "Hops of the scored records (ms; p50 in the run's first and last 5-second window: "
            "the hop's drift; tail: the records whose end-to-end latency is >= its p99, and the "
            "hop's share of their mean latency)",
            "",
            "| system | rate/s | hop | p50 | p99 | p50 first / last window | tail p50 "
            "| tail share |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for lat in hops:
            for h in lat.hops:
                lines.append(
                    f"| {lat.system} | {lat.rate:,.0f} | {h.name} | {h.p50_ms:g} | {h.p99_ms:g} "
                    f"| {h.first_p50_ms:g} / {h.last_p50_ms:g} | {h.tail_p50_ms:g} "
                    f"| {_pct(h.tail_share)} |"
                )
            for q in lat.in_process:
                lines.append(
                    f"| {lat.system} | {lat.rate:,.0f} | in-process {q.name} (per {q.per}, "
                    f"{q.count:,.0f}) | {q.p50_ms:g} | {q.p99_ms:g} | - | - | - |"
                )
    return lines


def _pct(x: float) -> str:
    return "-" if x != x else f"{x:.0%}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def plot(result: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    names = [b.system for b in result.backlog]
    vals = [b.records_per_s for b in result.backlog]
    bars = ax1.bar(
        names,
        vals,
        color=["#2b7bba" if n in ("streamflow", "chained") else "#999999" for n in names],
    )
    for bar, b in zip(bars, result.backlog, strict=True):
        ax1.annotate(
            f"{b.records_per_s:,.0f}/s\n{b.cpu_us_per_record:.0f} µs/rec",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax1.set_title(f"Backlog throughput ({result.records:,} records)")
    ax1.set_ylabel("records/s")
    ax1.set_ylim(0, max(vals + [1]) * 1.25)
    for system in dict.fromkeys(lat.system for lat in result.latency):
        pts = [lat for lat in result.latency if lat.system == system]
        rates = [lat.rate for lat in pts]
        ax2.plot(rates, [lat.p99_ms for lat in pts], marker="o", label=f"{system} p99")
        ax2.plot(
            rates, [lat.p50_ms for lat in pts], marker=".", linestyle="--", label=f"{system} p50"
        )
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.axhline(50, color="red", linewidth=0.8, linestyle=":", label="50 ms")
    ax2.set_xlabel("input rate (records/s)")
    ax2.set_ylabel("end-to-end latency (ms)")
    ax2.set_title("Latency at fixed input rates")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: Any, out_dir: str = "bench-results") -> dict[str, str]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d = Path(out_dir)
    d.mkdir(exist_ok=True)
    paths = {"json": d / f"{stamp}.json", "md": d / f"{stamp}.md", "png": d / f"{stamp}.png"}
    paths["json"].write_text(json.dumps(to_json(result), indent=2) + "\n")
    paths["md"].write_text(markdown(result))
    try:
        plot(result, paths["png"])
    except ImportError:
        del paths["png"]  # matplotlib is in the dev extra
    return {k: str(v) for k, v in paths.items()}

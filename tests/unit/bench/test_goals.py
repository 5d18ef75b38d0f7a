"""Issue 13's goals: ratios to the plain loop of the same run, PASS, MISS or info."""

from __future__ import annotations

from streamflow.bench.goals import goal_rows, goals_markdown, latency_reference
from streamflow.bench.results import Backlog, GoalRow, Latency


def backlog(system: str, rate: float, cpu: float, broker: float | None) -> Backlog:
    return Backlog(system, 1000, 1000, 0, 1.0, rate, cpu, 100.0, 10, 0.0,
                   broker_cpu_us_per_record=broker)  # fmt: skip


def latency(system: str, rate: float, p50: float, p99: float, seconds: float = 20.0) -> Latency:
    lat = Latency(system, rate, seconds, 1, 1, p50, p50, p99, p99, False)
    lat.steady_cpu_us_per_record, lat.steady_broker_cpu_us_per_record = 100.0, 50.0
    return lat


def by(rows: list[GoalRow], system: str, metric: str, rate: float | None = None) -> str:
    [row] = [r for r in rows if (r.system, r.metric, r.rate) == (system, metric, rate)]
    return str(row.verdict)


def test_backlog_goals_compare_with_limit() -> None:
    rows = goal_rows(
        [
            backlog("limit", 10_000, 30.0, 8.0),
            backlog("chained", 9_500, 37.0, 9.0),
            backlog("streamflow", 8_000, 44.0, 17.0),
        ],
        [],
    )
    assert by(rows, "chained", "throughput") == "PASS"  # 0.95 >= 0.9
    assert by(rows, "chained", "cpu") == "MISS"  # 1.23 > 1.2
    assert by(rows, "streamflow", "throughput") == "MISS"  # 0.8
    assert by(rows, "streamflow", "cpu") == "PASS"  # 1.47 <= 1.5
    assert by(rows, "streamflow", "broker") == "MISS"  # 2.125 > 2
    [row] = [r for r in rows if (r.system, r.metric) == ("streamflow", "broker")]
    assert row.ratio == 2.125 and row.reference_system == "limit"


def test_latency_goals_compare_with_the_5ms_loop_in_scope_only_at_1k_and_5k_for_20s() -> None:
    rows = goal_rows(
        [],
        [
            latency("limit-5ms", 1000, 20.0, 40.0),
            latency("chained", 1000, 23.0, 70.0),
            latency("limit-5ms", 20000, 20.0, 40.0),
            latency("chained", 20000, 30.0, 50.0),
            latency("limit-5ms", 5000, 20.0, 40.0, seconds=6),
            latency("chained", 5000, 20.0, 40.0, seconds=6),
        ],
    )
    assert by(rows, "chained", "p50", 1000) == "PASS"  # 1.15
    assert by(rows, "chained", "p99", 1000) == "MISS"  # 1.75
    assert by(rows, "chained", "p50", 20000) == "info"  # not a goal's rate
    assert by(rows, "chained", "p50", 5000) == "info"  # a 6-second run
    assert by(rows, "chained", "cpu steady", 1000) == "info"
    assert not [r for r in rows if r.system == "streamflow"]


def test_the_latency_reference_is_the_5ms_loop() -> None:
    assert latency_reference(["chained", "limit", "limit-5ms"]) == "limit-5ms"
    assert latency_reference(["chained", "limit"]) == "limit"  # its wait is 5 ms
    assert latency_reference(["chained", "limit-50ms"]) is None


def test_a_missing_figure_is_not_a_verdict() -> None:
    rows = goal_rows(
        [backlog("limit", 10_000, 30.0, None), backlog("streamflow", 9_000, 40.0, None)], []
    )
    assert by(rows, "streamflow", "broker") == "n/a"  # a configured broker: its CPU is unknown
    assert "| streamflow | broker | backlog | - |" in "\n".join(goals_markdown(rows))


def test_markdown_has_one_line_per_goal() -> None:
    rows = goal_rows([backlog("limit", 10, 1.0, 1.0), backlog("chained", 10, 1.0, 1.0)], [])
    md = goals_markdown(rows)
    assert sum(1 for line in md if line.startswith("| chained")) == len(rows) == 2
    assert goals_markdown([]) == []


def test_the_bench_set_overrides_reach_every_system() -> None:
    from streamflow.bench.systems import set_overrides

    argv = ["--pipeline", "p.toml", "--set", "batching.max_delay_ms=0", "--set", "a.b=c=d"]
    assert set_overrides(argv) == {"batching.max_delay_ms": "0", "a.b": "c=d"}

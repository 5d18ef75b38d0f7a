"""The bench's verdict on backlog runs: a loss or a wrong score is INCORRECT, a slow run
INCOMPLETE."""

from __future__ import annotations

from types import SimpleNamespace

from streamflow.bench import BATCHES_SLOW, verdicts
from streamflow.bench.results import Backlog
from streamflow.bench.systems import wait_accounted


def run(
    system: str, accounted: int, *, error: float = 0.0, unfinished: str = "", raw: int = 10
) -> Backlog:
    return Backlog(
        system, 1000, accounted, 0, 1.0, float(accounted), 10.0, 100.0, 100, error,
        batches={"raw": [raw, raw - 1]}, unfinished=unfinished,
    )  # fmt: skip


def test_finished_correct_runs_get_no_verdict() -> None:
    assert verdicts([run("limit", 1000), run("chained", 1000)]) == []


def test_a_run_still_working_at_the_deadline_is_incomplete_not_a_loss() -> None:
    slow = run(
        "chained", 400, unfinished="still running when the bench stopped waiting after 600 s"
    )
    lines = verdicts([run("limit", 1000), slow])
    assert lines[0].startswith("INCOMPLETE: streamflow, chained topology")
    assert "400 of 1,000 records" in lines[0] and "not a loss" in lines[0]
    assert len(lines) == 1  # a shallow raw topic: no hint about the broker
    deep = run("chained", 400, unfinished=slow.unfinished, raw=BATCHES_SLOW + 1)
    assert "record batches per partition" in verdicts([deep])[1]


def test_a_dead_system_or_wrong_scores_are_incorrect() -> None:
    dead = run("streamflow", 400, unfinished="a process of the system exited")
    wrong = run("limit", 1000, error=0.5)
    lines = verdicts([dead, wrong])
    assert lines == [
        "INCORRECT: plain confluent-kafka loop (limit) produced wrong scores (max error 5.00e-01)",
        "INCORRECT: streamflow (3 faust stages) accounted for 400 of 1,000 records "
        "(a process of the system exited)",
    ]


def system(dead: bool) -> SimpleNamespace:
    return SimpleNamespace(dead=lambda: dead)


def monitor(accounted: int) -> SimpleNamespace:
    return SimpleNamespace(tally=SimpleNamespace(accounted=accounted))


def test_wait_accounted_says_why_it_stopped_short() -> None:
    assert wait_accounted(monitor(5), 5, system(False), timeout_s=5) == ""  # type: ignore[arg-type]
    assert wait_accounted(monitor(4), 5, system(True), timeout_s=5) == (  # type: ignore[arg-type]
        "a process of the system exited"
    )
    assert wait_accounted(monitor(4), 5, system(False), timeout_s=0.1) == (  # type: ignore[arg-type]
        "still running when the bench stopped waiting after 0 s"
    )

"""``--log-format json``: one JSON object per line on stderr, for Loki or ELK."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from streamflow import logs
from tests.conftest import ROOT


@pytest.fixture()
def unbound() -> Iterator[None]:
    """Each test starts with no pipeline or stage bound, and leaves none."""
    saved = dict(logs._bound)
    logs._bound.clear()
    yield
    logs._bound.clear()
    logs._bound.update(saved)


def record(
    msg: str, *args: object, level: int = logging.INFO, **extra: object
) -> logging.LogRecord:
    r = logging.LogRecord("streamflow.agents.worker", level, __file__, 1, msg, args, None)
    r.__dict__.update(extra)
    return r


def test_a_record_is_one_json_line_with_time_level_logger_and_message(unbound: None) -> None:
    line = logs.JsonFormatter().format(record("stage %s consuming\npartitions %s", "clean", [0]))
    assert "\n" not in line
    got = json.loads(line)
    assert got.keys() == {"time", "level", "logger", "message"}
    assert got["level"] == "info" and got["logger"] == "streamflow.agents.worker"
    assert got["message"] == "stage clean consuming\npartitions [0]"
    assert got["time"].endswith("Z") and got["time"][10] == "T"  # ISO 8601, UTC


def test_the_traceback_is_kept_in_exception(unbound: None) -> None:
    try:
        raise ValueError("bad 'value' \u00e9")
    except ValueError:
        r = record("failed", level=logging.ERROR)
        r.exc_info = sys.exc_info()
    got = json.loads(logs.JsonFormatter().format(r))
    assert got["level"] == "error"
    assert (
        got["exception"].startswith("Traceback")
        and "ValueError: bad 'value' \u00e9" in got["exception"]
    )


def test_pipeline_and_stage_bound_to_the_process_or_given_with_the_record(unbound: None) -> None:
    fmt = logs.JsonFormatter()
    assert "stage" not in json.loads(fmt.format(record("x")))
    logs.bind(pipeline="telemetry", stage="clean", ignored="x")
    got = json.loads(fmt.format(record("x")))
    assert (got["pipeline"], got["stage"]) == ("telemetry", "clean") and "ignored" not in got
    assert json.loads(fmt.format(record("x", stage="store")))["stage"] == "store"


def test_level_names() -> None:
    assert logs.level_number("warning") == logging.WARNING
    assert logs.level_number("DEBUG") == logging.DEBUG
    assert logs.level_number("nonsense") == logging.INFO


def streamflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamflow.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_a_command_in_json_mode_writes_only_json_lines_on_stderr() -> None:
    """A worker that finds no broker: the error it stops with is a JSON line too, with the
    pipeline and stage it runs (tests/integration/test_logging.py: a worker that runs, faust's
    lines included)."""
    r = streamflow(
        "--log-format",
        "json",
        "-v",
        "worker",
        "--stage",
        "clean",
        "--bootstrap",
        "127.0.0.1:1",
        "--set",
        "kafka.connect_timeout_s=1",
    )
    assert r.returncode == 2, r.stderr
    lines = [json.loads(line) for line in r.stderr.splitlines()]  # every line parses
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    last = lines[-1]
    assert last["level"] == "error" and "no Kafka broker answered" in last["message"]
    assert (last["pipeline"], last["stage"]) == ("telemetry", "clean")


def test_text_mode_is_unchanged_and_log_level_filters() -> None:
    args = ("worker", "--stage", "clean", "--bootstrap", "127.0.0.1:1")
    r = streamflow("--log-level", "error", *args, "--set", "kafka.connect_timeout_s=1")
    assert r.returncode == 2
    assert r.stderr.startswith("streamflow: error: no Kafka broker answered"), r.stderr
    assert r.stderr.count("\n") == 1, r.stderr  # nothing below error


def test_child_processes_get_the_same_options() -> None:
    """What a supervisor puts before ``worker`` on its children's command line."""
    from streamflow.supervisor import child_command

    saved = logs._config
    try:
        logs._config = logs.Config("json", "warning", verbose=True)
        cmd = child_command("clean", ["--pipeline", "p.toml"], "k:9092")
    finally:
        logs._config = saved
    assert cmd[3:9] == ["--log-format", "json", "--log-level", "warning", "-v", "worker"]

"""``streamflow --log-format json worker --stage all``: every line its processes write on
stderr is one JSON object: the supervisor's, each stage process's (they get the format on
their command line) with its pipeline and stage, and faust's, mode's and aiokafka's own (faust's
worker is told to leave logging alone, so it cannot put its own handler back)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from streamflow.settings.loading import load_settings
from streamflow.steps import process_stages
from tests.conftest import PIPELINE, ROOT
from tests.integration.helpers import argv_for, wait_for

pytestmark = pytest.mark.integration


def stages_up(port: int) -> set[str]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
    except OSError:
        return set()
    return {
        line.split('stage="', 1)[1].split('"', 1)[0]
        for line in text.decode().splitlines()
        if line.startswith("streamflow_worker_up{") and line.endswith(" 1.0")
    }


def test_worker_all_logs_only_json_lines_from_every_process_and_library(
    pipeline_overrides: dict[str, str], tmp_path: Path
) -> None:
    settings = load_settings(PIPELINE, pipeline_overrides)
    stages = set(process_stages(settings))
    port = settings.metrics.port
    err, out = tmp_path / "stderr", tmp_path / "stdout"
    with open(err, "wb") as e, open(out, "wb") as o:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamflow.cli",
                "--log-format",
                "json",
                "-v",  # debug, faust's and aiokafka's lines included
                "worker",
                "--stage",
                "all",
                *argv_for(pipeline_overrides),
            ],
            cwd=ROOT,
            stdout=o,
            stderr=e,
        )
    try:
        assert wait_for(lambda: stages_up(port) >= stages, timeout_s=90, interval_s=0.5), (
            err.read_text()[-3000:]
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, err.read_text()[-3000:]

    lines = err.read_text().splitlines()
    records = []
    for n, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"stderr line {n} of {len(lines)} is not JSON: {line[:300]!r}")
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    loggers = {r["logger"].split(".")[0] for r in records}
    assert {"faust", "mode", "aiokafka"} <= loggers, sorted(loggers)
    # Each stage process says it joined its group, on a line naming its pipeline and stage.
    consuming = {
        r.get("stage")
        for r in records
        if r["logger"] == "streamflow.agents.worker" and " consuming " in r["message"]
    }
    assert consuming == stages, consuming
    for r in records:
        if r["logger"].startswith(("faust", "aiokafka", "streamflow.agents")):
            assert r.get("pipeline") == settings.name and r.get("stage") in stages, r
    # stdout: the supervisor's few lines for the person who started it, not logs
    assert "metrics at http://" in out.read_text()

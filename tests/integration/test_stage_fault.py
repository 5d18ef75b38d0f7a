"""A fault that is not a bad record: the worker exits 70 and commits nothing it did not finish.

The clean stage's handler is made to raise (a bug, an unexpected library error). The worker
must not idle alive: it stops with exit code 70 (EX_SOFTWARE) so a supervisor restarts it,
and since nothing was delivered nothing is committed: a replacement reads every record again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from streamflow.agents.worker import EXIT_STAGE_FAILED
from streamflow.collectors.produce import RawProducer, run_synthetic
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE, ROOT
from tests.integration.test_cli import sets

pytestmark = pytest.mark.integration

FAULTY_WORKER = """
import sys
from streamflow.agents import clean

async def handle(self, chunks):
    raise RuntimeError("injected fault: not a bad record")

clean.CleanHandler.handle = handle
from streamflow.cli import main
sys.exit(main(sys.argv[1:]))
"""


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return [
            tp.offset
            for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        ]
    finally:
        c.close()


def test_a_stage_fault_exits_70_and_commits_nothing_unfinished(
    pipeline_overrides: dict[str, str], bootstrap: str, tmp_path: Path
) -> None:
    settings = load_settings(PIPELINE, pipeline_overrides)
    script = tmp_path / "faulty_worker.py"
    script.write_text(FAULTY_WORKER)
    raw = RawProducer(settings, bootstrap)
    assert run_synthetic(raw, rate=0, records=200, seed=1).produced == 200
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "worker",
            "--stage",
            "clean",
            "--bootstrap",
            bootstrap,
            *sets(pipeline_overrides),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_STAGE_FAILED, log[-3000:]
    assert "stage clean failed, stopping the worker" in log and "injected fault" in log
    offsets = committed(
        bootstrap, settings.group_id("clean"), settings.topics.raw, settings.topics.partitions
    )
    assert all(o < 0 for o in offsets), (
        f"committed {offsets} though nothing was delivered"
    )  # -1001: none

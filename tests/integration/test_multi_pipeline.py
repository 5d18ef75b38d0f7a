"""One worker, several pipelines: `streamflow worker --stage all --pipeline A --pipeline B`.

Each pipeline gets its own processes, consumer groups, topics and model; the worker serves
their metrics on one endpoint, where each model is named with its pipeline.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from streamflow.broker import free_port
from streamflow.collectors.produce import RawProducer, run_synthetic
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE, ROOT
from tests.integration.helpers import read_topic, wait_for

pytestmark = pytest.mark.integration
N = 2000


def second_pipeline(tmp_path: Path, name: str) -> Path:
    """telemetry.toml as another pipeline: its own name and topics, paths made absolute."""
    text = PIPELINE.read_text()
    text = re.sub(
        r'"\.\./([^"]+)"', lambda m: f'"{(PIPELINE.parent.parent / m.group(1)).as_posix()}"', text
    )
    text = re.sub(r'^name = "telemetry"', f'name = "{name}"', text, flags=re.M)
    text = text.replace('"telemetry.raw"', f'"{name}.raw"').replace(
        '"telemetry.scored"', f'"{name}.scored"'
    )
    text = text.replace('"telemetry.dlq"', f'"{name}.dlq"')
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_one_worker_serves_two_pipelines_each_with_its_model(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    a, b = second_pipeline(tmp_path, f"a{unique}"), second_pipeline(tmp_path, f"b{unique}")
    port = free_port()
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamflow.cli",
            "worker",
            "--stage",
            "all",
            "--pipeline",
            str(a),
            "--pipeline",
            str(b),
            "--bootstrap",
            bootstrap,
            "--metrics-port",
            str(port),
            "--set",
            "runtime.topology=chained",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    log.close()  # the worker has its own descriptor
    try:

        def models() -> set[str] | None:
            try:
                text = (
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)
                    .read()
                    .decode()
                )
            except OSError:
                return None
            up = set(
                re.findall(r'streamflow_worker_up\{pipeline="([^"]+)",stage="chained"\} 1\.0', text)
            )
            return up if len(up) == 2 else None

        assert wait_for(models, timeout_s=90), (tmp_path / "worker.log").read_text()[-3000:]
        for path in (a, b):
            s = load_settings(path, {"kafka.bootstrap": bootstrap})
            assert run_synthetic(RawProducer(s, bootstrap), rate=0, records=N, seed=2).produced == N
        for path in (a, b):
            t = load_settings(path, {"kafka.bootstrap": bootstrap}).topics
            assert wait_for(
                lambda t=t: (
                    len(read_topic(bootstrap, t.scored, idle_s=0.5))
                    + len(read_topic(bootstrap, t.dlq, idle_s=0.5))
                    >= N
                ),
                timeout_s=90,
            )
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        for name in (f"a{unique}", f"b{unique}"):
            assert re.search(
                rf'streamflow_model_info\{{[^}}]*pipeline="{name}"[^}}]*\}} 1\.0', text
            ), name
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, (tmp_path / "worker.log").read_text()[-3000:]

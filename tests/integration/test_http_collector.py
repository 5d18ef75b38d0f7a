"""`streamflow collect http` as a user runs it: the real CLI process, the real broker, the
pipeline scoring."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from streamflow.settings import Settings
from tests.conftest import PIPELINE, ROOT
from tests.integration.helpers import read_topic, running_pipeline

pytestmark = pytest.mark.integration
TOKEN = "tok-http-8Jm2-never-logged"


def sets(overrides: dict[str, str]) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]


@pytest.fixture()
def pipeline(pipeline_overrides: dict[str, str]) -> Iterator[tuple[Settings, dict[str, str]]]:
    overrides = {**pipeline_overrides, "runtime.topology": "chained"}
    with running_pipeline(overrides, environ={}) as (settings, _):
        yield settings, overrides


def post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/records", body=body, headers=headers)
    resp = conn.getresponse()
    out = json.loads(resp.read() or b"{}")
    conn.close()
    return resp.status, out


def test_http_collector_checks_the_token_and_size_and_its_records_get_scored(
    pipeline: tuple[Settings, dict[str, str]],
) -> None:
    settings, overrides = pipeline
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamflow.cli",
            "collect",
            "http",
            "--port",
            "0",
            "--pipeline",
            str(PIPELINE),
            *sets({**overrides, "collector.max_body_bytes": "4096"}),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "STREAMFLOW_COLLECTOR_TOKEN": TOKEN},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "listening on" in line:
            break
    banner = "".join(lines)
    assert "listening on http://127.0.0.1:" in banner and "bearer token required" in banner, banner
    port = int(banner.split("listening on http://127.0.0.1:")[1].split()[0])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    now = int(time.time() * 1000)
    records = [
        {
            "device_id": f"rack9-node{i}",
            "timestamp": now + i,
            "cpu_temp_c": 55.0 + i,
            "power_w": 380.0,
            "cpu_util_pct": 40.0,
        }
        for i in range(10)
    ]
    body = "\n".join(json.dumps(r) for r in records).encode()
    try:
        assert post(port, body, {})[0] == 401
        assert post(port, body, {"Authorization": "Bearer not-the-token"})[0] == 401
        status, out = post(
            port, b"x" * 2_000_000, auth
        )  # refused from Content-Length; the reply still arrives
        assert status == 413 and "4096" in out["error"]
        status, out = post(port, body + b"\n{oops\n", auth)
        assert status == 400 and out["lines"] == [11] and out["accepted"] == 0
        status, out = post(port, body, auth)
        assert (status, out) == (200, {"accepted": 10, "topic": settings.topics.raw})
        raw = read_topic(settings.kafka.bootstrap, settings.topics.raw, until=10, timeout_s=30)
        scored = read_topic(
            settings.kafka.bootstrap, settings.topics.scored, until=10, timeout_s=60
        )
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    assert len(raw) == 10  # nothing from the refused requests
    assert sorted(m.key for m in scored) == sorted(f"rack9-node{i}".encode() for i in range(10))
    assert proc.returncode == 0, banner + rest
    assert f"produced 10 records to {settings.topics.raw}" in rest
    assert TOKEN not in banner + rest

"""`streamflow collect http` as a user runs it: the real CLI process, the real broker, the
pipeline scoring."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamflow.broker import free_port
from streamflow.kafka.admin import ensure_topics
from streamflow.settings import Settings
from streamflow.settings.loading import load_settings
from streamflow.steps import pipeline_topics
from tests.conftest import PIPELINE, ROOT
from tests.integration.helpers import read_topic, running_pipeline
from tests.integration.tls import make_certificates

pytestmark = pytest.mark.integration
TOKEN = "tok-http-8Jm2-never-logged"


def sets(overrides: dict[str, str]) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]


@pytest.fixture()
def pipeline(pipeline_overrides: dict[str, str]) -> Iterator[tuple[Settings, dict[str, str]]]:
    overrides = {**pipeline_overrides, "runtime.topology": "chained"}
    with running_pipeline(overrides, environ={}) as (settings, _):
        yield settings, overrides


def post(
    port: int, body: bytes, headers: dict[str, str], tls: ssl.SSLContext | None = None
) -> tuple[int, dict[str, Any]]:
    conn = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=tls)
        if tls
        else http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    )
    try:
        conn.request("POST", "/records", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def start_collector(overrides: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """`streamflow collect http` on any free port, its metrics on another (the pipeline's
    processes serve theirs on metrics.port); the process and its banner."""
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
            *sets({**overrides, "metrics.port": str(free_port())}),
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
    return proc, "".join(lines)


def test_http_collector_checks_the_token_and_size_and_its_records_get_scored(
    pipeline: tuple[Settings, dict[str, str]],
) -> None:
    settings, overrides = pipeline
    proc, banner = start_collector({**overrides, "collector.max_body_bytes": "4096"})
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


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The collector's samples by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_https_collector_refuses_plain_http_and_counts_requests_by_status(
    bootstrap: str, pipeline_overrides: dict[str, str], tmp_path: Path
) -> None:
    ca, cert, key = make_certificates(tmp_path)
    settings = load_settings(PIPELINE, pipeline_overrides)
    ensure_topics(bootstrap, pipeline_topics(settings))
    proc, banner = start_collector(
        {
            **pipeline_overrides,
            "collector.tls_certfile": str(cert),
            "collector.tls_keyfile": str(key),
        }
    )
    assert "listening on https://127.0.0.1:" in banner and "/metrics" in banner, banner
    port = int(banner.split("listening on https://127.0.0.1:")[1].split()[0])
    metrics_url = "http://" + banner.split("metrics on http://")[1].split()[0]
    tls = ssl.create_default_context(cafile=str(ca))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = "\n".join(
        json.dumps({"device_id": f"rack3-node{i}", "timestamp": 1764000000000 + i})
        for i in range(3)
    ).encode()
    try:
        assert post(port, body, auth, tls) == (200, {"accepted": 3, "topic": settings.topics.raw})
        assert post(port, body, auth, tls)[0] == 200
        assert post(port, body + b"\n[1]\n", auth, tls)[0] == 400
        assert post(port, body, {}, tls)[0] == 401
        with pytest.raises((OSError, http.client.HTTPException)):
            post(port, body, auth)  # plain HTTP
        raw = read_topic(bootstrap, settings.topics.raw, until=6, timeout_s=30)
        samples = scrape(metrics_url)
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    assert len(raw) == 6
    name = settings.name
    requests = {
        dict(labels)["status"]: v
        for (metric, labels), v in samples.items()
        if metric == "streamflow_collector_requests_total" and dict(labels)["pipeline"] == name
    }
    assert requests == {"200": 2, "400": 1, "401": 1}
    records = {
        dict(labels)["outcome"]: v
        for (metric, labels), v in samples.items()
        if metric == "streamflow_collector_records_total"
    }
    assert records == {"accepted": 6, "rejected": 4}
    duration = ("streamflow_collector_request_duration_seconds_count", (("pipeline", name),))
    assert samples[duration] == 4
    assert proc.returncode == 0, banner + rest
    assert f"produced 6 records to {settings.topics.raw}" in rest

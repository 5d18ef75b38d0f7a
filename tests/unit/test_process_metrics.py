"""The ``process_*`` metrics on a worker's endpoint: its own, and under ``worker --stage all``
(multiprocess mode, where prometheus_client has none) each stage process's, read from /proc."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamflow.broker import free_port
from streamflow.metrics import ChildProcess, Metrics, ProcessMetrics, build_info, serve

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

PROCESS_SERIES = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
}


def samples(
    collector: ProcessMetrics,
) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in collector.collect():
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


@pytest.fixture()
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A child process holding 20 MB, as a stage would hold its model."""
    code = "import time; block = bytearray(20_000_000); time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.5)
    yield p
    p.kill()
    p.wait()


def test_own_process_metrics_are_unlabelled_like_prometheus_clients() -> None:
    got = samples(ProcessMetrics())
    assert set(got) == PROCESS_SERIES
    assert all(labels == {} for series in got.values() for labels, _ in series)
    assert got["process_resident_memory_bytes"][0][1] > 1e6


def test_each_child_is_read_from_proc_with_its_labels(child: subprocess.Popen[bytes]) -> None:
    labels = {"pipeline": "telemetry", "stage": "clean", "replica": "0"}
    children: list[ChildProcess] = [(labels, child.pid)]
    got = samples(ProcessMetrics(lambda: children))
    for series in PROCESS_SERIES:
        values = [v for lbl, v in got[series] if lbl == labels]
        assert len(values) == 1, series
    rss = [v for lbl, v in got["process_resident_memory_bytes"] if lbl == labels]
    assert rss[0] > 20e6  # the child's memory, not this process's
    start = [v for lbl, v in got["process_start_time_seconds"] if lbl == labels]
    assert abs(start[0] - time.time()) < 30


def test_a_child_that_has_exited_drops_out(child: subprocess.Popen[bytes]) -> None:
    children: list[ChildProcess] = [({"stage": "clean"}, child.pid)]
    child.kill()
    child.wait()
    got = samples(ProcessMetrics(lambda: children))
    assert all(lbl == {} for series in got.values() for lbl, _ in series)


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_a_single_stage_worker_serves_its_metrics_its_process_and_its_build() -> None:
    m = Metrics.create()
    m.up.labels("telemetry", "clean").set(1)
    m.build_info.labels(**build_info("1.2.3")).set(1)
    port = free_port()
    server = serve(m.registry, "127.0.0.1", port)
    try:
        got = scrape(port)
    finally:
        server.shutdown()
        server.server_close()
    assert got["streamflow_worker_up"] == [({"pipeline": "telemetry", "stage": "clean"}, 1.0)]
    assert set(got) >= PROCESS_SERIES
    [(labels, value)] = got["streamflow_build_info"]
    assert value == 1 and labels["version"] == "1.2.3" and labels["python"].count(".") == 2
    assert labels["onnxruntime"] and labels["faust"] and labels["confluent_kafka"]


def test_the_multiprocess_endpoint_serves_every_childs_process_metrics(
    child: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    port = free_port()
    children: list[ChildProcess] = [
        ({"pipeline": "t", "stage": "inference", "replica": "0"}, child.pid)
    ]
    server = serve(
        None, "127.0.0.1", port, multiprocess_dir=str(tmp_path), children=lambda: children
    )
    try:
        got = scrape(port)
    finally:
        server.shutdown()
        server.server_close()
    stages = {lbl.get("stage") for lbl, _ in got["process_resident_memory_bytes"]}
    assert stages == {None, "inference"}  # the supervisor's own, and its child's

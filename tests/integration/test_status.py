"""`streamflow status --json` on a running pipeline, run as a user runs it: every stage's group
caught up after the records are scored, the model the workers report; then, the workers
stopped, the lag of the records produced since."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from streamflow.collectors.produce import RawProducer, run_synthetic
from tests.conftest import ROOT
from tests.integration.helpers import read_topic, running_pipeline, wait_for

pytestmark = pytest.mark.integration
N = 2000  # scored while the pipeline runs
MORE = 300  # produced once it is stopped: the clean stage's lag


def status(overrides: dict[str, str]) -> dict[str, Any]:
    """``streamflow status --json`` with the test's settings, as a subprocess."""
    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
    r = subprocess.run(
        [sys.executable, "-m", "streamflow.cli", "status", "--json", "--timeout", "5", *sets],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def caught_up(doc: dict[str, Any]) -> bool:
    clean = doc["stages"][0]
    read = sum(p["committed"] or 0 for p in clean["partitions"])
    return read == N and all(s["lag"] == 0 for s in doc["stages"])


def test_status_shows_each_stage_caught_up_then_the_lag_of_stopped_workers(
    pipeline_overrides: dict[str, str], bootstrap: str
) -> None:
    with running_pipeline(pipeline_overrides) as (settings, pipe):
        t = settings.topics
        stats = run_synthetic(RawProducer(settings, bootstrap), rate=0, records=N, seed=5)
        assert stats.produced == N and stats.failed == 0

        def accounted() -> bool:
            scored = read_topic(bootstrap, t.scored, idle_s=0.5)
            return len(scored) + len(read_topic(bootstrap, t.dlq, idle_s=0.5)) >= N

        assert wait_for(accounted, timeout_s=60, interval_s=1), f"logs in {pipe.log_dir}"
        doc = wait_for(lambda: (d := status(pipeline_overrides)) and caught_up(d) and d, 30, 0.5)
        assert doc, f"the groups did not catch up: {status(pipeline_overrides)}"

        name = settings.name
        assert (doc["pipeline"], doc["topology"], doc["bootstrap"]) == (name, "stages", bootstrap)
        sources = {
            "clean": t.raw,
            "normalize": f"{name}.internal.cleaned",
            "inference": f"{name}.internal.normalized",
        }
        assert [s["stage"] for s in doc["stages"]] == list(sources)
        for s in doc["stages"]:
            topic = sources[s["stage"]]
            assert s["group"] == f"streamflow-{name}-{s['stage']}" and s["topics"] == [topic]
            assert s["up"] is True and s["error"] is None and s["state"] == "stable"
            assert [(p["topic"], p["partition"]) for p in s["partitions"]] == [
                (topic, i) for i in range(4)
            ]
            assert all(p["lag"] == 0 and p["committed"] == p["end"] for p in s["partitions"])
            # Tansu leaves the members out of its answer (null); a broker that reports them
            # shows the stage's worker holding every partition of its source.
            if s["members"] is not None:
                assert len(s["members"]) >= 1
                held = sorted(p for m in s["members"] for p in m["assignment"].get(topic, []))
                assert held == [0, 1, 2, 3]
        assert doc["models"] == [
            {
                "name": "telemetry-anomaly",
                "version": "1.0.0",
                "sha256": doc["models"][0]["sha256"],
                "provider": "CPUExecutionProvider",
                "device": "auto",
            }
        ]
        assert len(doc["models"][0]["sha256"]) == 64
        (worker,) = doc["workers"]
        assert worker["url"] == pipe.metrics_url and worker["reachable"] is True
        assert worker["stages_up"] == ["clean", "normalize", "inference"]

    # The workers drained, committed and stopped; the broker runs on.
    stats = run_synthetic(RawProducer(settings, bootstrap), rate=0, records=MORE, seed=6)
    assert stats.produced == MORE
    doc = status(pipeline_overrides)
    clean, normalize, inference = doc["stages"]
    assert clean["lag"] == MORE  # exact on Tansu too: end offsets are read from the last batch
    assert sum(p["end"] for p in clean["partitions"]) == N + MORE
    assert normalize["lag"] == 0 and inference["lag"] == 0
    (worker,) = doc["workers"]  # the endpoint is gone: reported, not fatal
    assert worker["reachable"] is False and worker["error"]
    assert clean["up"] is None and doc["models"] == []

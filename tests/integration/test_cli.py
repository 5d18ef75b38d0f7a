"""The CLI as a user runs it: real processes, real broker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PIPELINE, ROOT
from tests.integration.helpers import read_topic

pytestmark = pytest.mark.integration


def streamflow(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamflow.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def sets(overrides: dict[str, str]) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]


def test_validate_accepts_the_shipped_pipeline() -> None:
    r = streamflow("validate", str(PIPELINE))
    assert r.returncode == 0, r.stderr
    assert "ok (pipeline telemetry: 16 features" in r.stdout


def test_validate_lists_every_problem_with_key_and_file(tmp_path: Path) -> None:
    text = PIPELINE.read_text().replace('"../', f'"{ROOT}/')
    text = text.replace('input = "features"', 'input = "x"').replace(
        'outputs = ["score"]', 'outputs = ["prob"]'
    )
    text = text.replace('name = "airflow_cfm"', 'name = "airflow_lpm"')
    p = tmp_path / "bad.toml"
    p.write_text(text)
    r = streamflow("validate", str(p))
    assert r.returncode == 1
    err = r.stderr
    assert f"{p}: " in err
    assert "model.input: 'x' is not an input of" in err
    assert "model.outputs: 'prob' is not an output of" in err
    assert "features[15] (airflow_lpm): not a field of the input schema" in err


def test_worker_with_a_bad_setting_fails_at_start_naming_the_key() -> None:
    r = streamflow(
        "worker",
        "--stage",
        "clean",
        "--bootstrap",
        "127.0.0.1:1",
        "--set",
        "batching.max_batch=zero",
    )
    assert r.returncode == 2
    assert "batching.max_batch: expected an integer, got 'zero'" in r.stderr
    assert str(PIPELINE.relative_to(ROOT)) in r.stderr


def test_unreachable_broker_gives_a_clear_error_not_a_hang() -> None:
    t0 = time.monotonic()
    r = streamflow(
        "worker",
        "--stage",
        "clean",
        "--bootstrap",
        "127.0.0.1:1",
        "--set",
        "kafka.connect_timeout_s=3",
        timeout=60,
    )
    assert r.returncode == 2
    assert "no Kafka broker answered at 127.0.0.1:1 within 3s" in r.stderr
    assert time.monotonic() - t0 < 30


def test_worker_without_a_bootstrap_says_how_to_get_one() -> None:
    r = streamflow("worker", "--stage", "all", env={"STREAMFLOW_KAFKA_BOOTSTRAP": ""})
    assert r.returncode == 2
    assert "kafka.bootstrap: streamflow worker needs a broker address" in r.stderr


def test_demo_runs_to_completion_and_accounts_for_every_record(
    pipeline_overrides: dict[str, str], tmp_path: Path
) -> None:
    overrides = {
        k: v for k, v in pipeline_overrides.items() if k != "kafka.bootstrap"
    }  # its own embedded broker
    r = streamflow("demo", "--records", "6000", "--rate", "2000", *sets(overrides), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "produced       6000" in out
    assert "accounted      6000 of 6000" in out and "INCOMPLETE" not in out
    scored = int(out.split("scored")[1].split()[0])
    dead = int(out.split("dead-lettered")[1].split()[0])
    assert scored + dead == 6000 and dead > 0
    assert "p99" in out and "throughput" in out
    # It ends pointing at a picture of the run, and says how to render it again.
    report_line = next(line for line in out.splitlines() if line.strip().startswith("report"))
    png = Path(report_line.split()[1])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", report_line
    samples = report_line.split("--samples ")[1].split()[0]
    again = tmp_path / "again.png"
    r = streamflow("report", "--samples", samples, "--out", str(again), *sets(overrides))
    assert r.returncode == 0 and again.stat().st_size > 10_000, r.stdout + r.stderr


def test_debian_kcat_needs_the_bundled_librdkafka_for_the_embedded_broker(bootstrap: str) -> None:
    """Documents the limitation `streamflow kcat` works around: if Debian's kcat links an old
    librdkafka, it cannot read Tansu's ApiVersions response; through `streamflow kcat` it can."""
    if shutil.which("kcat") is None:
        pytest.skip("kcat not installed")
    r = streamflow("kcat", "-L", "-b", bootstrap, "-m", "10", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "1 brokers:" in r.stdout and bootstrap.split(":")[1] in r.stdout


def test_produce_and_consume_round_trip(bootstrap: str, pipeline_overrides: dict[str, str]) -> None:
    raw = pipeline_overrides["topics.raw"]
    args = [*sets(pipeline_overrides)]
    from streamflow.kafka.admin import ensure_topics
    from streamflow.settings.loading import load_settings
    from streamflow.steps import pipeline_topics

    ensure_topics(bootstrap, pipeline_topics(load_settings(PIPELINE, pipeline_overrides)))
    rec = {
        "device_id": "rack7-node3",
        "timestamp": 1764000000000,
        "cpu_temp_c": 61.5,
        "power_w": 420.0,
        "cpu_util_pct": 55.0,
    }
    r = streamflow("produce", raw, "--json", json.dumps(rec), "--encode", "avro", *args)
    assert r.returncode == 0, r.stderr
    r = streamflow("consume", raw, "--limit", "1", "--timeout", "20", *args)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[0])
    assert (
        got["device_id"] == "rack7-node3"
        and got["cpu_temp_c"] == 61.5
        and got["gpu_temp_c"] is None
    )
    msgs = read_topic(bootstrap, raw, until=1)
    assert msgs[0].key == b"rack7-node3"


def test_kcat_produces_json_and_reads_the_result(
    bootstrap: str, pipeline_overrides: dict[str, str]
) -> None:
    kcat = shutil.which("kcat")
    if kcat is None:
        if os.environ.get("CI"):
            pytest.fail("kcat is missing in CI: `make test` installs it with apt-get")
        pytest.skip("kcat not installed (apt-get install kcat)")
    from streamflow.settings.loading import load_settings
    from streamflow.supervisor import LocalPipeline

    overrides = {**pipeline_overrides, "output.format": "json"}
    settings = load_settings(PIPELINE, overrides)
    pipe = LocalPipeline(settings, ["--pipeline", str(PIPELINE), *sets(overrides)])
    pipe.start()
    try:
        assert pipe.wait_consuming(90)
        rec = {
            "device_id": "rack7-node3",
            "timestamp": int(time.time() * 1000),
            "cpu_temp_c": 61.5,
            "power_w": 420.0,
            "cpu_util_pct": 55.0,
        }
        # The real kcat binary, on the librdkafka confluent-kafka ships (see streamflow/kcat.py).
        from streamflow.cli.kcat import kcat_env

        env = kcat_env()
        subprocess.run(
            [kcat, "-P", "-b", bootstrap, "-t", settings.topics.raw, "-k", "rack7-node3"],
            input=json.dumps(rec) + "\n",
            text=True,
            check=True,
            timeout=30,
            env=env,
        )
        out = subprocess.run(
            [
                kcat,
                "-C",
                "-b",
                bootstrap,
                "-t",
                settings.topics.scored,
                "-o",
                "beginning",
                "-c",
                "1",
                "-f",
                "%k\t%s\n",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env=env,
        )
        key, value = out.stdout.strip().split("\t", 1)
        result = json.loads(value)
        assert key == "rack7-node3"
        assert result["device_id"] == "rack7-node3" and 0.0 <= result["score"] <= 1.0
        assert (
            result["label"] in ("normal", "anomaly") and result["model_name"] == "telemetry-anomaly"
        )
    finally:
        pipe.stop()


def test_up_prints_where_to_connect_and_stops_cleanly_on_ctrl_c(
    pipeline_overrides: dict[str, str],
) -> None:
    import signal

    overrides = {
        k: v for k, v in pipeline_overrides.items() if k != "kafka.bootstrap"
    }  # its own embedded broker
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamflow.cli", "up", *sets(overrides)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C stops" in line:
            break
    text = "".join(lines)
    assert "pipeline t" in text and "running" in text, text
    bootstrap = text.split("bootstrap")[1].split()[0]
    assert f"metrics    http://127.0.0.1:{overrides['metrics.port']}/metrics" in text
    children = subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
    ).stdout.split()
    assert len(children) >= 4  # broker + three stages
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    proc.stdout.close()
    time.sleep(0.5)
    alive = [
        pid
        for pid in children
        if Path(f"/proc/{pid}").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    ]
    assert alive == [], f"left behind: {alive}"
    from streamflow.errors import BrokerUnavailable
    from streamflow.kafka.admin import wait_ready

    with pytest.raises(BrokerUnavailable):
        wait_ready(bootstrap, 1.0)


def test_a_second_signal_aborts_at_once_and_leaves_nothing_behind(
    pipeline_overrides: dict[str, str],
) -> None:
    """Ctrl-C then Ctrl-C (or a supervisor's SIGTERM) while stopping: no hang, no orphans.

    Regression: the handler used to set a threading.Event, whose lock a signal arriving
    inside Event.set() found taken: the process deadlocked.
    """
    import signal

    overrides = {k: v for k, v in pipeline_overrides.items() if k != "kafka.bootstrap"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamflow.cli", "up", *sets(overrides)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Ctrl-C stops" in line:
            break
    children = subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
    ).stdout.split()
    for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGTERM):
        proc.send_signal(sig)
        time.sleep(0.01)
    proc.wait(timeout=60)
    proc.stdout.close()
    time.sleep(0.5)
    alive = [
        pid
        for pid in children
        if Path(f"/proc/{pid}").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    ]
    assert alive == [], f"left behind: {alive}"


def test_bench_inference_reports_agent_and_raw_rates_per_batch_size(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamflow.cli",
            "bench",
            "inference",
            "--records",
            "3000",
            "--batch-sizes",
            "1,64",
            "--rates",
            "",
            "--pipeline",
            str(PIPELINE),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(next(tmp_path.glob("bench-results/inference-*.json")).read_text())
    assert [row["batch"] for row in report["rows"]] == [1, 64]
    for row in report["rows"]:  # measured figures, whatever they are on this machine
        assert row["raw_records_per_s"] > 0 and row["agent_records_per_s"] > 0
        assert abs(row["efficiency"] - row["agent_records_per_s"] / row["raw_records_per_s"]) < 1e-3

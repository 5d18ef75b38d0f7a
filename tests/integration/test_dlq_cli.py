"""`streamflow dlq inspect` and `streamflow dlq replay` as a user runs them: real CLI processes,
the real pipeline, the embedded broker.

The story: the pipeline runs with ``limits.max_message_bytes = 2000``, so readings that carry a
3 kB ``notes`` field are dead-lettered as too large, along with records that are really bad.
``dlq inspect --json`` counts them by stage and reason code. The limit is raised (the pipeline
restarted with the default), ``dlq replay --reason max_message_bytes`` sends the too-large
ones back, and they are scored. The really bad ones, replayed, fail again and come back to
the dead-letter topic with ``sf-replayed: 1``; ``--max-replays 1`` then refuses them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from streamflow.settings import Settings
from streamflow.settings.loading import load_settings
from streamflow.supervisor import LocalPipeline
from tests.conftest import PIPELINE, ROOT
from tests.integration.helpers import read_topic, wait_for

pytestmark = pytest.mark.integration
GOOD, LARGE, NAN, GARBAGE = 40, 6, 5, 4


def streamflow(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamflow.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def sets(overrides: dict[str, str]) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]


def run_pipeline(overrides: dict[str, str]) -> LocalPipeline:
    pipe = LocalPipeline(
        load_settings(PIPELINE, overrides), ["--pipeline", str(PIPELINE), *sets(overrides)]
    )
    pipe.start()
    if not pipe.wait_consuming(90):
        pipe.stop()
        raise AssertionError(f"stages did not start; logs in {pipe.log_dir}")
    return pipe


@pytest.fixture()
def strict(
    pipeline_overrides: dict[str, str],
) -> Iterator[tuple[Settings, dict[str, str], LocalPipeline]]:
    """The pipeline with a message limit of 2000 bytes."""
    overrides = {**pipeline_overrides, "limits.max_message_bytes": "2000"}
    pipe = run_pipeline(overrides)
    try:
        yield load_settings(PIPELINE, overrides), pipeline_overrides, pipe
    finally:
        pipe.stop()


def reading(i: int, **extra: Any) -> bytes:
    return json.dumps(
        {
            "device_id": f"dev-{i}",
            "timestamp": 1764000000000 + i,
            "cpu_temp_c": 55.0,
            "power_w": 300.0,
            "cpu_util_pct": 20.0,
            **extra,
        }
    ).encode()


def test_inspect_counts_and_replay_resends_after_the_fix(
    strict: tuple[Settings, dict[str, str], LocalPipeline], bootstrap: str
) -> None:
    settings, base, pipe = strict
    t = settings.topics
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    sent = [(f"good-{i}", reading(i)) for i in range(GOOD)]
    sent += [(f"large-{i}", reading(i, notes="n" * 3000)) for i in range(LARGE)]
    sent += [(f"nan-{i}", reading(i, power_w=float("nan"))) for i in range(NAN)]
    sent += [(f"garbage-{i}", bytes([0xFF, 0x00, i]) * 7) for i in range(GARBAGE)]
    for key, value in sent:
        p.produce(t.raw, value, key.encode())
    assert p.flush(30) == 0
    bad = LARGE + NAN + GARBAGE
    assert wait_for(lambda: len(read_topic(bootstrap, t.dlq, idle_s=0.5)) >= bad, timeout_s=90), (
        pipe.log_dir
    )
    assert wait_for(
        lambda: len(read_topic(bootstrap, t.scored, idle_s=0.5)) >= GOOD, timeout_s=60
    ), pipe.log_dir

    # inspect: counts by stage and reason code, machine-readable
    cli = [*sets(base), "--set", "limits.max_message_bytes=2000"]
    r = streamflow("dlq", "inspect", "--json", "--show", "3", *cli)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["topic"] == t.dlq and doc["total"] == bad
    assert doc["by_stage"] == {"clean": bad}
    codes = {(c["stage"], c["reason_code"]): c["count"] for c in doc["by_reason_code"]}
    assert codes[("clean", "too_large")] == LARGE and codes[("clean", "non_finite")] == NAN
    assert sum(codes.values()) == bad
    reasons = {x["reason"]: x["count"] for x in doc["by_reason"]}
    assert reasons["message of # bytes exceeds max_message_bytes # (key # bytes)"] == LARGE
    assert reasons["power_w: non-finite value nan"] == NAN
    assert len(doc["examples"]) == 3 and all(
        e["source"].startswith(f"{t.raw}/") for e in doc["examples"]
    )

    # the same as text, with examples and a preview of the original bytes
    r = streamflow("dlq", "inspect", "--show", "20", "--reason", "invalid_avro", *cli)
    assert r.returncode == 0, r.stderr
    assert f"{t.dlq}: {GARBAGE} dead letter(s)" in r.stdout
    assert r.stdout.count("[dlq ") == GARBAGE and "value    hex ff 00 00 ff 00 00" in r.stdout

    # a dry run sends nothing
    raw_before = len(read_topic(bootstrap, t.raw, idle_s=0.5))
    r = streamflow("dlq", "replay", "--reason", "max_message_bytes", "--dry-run", *cli)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"would replay {LARGE} dead letter(s) to {t.raw}")
    time.sleep(1)
    assert len(read_topic(bootstrap, t.raw, idle_s=0.5)) == raw_before

    # the fix: the limit back to its default (1 MiB); the too-large records replayed are scored
    pipe.stop()
    fixed = run_pipeline(base)
    try:
        r = streamflow("dlq", "replay", "--reason", "max_message_bytes", *sets(base))
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"replayed {LARGE} dead letter(s) to {t.raw}"), r.stdout
        replays = [
            m for m in read_topic(bootstrap, t.raw, idle_s=0.5) if "sf-replayed" in m.headers
        ]
        assert sorted(m.key for m in replays) == sorted(
            k.encode() for k, _ in sent if k.startswith("large-")
        )
        assert {m.headers["sf-replayed"] for m in replays} == {b"1"}
        originals = dict(sent)
        assert all(
            m.value == originals[(m.key or b"").decode()] for m in replays
        )  # the original bytes

        def scored_large() -> list[Any]:
            return [
                m
                for m in read_topic(bootstrap, t.scored, idle_s=0.5)
                if (m.key or b"").startswith(b"large-")
            ]

        assert (
            len(wait_for(lambda: len(scored_large()) >= LARGE, timeout_s=60) and scored_large())
            == LARGE
        )

        # records that are really bad fail again, and carry their replay count to the
        # dead-letter topic
        since = str(int(time.time() * 1000))
        r = streamflow("dlq", "replay", "--reason", "non_finite", *sets(base))
        assert r.stdout.startswith(f"replayed {NAN} dead letter(s)"), r.stdout + r.stderr

        def again() -> list[Any]:
            return [
                m
                for m in read_topic(bootstrap, t.dlq, idle_s=0.5)
                if m.headers.get("sf-replayed") == b"1"
            ]

        assert len(wait_for(lambda: len(again()) >= NAN, timeout_s=60) and again()) == NAN, (
            fixed.log_dir
        )
        r = streamflow(
            "dlq",
            "replay",
            "--reason",
            "non_finite",
            "--since",
            since,
            "--max-replays",
            "1",
            "--json",
            *sets(base),
        )
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["sent"] == 0 and out["skipped"] == {"already replayed 1 time(s)": NAN}
        r = streamflow("dlq", "inspect", "--json", "--since", since, *sets(base))
        assert json.loads(r.stdout)["replayed"] == NAN
    finally:
        fixed.stop()

"""Reading topics back the way a user would, for the integration tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streamflow.settings import Settings
from streamflow.settings.loading import load_settings
from streamflow.supervisor import LocalPipeline
from tests.conftest import PIPELINE


@dataclass(frozen=True)
class Msg:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    timestamp_ms: int


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: int | None = None,
    timeout_s: float = 60.0,
    idle_s: float = 2.0,
    conf: dict[str, Any] | None = None,
) -> list[Msg]:
    """Every message of ``topic`` from the beginning; stops at ``until`` messages or after
    ``idle_s`` of silence.
    ``conf``: more client settings (TLS, SASL)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 20,
            **(conf or {}),
        }
    )
    md = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
    out: list[Msg] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = c.consume(10000, timeout=0.2)
            for m in batch:
                if m.error():
                    continue
                out.append(
                    Msg(
                        m.topic(),
                        m.partition(),
                        m.offset(),
                        m.key(),
                        m.value() or b"",
                        dict(m.headers() or []),
                        m.timestamp()[1],
                    )
                )
            if batch:
                last = time.monotonic()
            if until is not None and len(out) >= until:
                break
            if until is None and time.monotonic() - last > idle_s:
                break
    finally:
        c.close()
    return out


def wait_for(predicate, timeout_s: float = 60.0, interval_s: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    return predicate()


def argv_for(overrides: Mapping[str, str], pipeline: Path = PIPELINE) -> list[str]:
    """The command-line settings a stage process needs to read the same settings as the test."""
    return [
        "--pipeline",
        str(pipeline),
        *[a for k, v in overrides.items() for a in ("--set", f"{k}={v}")],
    ]


@contextmanager
def running_pipeline(
    overrides: Mapping[str, str],
    pipeline: Path = PIPELINE,
    environ: Mapping[str, str] | None = None,
) -> Iterator[tuple[Settings, LocalPipeline]]:
    """The pipeline's stage processes (``LocalPipeline``) with ``overrides``, consuming,
    stopped after."""
    settings = load_settings(pipeline, overrides, environ=environ)
    pipe = LocalPipeline(settings, argv_for(overrides, pipeline))
    pipe.start()
    try:
        assert pipe.wait_consuming(90), f"stages did not start; logs in {pipe.log_dir}"
        yield settings, pipe
    finally:
        pipe.stop()

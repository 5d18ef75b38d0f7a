"""Shared fixtures: the real broker (embedded, or $STREAMFLOW_TEST_BOOTSTRAP) and unique names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipelines" / "telemetry.toml"


def pytest_sessionstart(session: pytest.Session) -> None:
    """The text pipeline's transformer is built from installed weights, never committed: export it
    before the tests are collected (deterministic, a few seconds; nothing to do when up to date).
    In CI a failure here stops the run: the text tests must run there, not skip."""
    try:
        from streamflow.model import minilm

        minilm.export(ROOT / "models" / "minilm")
    except Exception as exc:  # the text extra or the weights package missing, or the check failed
        if os.environ.get("CI"):
            raise pytest.UsageError(
                f"cannot export the MiniLM model the text tests need: {exc}"
            ) from exc
        print(f"note: text pipeline tests will skip: cannot export the MiniLM model ({exc})")


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    """A real Kafka-protocol broker for the whole session."""
    given = os.environ.get("STREAMFLOW_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    from streamflow.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture()
def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture()
def pipeline_overrides(unique: str, bootstrap: str) -> dict[str, str]:
    """Settings overrides giving a test its own topics, groups and metrics port."""
    from streamflow.broker import free_port

    return {
        "name": f"t{unique}",
        "topics.raw": f"t{unique}.raw",
        "topics.scored": f"t{unique}.scored",
        "topics.dlq": f"t{unique}.dlq",
        "kafka.bootstrap": bootstrap,
        "metrics.port": str(free_port()),
    }

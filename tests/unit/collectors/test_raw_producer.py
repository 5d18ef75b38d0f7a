"""The raw producer's librdkafka configuration: the pipeline's, the collector's linger, the
caller's properties over both."""

from __future__ import annotations

from typing import Any

import pytest

from streamflow.bench.latency import FEED_PRODUCER
from streamflow.collectors import produce
from streamflow.collectors.produce import RawProducer
from streamflow.settings import with_overrides
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    confs: list[dict[str, Any]] = []

    class Recording:  # the configuration is what is tested, not librdkafka
        def __init__(self, conf: dict[str, Any]) -> None:
            confs.append(conf)

    monkeypatch.setattr(produce, "Producer", Recording)
    return confs


def test_a_collector_produces_idempotently_with_a_5_ms_linger(built: list[dict[str, Any]]) -> None:
    RawProducer(load_settings(PIPELINE, environ={}), "127.0.0.1:9")
    assert built[0]["enable.idempotence"] is True and built[0]["linger.ms"] == 5


def test_the_users_linger_wins_over_the_collectors(built: list[dict[str, Any]]) -> None:
    s = with_overrides(load_settings(PIPELINE, environ={}), kafka={"producer": {"linger.ms": 40}})
    RawProducer(s, "127.0.0.1:9")
    assert built[0]["linger.ms"] == 40


def test_the_bench_feed_drops_idempotence_and_keeps_the_rest(built: list[dict[str, Any]]) -> None:
    RawProducer(load_settings(PIPELINE, environ={}), "127.0.0.1:9", **FEED_PRODUCER)
    conf = built[0]
    assert conf["enable.idempotence"] is False
    assert conf["max.in.flight.requests.per.connection"] == 5
    assert conf["linger.ms"] == 5 and conf["acks"] == "all"

"""ArrivalMonitor keeps, per counted message, when it arrived: through ResultMonitor's loop."""

from __future__ import annotations

import time

import pytest

from streamflow.bench.arrivals import ArrivalMonitor, source_key
from streamflow.headers import H_REASON_CODE
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE
from tests.unit.test_monitor import feed, message, run_through


def test_arrivals_are_kept_for_counted_messages_only(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(PIPELINE, environ={})
    t = settings.topics
    feed(
        monkeypatch,
        [
            [message(t.scored, 1, 7, 1000), message(t.scored, 1, 7, 1000)],  # a redelivery
            [message(t.dlq, 0, 2, 1000, **{H_REASON_CODE: b"non_finite"})],
        ],
    )
    monitor = ArrivalMonitor(settings, "unused:9092")
    t0_ms = time.time() * 1000.0
    run_through(monitor)
    keys, ingest_ms, arrival_ms = monitor.arrivals()
    assert keys.tolist() == [int(source_key(1, 7))]
    assert ingest_ms.tolist() == [1000.0]
    assert arrival_ms.tolist() == [monitor.tally.first_ts * 1000.0]
    assert (monitor.tally.scored, monitor.tally.dead, monitor.tally.duplicates) == (1, 1, 1)
    assert monitor.arrived_between(t0_ms, time.time() * 1000.0) == 2

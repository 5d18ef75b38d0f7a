"""The SLO-steered batch wait (inference/batching.py)."""

from __future__ import annotations

import numpy as np

from streamflow.inference.batching import AdaptiveWait


def feed(w: AdaptiveWait, latency_s: float, seconds: int) -> list[float]:
    waits = []
    start = w._next_update  # a steady clock across calls: one update per period
    for t in range(seconds):
        w.observe(np.full(100, latency_s), now=start + t * w.period_s)
        waits.append(w.wait_s)
    return waits


def test_well_under_the_slo_the_wait_grows_to_the_cap() -> None:
    w = AdaptiveWait(max_wait_s=0.05, slo_s=0.5)
    waits = feed(w, 0.1, 30)
    assert waits[-1] == 0.05 and waits == sorted(waits)
    assert w.headroom_s == 0.5 - 0.1


def test_near_the_slo_it_halves_and_between_the_bands_it_holds() -> None:
    w = AdaptiveWait(max_wait_s=0.05, slo_s=0.5)
    feed(w, 0.1, 30)
    assert feed(w, 0.45, 3)[-1] < 0.05 / 4  # over 85% of the objective: halved each second
    held = w.wait_s
    assert feed(w, 0.35, 5) == [held] * 5  # between 60% and 85%: stays


def test_without_adaptation_the_wait_is_the_configured_delay() -> None:
    w = AdaptiveWait(max_wait_s=0.005, slo_s=0.5, adapt=False)
    assert feed(w, 2.0, 5) == [0.005] * 5
    assert w.headroom_s < 0  # still measured and exported

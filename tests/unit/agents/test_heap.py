"""The stage processes' garbage-collector settings: threshold, frozen start-up, pauses timed."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streamflow.agents import heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield
    gc.set_threshold(*threshold)
    gc.callbacks[:] = callbacks
    gc.unfreeze()


def test_tune_sets_the_young_threshold_and_times_every_collection(restored_gc: None) -> None:
    _, middle, old = gc.get_threshold()
    pauses: list[tuple[int, float]] = []
    heap.tune(12_345, lambda g, s: pauses.append((g, s)))
    heap.tune(12_345, lambda g, s: pauses.append((g, s)))  # a second call adds no second meter
    assert gc.get_threshold() == (12_345, middle, old)
    gc.collect(1)
    gc.collect(2)
    assert [g for g, _ in pauses] == [1, 2]
    assert all(s >= 0 for _, s in pauses)


def test_threshold_zero_keeps_pythons_own(restored_gc: None) -> None:
    before = gc.get_threshold()
    heap.tune(0)
    assert gc.get_threshold() == before


def test_freeze_startup_moves_live_objects_out_of_every_collection(restored_gc: None) -> None:
    kept = [[i] for i in range(1_000)]  # containers alive at "start-up"
    assert any(o is kept for g in range(3) for o in gc.get_objects(g))
    frozen = heap.freeze_startup()
    assert frozen >= len(kept)
    # a frozen object that dies later (a thread of an earlier test finishing) leaves the count
    assert 0 < gc.get_freeze_count() <= frozen
    assert not any(o is kept for g in range(3) for o in gc.get_objects(g))  # in no generation
    later = [0]
    assert any(o is later for g in range(3) for o in gc.get_objects(g))  # what comes after is


def test_settle_freezes_and_tunes_unless_the_threshold_is_zero(restored_gc: None) -> None:
    before = gc.get_threshold()
    pauses: list[int] = []
    assert heap.settle(0, lambda g, s: pauses.append(g)) == 0  # Python's collector as it comes
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    gc.collect(0)
    assert pauses == [0]  # timed all the same
    assert heap.settle(30_000) > 0
    assert gc.get_threshold()[0] == 30_000 and gc.get_freeze_count() > 0

"""The fetch's max wait: kafka.fetch_max_wait_ms once caught up, longer while behind."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from streamflow.kafka.transport import BEHIND_WAIT_MS, fetch_wait_ms


def state(
    position: int | None, highwater: int | None, lso: int | None = None, paused: bool = False
) -> Any:
    return SimpleNamespace(
        position=position, highwater=highwater, lso=lso, paused=paused,
        has_valid_position=position is not None,
    )  # fmt: skip


def assignment(*states: Any) -> Any:
    by_tp = dict(enumerate(states))
    return SimpleNamespace(tps=list(by_tp), state_value=by_tp.__getitem__)


def test_caught_up_or_unknown_keeps_the_configured_wait() -> None:
    assert fetch_wait_ms(assignment(state(10, 10), state(None, None)), 5, False) == 5
    assert fetch_wait_ms(assignment(state(0, None)), 5, False) == 5  # nothing fetched yet
    assert fetch_wait_ms(assignment(), 5, False) == 5


def test_records_past_the_position_lengthen_the_wait() -> None:
    assert fetch_wait_ms(assignment(state(10, 10), state(3, 9)), 5, False) == BEHIND_WAIT_MS
    assert fetch_wait_ms(assignment(state(3, 9)), 2000, False) == 2000  # never shortened


def test_partitions_the_fetch_does_not_ask_for_do_not_count() -> None:
    assert fetch_wait_ms(assignment(state(3, 9, paused=True), state(9, 9)), 5, False) == 5
    # partition 0 still has fetched records to hand over: this fetch asks for partition 1 only
    assert fetch_wait_ms(assignment(state(3, 9), state(9, 9)), 5, False, buffered={0}) == 5


def test_read_committed_reads_up_to_the_last_stable_offset() -> None:
    open_txn = assignment(state(6, 9, lso=6))  # records past 6 are in an open transaction
    assert fetch_wait_ms(open_txn, 5, True) == 5
    assert fetch_wait_ms(open_txn, 5, False) == BEHIND_WAIT_MS
    assert fetch_wait_ms(assignment(state(6, 9, lso=-1)), 5, True) == BEHIND_WAIT_MS  # no lso


def test_an_idle_consumer_waits_longer_after_the_second_empty_fetch() -> None:
    idle = assignment(state(9, 9))
    waits = [fetch_wait_ms(idle, 5, False, (), empty, 20) for empty in range(6)]
    assert waits == [5, 5, 10, 20, 20, 20]  # records on the last fetch: 0 empty, back to 5


def test_the_idle_wait_is_off_at_zero_or_at_most_the_base() -> None:
    idle = assignment(state(9, 9))
    assert fetch_wait_ms(idle, 5, False, (), 50, 0) == 5
    assert fetch_wait_ms(idle, 200, False, (), 50, 20) == 200  # Apache Kafka: a long base
    assert fetch_wait_ms(idle, 0, False, (), 50, 20) == 0  # busy fetching asked for


def test_behind_wins_over_idle() -> None:
    assert fetch_wait_ms(assignment(state(3, 9)), 5, False, (), 7, 20) == BEHIND_WAIT_MS

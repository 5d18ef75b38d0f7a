"""De-duplicating by source coordinates (streamflow/dedupe.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamflow.dedupe import Deduplicator


def headers(offset: int, partition: int = 0, topic: str = "p.raw") -> list[tuple[str, bytes]]:
    return [
        ("sf-source-topic", topic.encode()),
        ("sf-source-partition", b"%d" % partition),
        ("sf-source-offset", b"%d" % offset),
        ("sf-ingest-ms", b"1"),
    ]


def test_a_replay_after_a_restart_is_left_out_and_counted() -> None:
    d = Deduplicator()
    stream = [*range(0, 500), *range(420, 800)]  # a stage restarted from offset 420
    kept = [o for o in stream if d.first_time(headers(o))]
    assert kept == list(range(800))
    assert d.repeats == 80


def test_partitions_and_topics_are_told_apart_and_foreign_messages_pass() -> None:
    d = Deduplicator()
    assert (
        d.first_time(headers(5, 0))
        and d.first_time(headers(5, 1))
        and d.first_time(headers(5, 0, "q.raw"))
    )
    assert not d.first_time(dict(headers(5, 1)))
    assert d.first_time(None) and d.first_time([("other", b"x")])


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5000)), max_size=400),
    st.integers(64, 2000),
)
def test_within_the_window_each_source_record_is_kept_exactly_once(
    events: list[tuple[int, int]], window: int
) -> None:
    d = Deduplicator(window=window)
    seen: set[tuple[int, int]] = set()
    newest: dict[int, int] = {}
    for partition, offset in events:
        inside = offset > newest.get(partition, -1) - window
        first = d.first_time(headers(offset, partition))
        if inside:  # the window reaches back `window` offsets from the newest of its partition
            assert first == ((partition, offset) not in seen)
        else:
            assert not first  # too old: taken as seen
        if first:
            seen.add((partition, offset))
        newest[partition] = max(newest.get(partition, offset), offset)

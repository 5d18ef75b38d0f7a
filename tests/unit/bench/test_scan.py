"""Record batches counted in fetched bytes, as the bench reads a run's topics back."""

from __future__ import annotations

import struct

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from streamflow.bench.scan import BatchInfo, Record, TopicScan, batch_infos


def batch(base_offset: int, values: list[bytes], ts: int = 1000) -> bytes:
    b = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for i, v in enumerate(values):
        b.append(i, ts + i, None, v, [("h", b"x")])
    data = bytearray(b.build())
    struct.pack_into(">q", data, 0, base_offset)  # the broker's offset (outside the CRC)
    return bytes(data)


def test_every_batch_is_counted_with_its_records() -> None:
    data = batch(0, [b"a"]) + batch(1, [b"b", b"c", b"d"]) + batch(4, [b"e", b"f"])
    assert batch_infos(data) == [BatchInfo(0, 1, 1), BatchInfo(1, 4, 3), BatchInfo(4, 6, 2)]


def test_a_batch_cut_off_by_the_fetch_is_left_out() -> None:
    whole = batch(0, [b"a", b"b"])
    cut = batch(2, [b"c", b"d", b"e"])
    assert batch_infos(whole + cut[: len(cut) - 5]) == [BatchInfo(0, 2, 2)]


def test_records_are_handed_to_the_visitor_with_offset_and_create_time() -> None:
    seen: list[Record] = []
    batch_infos(batch(10, [b"x", b"y"], ts=5000), seen.append, partition=3)
    assert [(r.partition, r.offset, r.timestamp_ms, r.value) for r in seen] == [
        (3, 10, 5000, b"x"),
        (3, 11, 5001, b"y"),
    ]
    assert seen[0].headers == [("h", b"x")]


def test_records_per_batch() -> None:
    scan = TopicScan(batches={"scored": [2, 2]}, records={"scored": [10, 30]})
    assert scan.records_per_batch("scored") == 10.0
    assert scan.records_per_batch("dlq") == 0.0

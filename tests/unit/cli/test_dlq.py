"""The pure parts of `streamflow dlq`: selections, --since, --offsets, previews (the CLI itself:
tests/integration/test_dlq_cli.py)."""

from __future__ import annotations

import pytest

from streamflow.cli.dlq import (
    DeadLetter,
    Selection,
    mask_numbers,
    parse_offsets,
    parse_since,
    preview,
)
from streamflow.errors import ConfigError


def letter(
    partition: int = 0,
    offset: int = 5,
    ts: int = 1000,
    stage: str = "clean",
    reason: str = "power_w: value -50.0 out of range [0, 5000]",
    code: str = "out_of_range",
) -> DeadLetter:
    return DeadLetter(
        partition, offset, ts, b"k", b"v", stage, "ValidationError", reason, code, "raw/0@1", 0, ""
    )


def test_since_takes_durations_epoch_ms_and_iso_times() -> None:
    now = 1_800_000_000_000
    assert parse_since("15m", now) == now - 900_000
    assert (
        parse_since("2h", now) == now - 7_200_000 and parse_since("1.5d", now) == now - 129_600_000
    )
    assert parse_since("1764000000000", now) == 1764000000000
    assert parse_since("2025-11-24T16:00:00Z", now) == 1764000000000
    assert parse_since("2025-11-24T16:00:00", now) == 1764000000000  # no zone: UTC
    with pytest.raises(ConfigError, match="--since 'yesterday': expected a duration"):
        parse_since("yesterday", now)


def test_offsets_are_dead_letter_partition_and_offset_ranges() -> None:
    assert parse_offsets("0:12, 0:20-25,3:7") == {0: [(12, 12), (20, 25)], 3: [(7, 7)]}
    with pytest.raises(ConfigError, match="--offsets '12': expected PARTITION:OFFSET"):
        parse_offsets("12")


def test_a_selection_filters_on_every_criterion_given() -> None:
    d = letter()
    assert Selection()(d)
    assert Selection(reason="out of range")(d) and Selection(reason="out_of_range")(d)
    assert not Selection(reason="non-finite")(d)
    assert Selection(stage="clean")(d) and not Selection(stage="inference")(d)
    assert Selection(offsets={0: [(1, 5)]})(d) and not Selection(offsets={0: [(6, 9)]})(d)
    assert not Selection(offsets={1: [(0, 100)]})(d)
    assert Selection(since_ms=1000)(d) and not Selection(since_ms=1001)(d)


def test_reasons_that_differ_in_values_count_together() -> None:
    assert (
        mask_numbers("power_w: value -50.0 out of range [0, 5000]")
        == "power_w: value # out of range [#, #]"
    )
    assert (
        mask_numbers("message of 3000004 bytes exceeds max_message_bytes 1048576 (key 4 bytes)")
        == "message of # bytes exceeds max_message_bytes # (key # bytes)"
    )
    assert mask_numbers("cpu_temp_c: non-finite value nan") == "cpu_temp_c: non-finite value nan"


def test_previews_are_text_when_utf8_and_hex_otherwise() -> None:
    assert preview(b'{"a": 1}\n', 100) == '{"a": 1}\\n'
    assert preview(b"\xff\x00\x01", 100) == "hex ff 00 01"
    assert preview(b"x" * 50, 10) == "xxxxxxxxxx... (50 bytes)"
    assert (
        preview("é".encode() * 10, 5) == "éé... (20 bytes)"
    )  # a character cut at the limit is not binary

"""The clean agent's handling of what arrives on the raw topic: weights, oversized dead letters,
replay counts, schema ids in headers (decoding itself: tests/unit/test_fuzz_decoders.py)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from streamflow.agents.clean import TRUNCATED_DEAD_LETTER_BYTES, CleanHandler
from streamflow.codecs import VALUE_SCHEMA_ID_HEADER, RecordCodec, registry_for
from streamflow.headers import dead_letter
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE, ROOT

HANDLER = CleanHandler(SimpleNamespace(settings=load_settings(PIPELINE, environ={})))  # type: ignore[arg-type]
GOOD = json.dumps(
    {"device_id": "d", "timestamp": 1, "cpu_temp_c": 50.0, "power_w": 300.0, "cpu_util_pct": 5.0}
).encode()


def msg(
    value: bytes | None, key: bytes | None = b"k", offset: int = 0, headers: list | None = None
) -> SimpleNamespace:  # type: ignore[type-arg]
    return SimpleNamespace(value=value, key=key, offset=offset, timestamp=7, headers=headers or [])


def test_large_records_weigh_more_so_the_fetch_buffer_holds_few_of_them() -> None:
    assert HANDLER.weight(msg(GOOD)) == 1 and HANDLER.weight(msg(None, None)) == 1
    assert HANDLER.weight(msg(b"x" * 1_000_000)) == 1 + 1_000_001 // 2048
    budget = 2 * HANDLER.max_weight  # what the chunk buffer holds before fetching waits
    assert (
        budget // HANDLER.weight(msg(b"x" * 1_000_000)) < 10
    )  # 1 MB records: a handful, not 4,000


def test_a_record_too_large_to_dead_letter_whole_keeps_its_start_and_sizes() -> None:
    big, key = b"{" + b"y" * 3_000_000, b"K" * 70_000
    _, rejected = HANDLER.process("raw", 2, [msg(big, key, offset=9), msg(b"\xff" * 10, offset=10)])
    r, small = rejected
    assert r.reason == (
        f"message of {len(big) + len(key)} bytes exceeds max_message_bytes 1048576 "
        "(key 70000 bytes)"
    )
    assert (
        r.value == big[:TRUNCATED_DEAD_LETTER_BYTES] and r.key == key[:TRUNCATED_DEAD_LETTER_BYTES]
    )
    out = dead_letter(r, "dlq")
    assert dict(out.headers or [])["sf-truncated"] == b"key 70000 bytes, value 3000001 bytes"
    assert small.value == b"\xff" * 10 and "sf-truncated" not in dict(
        dead_letter(small, "dlq").headers or []
    )


def test_a_replayed_record_that_fails_again_keeps_its_replay_count() -> None:
    bad = GOOD.replace(b"300.0", b"NaN")
    _, rejected = HANDLER.process(
        "raw", 0, [msg(bad, headers=[("sf-replayed", b"2"), ("other", b"x")]), msg(bad)]
    )
    assert [dict(dead_letter(r, "dlq").headers or []).get("sf-replayed") for r in rejected] == [
        b"2",
        None,
    ]


@pytest.mark.parametrize("pipeline", [PIPELINE, ROOT / "pipelines" / "text.toml"])
def test_with_a_registry_a_plain_avro_value_is_read_by_its_schema_id_header(
    pipeline: Path,
) -> None:
    url = f"mock://streamflow-clean-{pipeline.stem}"
    s = load_settings(pipeline, {"input.schema_registry_url": url}, environ={})
    handler = CleanHandler(SimpleNamespace(settings=s))  # type: ignore[arg-type]
    schema_id = registry_for(url).register("raw-value", s.input.schema)
    rec = {"device_id": "d", "id": "d", "timestamp": 1, "text": "hello", **json.loads(GOOD)}
    value = RecordCodec(s.input.schema).encode(rec)  # plain Avro: no wire-format prefix
    header = [(VALUE_SCHEMA_ID_HEADER, struct.pack(">bI", 0, schema_id))]
    batch, rejected = handler.process("raw", 0, [msg(value, headers=header), msg(value, offset=1)])
    assert batch.offsets.tolist() == [0]
    # the same value without the header: not the wire format, dead-lettered
    assert [r.source_offset for r in rejected] == [1] and "magic byte" in rejected[0].reason

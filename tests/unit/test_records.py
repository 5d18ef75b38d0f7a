import json
from types import SimpleNamespace

import numpy as np
import pytest

from streamflow.agents.clean import CleanHandler
from streamflow.codecs import RecordCodec
from streamflow.records import REASON_CODES, BytesColumn, RecordBatch
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE, ROOT


def batch(n: int) -> RecordBatch:
    return RecordBatch(
        source_topic="raw",
        source_partition=2,
        offsets=np.arange(n, dtype=np.int64),
        ingest_ms=np.arange(n, dtype=np.int64) + 1000,
        keys=BytesColumn.from_list([None if i % 2 else f"k{i}".encode() for i in range(n)]),
        values=BytesColumn.from_list([f"v{i}".encode() for i in range(n)]),
        device_ids=BytesColumn.from_list([f"d{i}".encode() for i in range(n)]),
        event_ms=np.arange(n, dtype=np.int64),
        features=np.arange(n * 2, dtype=np.float32).reshape(n, 2),
    )


def test_bytes_column_keeps_nulls_and_empties_apart() -> None:
    col = BytesColumn.from_list([b"a", None, b"", b"xyz"])
    assert col.to_list() == [b"a", None, b"", b"xyz"]
    assert col.take(np.array([3, 1])).to_list() == [b"xyz", None]


def test_select_keeps_rows_aligned() -> None:
    b = batch(5).select(np.array([True, False, True, False, True]))
    assert b.offsets.tolist() == [0, 2, 4]
    assert b.keys.to_list() == [b"k0", b"k2", b"k4"]
    assert b.values.to_list() == [b"v0", b"v2", b"v4"]
    assert b.features[:, 0].tolist() == [0.0, 4.0, 8.0]
    assert b.device_id_list() == ["d0", "d2", "d4"]


def test_reason_codes_are_a_small_fixed_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clean stage gives each reason its code where it refuses the record (never read back
    from the text): (reason, code) of each dead letter."""
    settings = load_settings(PIPELINE, environ={})
    handler = CleanHandler(SimpleNamespace(settings=settings))  # type: ignore[arg-type]
    avro = RecordCodec(str(ROOT / "schemas/telemetry_reading.avsc"))
    good = {
        "device_id": "d",
        "timestamp": 1,
        "cpu_temp_c": 50.0,
        "power_w": 300.0,
        "cpu_util_pct": 5.0,
    }

    def reason_code(value: bytes) -> tuple[str, str]:
        msg = SimpleNamespace(value=value, key=None, offset=0, timestamp=0, headers=[])
        (r,) = handler.process("raw", 0, [msg])[1]
        return r.reason, r.code

    def js(**fields: object) -> bytes:
        return json.dumps({**good, **fields}).encode()

    assert reason_code(js(cpu_temp_c=None)) == (
        "missing required field cpu_temp_c",
        "missing_required",
    )
    assert reason_code(js(power_w=-50.0)) == (
        "power_w: value -50.0 out of range [0, 5000]",
        "out_of_range",
    )
    assert reason_code(js(cpu_temp_c=float("nan"))) == (
        "cpu_temp_c: non-finite value nan",
        "non_finite",
    )
    assert reason_code(avro.encode({**good, "device_id": "x" * 9000})) == (
        "avro: field device_id: string of 9000 bytes exceeds max_string_length 4096",
        "too_large",
    )
    assert reason_code(b"\x02\xc3" + avro.encode(good)[2:]) == (
        "avro: string is not utf-8 (unexpected end of data)",
        "invalid_utf8",
    )
    assert reason_code(js(device_id=5)) == (
        "json: field device_id: expected a string, got int 5",
        "wrong_type",
    )

    def bug(data: bytes) -> dict[str, object]:
        raise ValueError("x")

    monkeypatch.setattr(handler.kind.decoder, "_read_avro", bug)
    assert reason_code(avro.encode(good)) == ("decode: internal error (ValueError: x)", "other")
    assert all(c in REASON_CODES for c in ("missing_required", "out_of_range", "other"))

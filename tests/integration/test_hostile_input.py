"""Hostile and broken input through the real pipeline: every bad record dead-lettered with its
reason, every good one scored, the workers still up and their memory bounded.

The pipeline reads the Confluent wire format from a schema registry (a small fake one served
by this test: id 1 is the telemetry schema, id 2 the same with an array and a map, any other
id is unknown), so Avro, the wire format and JSON are all exercised in one run.
"""

from __future__ import annotations

import io
import json
import math
import random
import re
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka import Producer

from streamflow.codecs.flatavro import zigzag
from streamflow.settings import Settings
from streamflow.supervisor import LocalPipeline
from tests.conftest import ROOT
from tests.integration.helpers import read_topic, running_pipeline, wait_for

pytestmark = pytest.mark.integration
N = 10  # messages per hostile category
GOOD = 300
RSS_BOUND_KB = (
    300_000  # per worker process: peak resident memory (VmHWM); ~110 MB idle, clean ~170 MB here
)
TELEMETRY = json.loads((ROOT / "schemas/telemetry_reading.avsc").read_text())
WITH_COLLECTIONS = {
    **TELEMETRY,
    "fields": [
        *TELEMETRY["fields"],
        {"name": "tags", "type": {"type": "array", "items": "null"}},
        {"name": "attrs", "type": {"type": "map", "values": "null"}},
    ],
}
SCHEMAS = {
    1: TELEMETRY,
    2: WITH_COLLECTIONS,
    3: json.loads((ROOT / "schemas/scored_result.avsc").read_text()),
}


class FakeRegistry(BaseHTTPRequestHandler):
    """The two calls streamflow makes of a Confluent schema registry: GET /schemas/ids/<id> (a
    reader) and POST /subjects/<subject>/versions (the result writer registers its schema: id 3)."""

    def do_GET(self) -> None:  # noqa: N802
        parts = self.path.split("?")[0].strip("/").split("/")
        schema = (
            SCHEMAS.get(int(parts[2]))
            if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit()
            else None
        )
        self.reply(200, {"schema": json.dumps(schema)}) if schema else self.reply(
            404, {"error_code": 40403, "message": "Schema not found"}
        )

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.reply(200, {"id": 3})

    def reply(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=["stages", "chained"])
def pipeline(
    request: pytest.FixtureRequest, pipeline_overrides: dict[str, str], registry: str
) -> Iterator[tuple[Settings, LocalPipeline]]:
    overrides = {
        **pipeline_overrides,
        "input.schema_registry_url": registry,
        "runtime.topology": request.param,
    }
    with running_pipeline(overrides) as running:
        yield running


PARSED = fastavro.parse_schema(
    {
        **TELEMETRY,
        "fields": [
            {**f, "type": "long"} if f["name"] == "timestamp" else f for f in TELEMETRY["fields"]
        ],
    }
)


def avro(rec: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, PARSED, rec)
    return buf.getvalue()


def wire(body: bytes, schema_id: int = 1) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + body


def reading(rnd: random.Random, i: int) -> dict[str, Any]:
    rec = {f["name"]: None for f in TELEMETRY["fields"]}
    rec.update(
        device_id=f"rack{i % 7}-node{i % 13}",
        timestamp=1764000000000 + i,
        cpu_temp_c=rnd.uniform(30, 90),
        power_w=rnd.uniform(100, 900),
        cpu_util_pct=rnd.uniform(0, 100),
        status="ok",
    )
    return rec


# Each category: (make the i-th message -> (key, value), the sf-reason it must get,
# its sf-reason-code).
Make = Callable[[random.Random, int], tuple[bytes | None, bytes | None]]
ANY_DECODE = r"(avro|json|registry): .+|empty message.*"


def _non_utf8(rnd: random.Random, i: int) -> tuple[bytes | None, bytes | None]:
    bad = bytes([0xC3, 0x28, 0xFF, 0xFE][: 1 + i % 4])
    if i % 3 == 0:
        return b"k", wire(zigzag(len(bad)) + bad + avro({**reading(rnd, i), "device_id": ""})[1:])
    if i % 3 == 1:
        return b"k", json.dumps({**reading(rnd, i), "device_id": "X"}).encode().replace(
            b'"X"', b'"' + bad + b'"'
        )
    return b"k", json.dumps({**reading(rnd, i), "device_id": "X"}).encode().replace(
        b'"X"', b'"\\udc80"'
    )


def _deep(rnd: random.Random, i: int) -> tuple[bytes | None, bytes | None]:
    depth = 50_000 + 10_000 * i
    if i % 2:
        return b"k", b"[" * depth + b"]" * depth
    return b"k", json.dumps(reading(rnd, i)).encode()[
        :-1
    ] + b', "extra": ' + b"[" * depth + b"]" * depth + b"}"


CATEGORIES: dict[str, tuple[Make, str, set[str]]] = {
    "random bytes": (
        lambda rnd, i: (b"k", rnd.randbytes(rnd.randint(1, 3000))),
        ANY_DECODE,
        {"unknown_schema", "invalid_avro", "invalid_json", "too_large", "invalid_utf8", "empty"},
    ),
    "truncated avro": (
        lambda rnd, i: (b"k", wire(avro(reading(rnd, i))[: 1 + i * 3])),
        r"avro: (truncated record \(EOF\)|field \w+: length prefix larger than the message "
        r"\(\d+ bytes, \d+ left\))",
        {"invalid_avro"},
    ),
    "huge length prefix": (
        lambda rnd, i: (
            b"k",
            wire(zigzag(2**62 >> i) + avro(reading(rnd, i)))
            if i % 2
            else wire(avro(reading(rnd, i)) + zigzag(2**40 + i) + zigzag(0), 2),
        ),
        r"avro: field (device_id: length prefix larger than the message \(\d+ bytes, \d+ left\)|"
        r"tags: array of \d+ items exceeds max_array_length 4096)",
        {"invalid_avro", "too_large"},
    ),
    "unknown schema id": (
        lambda rnd, i: (b"k", wire(avro(reading(rnd, i)), 1000 + i)),
        r"registry: unknown schema id \d+",
        {"unknown_schema"},
    ),
    "non-utf-8": (
        _non_utf8,
        r"(avro: string is not utf-8 \(.+\)|json: not utf-8 \(.+\)|json: field device_id: not "
        r"valid unicode \(lone surrogate .+\))",
        {"invalid_utf8"},
    ),
    "NaN/inf": (
        lambda rnd, i: (
            b"k",
            json.dumps(
                {**reading(rnd, i), "power_w": [math.nan, math.inf, -math.inf][i % 3]}
            ).encode(),
        ),
        r"power_w: non-finite value (nan|inf|-inf)",
        {"non_finite"},
    ),
    "wrong type": (
        lambda rnd, i: (
            b"k",
            json.dumps(
                {
                    **reading(rnd, i),
                    ["cpu_temp_c", "timestamp", "device_id", "status"][i % 4]: [
                        True,
                        "hot",
                        [1],
                        {"a": 1},
                    ][i % 4],
                }
            ).encode(),
        ),
        r"json: field \w+: expected (a number|a string|an integer \(epoch ms\)), got .+",
        {"wrong_type"},
    ),
    "empty": (
        lambda rnd, i: (b"k", [b"", None, b"   ", b"\n"][i % 4]),
        r"empty message( \(only whitespace\))?",
        {"empty"},
    ),
    "several MB": (
        lambda rnd, i: (f"big{i}".encode(), bytes([65 + i]) * (1_500_000 + 400_000 * i)),
        r"message of \d+ bytes exceeds max_message_bytes 1048576 \(key \d+ bytes\)",
        {"too_large"},
    ),
    "missing keys": (
        lambda rnd, i: (
            None,
            json.dumps(
                {
                    k: v
                    for k, v in reading(rnd, i).items()
                    if k != ["device_id", "timestamp", "power_w"][i % 3]
                }
            ).encode(),
        ),
        r"json: missing field (device_id|timestamp)|missing required field power_w",
        {"missing_field", "missing_required"},
    ),
    "JSON not an object": (
        lambda rnd, i: (b"k", json.dumps([[1, 2], "text", 42, None, True][i % 5]).encode()),
        r"json: top-level value is (an array|a string|a number|null|a boolean), not an object",
        {"invalid_json"},
    ),
    "deeply nested JSON": (
        _deep,
        r"json: (nested too deeply|top-level value is an array nested too deeply, not an object)",
        {"invalid_json"},
    ),
}


def vm(pid: int, field: str) -> int:
    """A /proc/<pid>/status figure in kB (VmRSS: resident now, VmHWM: the peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_hostile_input_is_dead_lettered_and_the_workers_stay_up(
    pipeline: tuple[Settings, LocalPipeline], bootstrap: str
) -> None:
    settings, pipe = pipeline
    t = settings.topics
    rnd = random.Random(4)
    produced: list[tuple[str, bytes | None, bytes | None]] = []
    for i in range(GOOD):
        rec = reading(rnd, i)
        value = wire(avro(rec)) if i % 2 else json.dumps(rec).encode()
        produced.append(
            ("good", rec["device_id"].encode() if i % 5 else None, value)
        )  # some without a key
    for cat, (make, _, _) in CATEGORIES.items():
        produced += [(cat, *make(rnd, i)) for i in range(N)]
    rnd.shuffle(produced)

    where: dict[tuple[int, int], int] = {}
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "message.max.bytes": 20_000_000}
    )
    for n, (_, key, value) in enumerate(produced):

        def delivered(err: Any, msg: Any, n: int = n) -> None:
            assert err is None, err
            where[(msg.partition(), msg.offset())] = n

        producer.produce(t.raw, value, key, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(60) == 0 and len(where) == len(produced)

    def accounted() -> tuple[list[Any], list[Any]] | None:
        scored, dead = (
            read_topic(bootstrap, t.scored, idle_s=0.5),
            read_topic(bootstrap, t.dlq, idle_s=0.5),
        )
        return (scored, dead) if len(scored) + len(dead) >= len(produced) else None

    result = wait_for(accounted, timeout_s=180, interval_s=2)
    assert result, f"not every record came out; logs in {pipe.log_dir}"
    scored, dead = result

    def origin(m: Any) -> int:
        return where[(int(m.headers["sf-source-partition"]), int(m.headers["sf-source-offset"]))]

    assert sorted(map(origin, scored + dead)) == list(range(len(produced)))  # each exactly once
    assert {produced[origin(m)][0] for m in scored} == {"good"}
    per_cat: Counter[str] = Counter()
    for m in dead:
        cat, key, value = produced[origin(m)]
        _, pattern, codes = CATEGORIES[cat]
        reason, code = m.headers["sf-reason"].decode(), m.headers["sf-reason-code"].decode()
        assert re.fullmatch(pattern, reason), (cat, reason)
        assert code in codes, (cat, reason, code)
        assert m.headers["sf-stage"] == b"clean" and m.headers["sf-source-topic"].decode() == t.raw
        if "sf-truncated" in m.headers:  # too large to send whole: the first 64 KiB, and the sizes
            assert (
                cat == "several MB"
                and value is not None
                and m.value == value[:65_536]
                and m.key == key
            )
            assert m.headers["sf-truncated"] == b"key %d bytes, value %d bytes" % (
                len(key or b""),
                len(value),
            )
        else:
            assert m.value == (value or b"") and m.key == key
        per_cat[cat] += 1
    assert per_cat == {cat: N for cat in CATEGORIES}, per_cat
    assert len(scored) == GOOD

    assert pipe.stages is not None and pipe.stages.dead() == [], pipe.stages.dead()
    rss = {stage: (vm(p.pid, "VmRSS"), vm(p.pid, "VmHWM")) for stage, p in pipe.stages.procs}
    print(
        f"\ninputs tried per category, all dead-lettered: {dict(per_cat)}; "
        f"good records scored: {len(scored)}"
    )
    print(
        "worker RSS now / peak (kB): "
        + ", ".join(f"{s} {now} / {peak}" for s, (now, peak) in rss.items())
    )
    for stage, (_, peak) in rss.items():
        assert peak < RSS_BOUND_KB, f"{stage} peaked at {peak} kB"

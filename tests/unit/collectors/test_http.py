"""The HTTP collector without a broker: body parsing, auth, limits, replies (a stand-in
producer)."""

from __future__ import annotations

import http.client
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from streamflow.collectors.http import CollectorServer, parse_body
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE

TOKEN = "tok-unit-3xQ-never-logged"


def test_one_object_an_array_or_json_lines() -> None:
    assert parse_body(b'{"a": 1}') == ([{"a": 1}], [])
    assert parse_body(b'{\n  "a": 1\n}\n') == ([{"a": 1}], [])
    assert parse_body(b'[{"a": 1}, {"a": 2}]') == ([{"a": 1}, {"a": 2}], [])
    assert parse_body(b'{"a": 1}\n\n{"a": 2}\n') == ([{"a": 1}, {"a": 2}], [])


def test_bad_lines_are_listed_by_number() -> None:
    records, errors = parse_body(b'{"a": 1}\n{"a": \n[1]\n{"a": 4}\n')
    assert records == [{"a": 1}, {"a": 4}]
    assert [e["line"] for e in errors] == [2, 3]
    assert (
        errors[0]["error"].startswith("invalid JSON") and errors[1]["error"] == "not a JSON object"
    )
    assert parse_body(b"  ")[1] == [{"line": 1, "error": "empty body"}]


class FakeRaw:
    """What CollectorServer uses of RawProducer; every message is acknowledged at once."""

    topic = "t.raw"

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes | None]] = []
        self.producer = self
        self.codec = self

    def encode(self, rec: dict[str, Any]) -> bytes:
        if "bad" in rec:
            raise ValueError("does not fit")
        return b"avro:" + json.dumps(rec, sort_keys=True).encode()

    def key_of(self, rec: dict[str, Any]) -> bytes | None:
        return str(rec.get("device_id", "")).encode() or None

    def send(self, value: bytes, key: bytes | None, on_delivery: Any = None) -> None:
        self.sent.append((value, key))
        on_delivery(None, None)

    def poll(self, timeout: float = 0) -> None:
        threading.Event().wait(timeout)

    def flush(self, timeout: float = 30) -> int:
        return 0


@pytest.fixture()
def server() -> Iterator[tuple[CollectorServer, FakeRaw]]:
    s = load_settings(
        PIPELINE,
        {"collector.token": TOKEN, "collector.max_body_bytes": "200", "collector.port": "0"},
        environ={},
    )
    raw = FakeRaw()
    srv = CollectorServer(s, raw)  # type: ignore[arg-type]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, raw
    srv.close()


def request(
    srv: CollectorServer,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    conn.request(method, path, body=body if method == "POST" else None, headers=headers or {})
    resp = conn.getresponse()
    out = json.loads(resp.read() or b"{}")
    conn.close()
    return resp.status, out


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_binds_localhost_unless_told(server: tuple[CollectorServer, FakeRaw]) -> None:
    assert server[0].server_address[0] == "127.0.0.1"


def test_a_request_without_the_token_is_refused(server: tuple[CollectorServer, FakeRaw]) -> None:
    srv, raw = server
    assert request(srv, "POST", "/records", b'{"a": 1}')[0] == 401
    assert (
        request(srv, "POST", "/records", b'{"a": 1}', {"Authorization": "Bearer wrong"})[0] == 401
    )
    assert (
        request(srv, "POST", "/records", b'{"a": 1}', {"Authorization": f"Basic {TOKEN}"})[0] == 401
    )
    assert raw.sent == []
    assert request(srv, "GET", "/healthz") == (200, {"status": "ok", "topic": "t.raw"})


def test_too_big_is_refused_from_content_length(server: tuple[CollectorServer, FakeRaw]) -> None:
    srv, raw = server
    status, body = request(srv, "POST", "/records", b"x" * 201, AUTH)
    assert status == 413 and "collector.max_body_bytes = 200" in body["error"]
    assert raw.sent == []


def test_good_records_are_produced_and_counted(server: tuple[CollectorServer, FakeRaw]) -> None:
    srv, raw = server
    status, body = request(
        srv, "POST", "/records", b'{"device_id": "d1"}\n{"device_id": "d2", "bad": 1}\n', AUTH
    )
    assert (status, body) == (200, {"accepted": 2, "topic": "t.raw"})
    assert raw.sent[0] == (b'avro:{"device_id": "d1"}', b"d1")
    assert raw.sent[1] == (
        b'{"device_id": "d2", "bad": 1}',
        b"d2",
    )  # not the schema: JSON, to be dead-lettered


def test_a_bad_line_rejects_the_whole_body(server: tuple[CollectorServer, FakeRaw]) -> None:
    srv, raw = server
    status, body = request(
        srv, "POST", "/records", b'{"device_id": "d1"}\nnope\n{"x": 1}\n7\n', AUTH
    )
    assert status == 400 and body["lines"] == [2, 4] and body["accepted"] == 0
    assert raw.sent == []


def test_the_token_is_never_logged(
    server: tuple[CollectorServer, FakeRaw], caplog: pytest.LogCaptureFixture
) -> None:
    srv, _ = server
    with caplog.at_level(logging.DEBUG):
        request(srv, "POST", "/records", b'{"a": 1}', AUTH)
        request(srv, "POST", "/records", b'{"a": 1}', {"Authorization": f"Bearer {TOKEN}x"})
    assert "POST /records" in caplog.text and TOKEN not in caplog.text

"""The HTTP collector's server without a broker: metrics, refusals on the wire, the broker's
silence, graceful close, TLS (a stand-in producer)."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamflow.collectors import http as collector_http
from streamflow.collectors.http import CollectorServer
from streamflow.collectors.http_tls import check_tls, tls_context
from streamflow.errors import ConfigError
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE
from tests.integration.tls import make_certificates, require_tool
from tests.unit.collectors.test_http import AUTH, TOKEN, FakeRaw


class SlowRaw(FakeRaw):
    """Reports each delivery ``delay_s`` later, failed when ``fail``; never, when delay_s < 0."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        super().__init__()
        self.delay_s, self.fail = delay_s, fail
        self.timers: list[threading.Timer] = []

    def send(self, value: bytes, key: bytes | None, on_delivery: Any = None) -> None:
        self.sent.append((value, key))
        if self.delay_s < 0:
            return
        t = threading.Timer(self.delay_s, on_delivery, ("refused" if self.fail else None, None))
        self.timers.append(t)
        t.start()


def settings(**extra: str) -> Any:
    return load_settings(
        PIPELINE,
        {
            "name": "unit",
            "collector.token": TOKEN,
            "collector.max_body_bytes": "200",
            "collector.port": "0",
            **extra,
        },
        environ={},
    )


def start(raw: FakeRaw, **extra: str) -> CollectorServer:
    srv = CollectorServer(settings(**extra), raw)  # type: ignore[arg-type]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    assert srv.started.wait(10) and srv.error is None
    return srv


@pytest.fixture()
def served() -> Iterator[tuple[CollectorServer, FakeRaw]]:
    raw = FakeRaw()
    srv = start(raw)
    yield srv, raw
    srv.close()


def post(
    srv: CollectorServer,
    body: bytes,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, Any]]:
    host, port = srv.server_address[:2]
    conn = (
        http.client.HTTPSConnection(host, port, timeout=10, context=context)
        if context
        else http.client.HTTPConnection(host, port, timeout=10)
    )
    try:
        conn.request("POST", "/records", body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def wire(srv: CollectorServer, data: bytes) -> bytes:
    """Send raw bytes, return all the server answers until it closes the connection."""
    with socket.create_connection(srv.server_address[:2], timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def sample(srv: CollectorServer, name: str, **labels: str) -> float:
    value = srv.metrics.registry.get_sample_value(name, {"pipeline": "unit", **labels})
    return value or 0.0


def test_requests_and_records_are_counted_by_status_and_outcome(
    served: tuple[CollectorServer, FakeRaw],
) -> None:
    srv, _ = served
    good = b'{"device_id": "d1"}\n{"device_id": "d2"}\n'
    assert post(srv, good, AUTH)[0] == 200
    assert post(srv, good, AUTH)[0] == 200
    assert post(srv, b'{"device_id": "d1"}\nnope\n', AUTH)[0] == 400
    assert post(srv, good)[0] == 401
    assert post(srv, b"x" * 201, AUTH)[0] == 413
    requests = "streamflow_collector_requests_total"
    assert {s: sample(srv, requests, status=s) for s in ("200", "400", "401", "413")} == {
        "200": 2,
        "400": 1,
        "401": 1,
        "413": 1,
    }
    records = "streamflow_collector_records_total"
    assert sample(srv, records, outcome="accepted") == 4
    assert sample(srv, records, outcome="rejected") == 2  # the good line of the refused body too
    assert sample(srv, "streamflow_collector_request_duration_seconds_count") == 5


def test_records_the_broker_does_not_acknowledge_get_503() -> None:
    srv = start(SlowRaw(fail=True))
    try:
        status, body = post(srv, b'{"device_id": "d1"}\n{"device_id": "d2"}\n', AUTH)
        assert status == 503 and (body["delivered"], body["failed"]) == (0, 2)
        assert sample(srv, "streamflow_collector_records_total", outcome="failed") == 2
    finally:
        srv.close()


def test_no_answer_from_the_broker_within_the_timeout_is_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(collector_http, "DELIVERY_TIMEOUT_S", 0.3)
    srv = start(SlowRaw(delay_s=-1))
    try:
        status, body = post(srv, b'{"device_id": "d1"}', AUTH)
        assert status == 503 and body["failed"] == 1 and "retry" in body["error"]
    finally:
        srv.close()


def test_chunked_or_lengthless_bodies_get_411_and_the_connection_closes(
    served: tuple[CollectorServer, FakeRaw],
) -> None:
    srv, raw = served
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    chunked = wire(
        srv,
        b"POST /records HTTP/1.1\r\nHost: x\r\n" + auth + b"Transfer-Encoding: chunked\r\n\r\n"
        b'8\r\n{"a": 1}\r\n0\r\n\r\n',
    )
    assert chunked.startswith(b"HTTP/1.1 411") and b"chunked bodies are not accepted" in chunked
    assert b"Connection: close" in chunked
    lengthless = wire(srv, b"POST /records HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n")
    assert lengthless.startswith(b"HTTP/1.1 411") and b"Content-Length required" in lengthless
    assert raw.sent == []


def test_a_refused_big_body_is_discarded_so_the_reply_arrives(
    served: tuple[CollectorServer, FakeRaw],
) -> None:
    srv, raw = served
    status, body = post(srv, b"x" * 4_000_000, AUTH)  # sent whole before the reply is read
    assert status == 413 and "200" in body["error"]
    assert raw.sent == []


def test_keep_alive_and_unknown_routes(served: tuple[CollectorServer, FakeRaw]) -> None:
    srv, _ = served
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    try:
        for _ in range(2):  # one connection, two requests
            conn.request("POST", "/records", body=b'{"device_id": "d1"}', headers=AUTH)
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["accepted"] == 1
        conn.request("GET", "/nope")
        resp = conn.getresponse()
        assert resp.status == 404 and "GET /healthz" in json.loads(resp.read())["error"]
        conn.request("GET", "/healthz?verbose=1")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == "application/json"
        resp.read()
    finally:
        conn.close()
    assert post(srv, b"{}", {**AUTH, "X": "y"})[0] == 200  # an empty object is a record
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    try:
        conn.request("PUT", "/records", body=b"{}", headers=AUTH)
        assert conn.getresponse().status == 501
    finally:
        conn.close()


def test_close_lets_a_request_in_flight_finish_then_refuses_connections() -> None:
    raw = SlowRaw(delay_s=0.5)
    srv = start(raw)
    got: list[int] = []
    client = threading.Thread(target=lambda: got.append(post(srv, b'{"device_id": "d"}', AUTH)[0]))
    client.start()
    deadline = threading.Event()
    while not raw.sent and not deadline.wait(0.01):
        pass
    assert srv.close() == 0
    client.join(10)
    assert got == [200]
    with pytest.raises(OSError):
        socket.create_connection(srv.server_address[:2], timeout=2).close()


# TLS


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("certs")
    ca, cert, key = make_certificates(d)
    client_key, client_csr, client_cert, ext = (
        d / n for n in ("client.key", "client.csr", "client.pem", "client.ext")
    )
    openssl = require_tool("openssl", "openssl")
    ext.write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    for args in (
        ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(client_key), "-out", str(client_csr), "-subj", "/CN=streamflow client"],
        ["x509", "-req", "-in", str(client_csr), "-CA", str(ca), "-CAkey", str(d / "ca.key")]
        + ["-CAcreateserial", "-out", str(client_cert), "-days", "2", "-extfile", str(ext)],
    ):
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30)
    return {
        "ca": ca,
        "cert": cert,
        "key": key,
        "client_cert": client_cert,
        "client_key": client_key,
    }


def tls(certs: dict[str, Path]) -> dict[str, str]:
    return {
        "collector.tls_certfile": str(certs["cert"]),
        "collector.tls_keyfile": str(certs["key"]),
    }


def test_https_is_served_and_plain_http_refused(certs: dict[str, Path]) -> None:
    raw = FakeRaw()
    srv = start(raw, **tls(certs))
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(certs["ca"]))
        assert post(srv, b'{"device_id": "d1"}', AUTH, trusted) == (
            200,
            {"accepted": 1, "topic": "t.raw"},
        )
        with pytest.raises((OSError, http.client.HTTPException)):
            post(srv, b'{"device_id": "d2"}', AUTH)  # plain HTTP on the TLS port
        with pytest.raises(ssl.SSLCertVerificationError):
            post(srv, b'{"device_id": "d3"}', AUTH, ssl.create_default_context())  # unknown CA
        assert raw.sent == [(b'avro:{"device_id": "d1"}', b"d1")]
    finally:
        srv.close()


def test_mutual_tls_needs_a_client_certificate_from_the_ca(certs: dict[str, Path]) -> None:
    raw = FakeRaw()
    srv = start(raw, **tls(certs), **{"collector.tls_client_cafile": str(certs["ca"])})
    try:
        anonymous = ssl.create_default_context(cafile=str(certs["ca"]))
        with pytest.raises((OSError, http.client.HTTPException)):
            post(srv, b'{"device_id": "d1"}', AUTH, anonymous)
        known = ssl.create_default_context(cafile=str(certs["ca"]))
        known.load_cert_chain(str(certs["client_cert"]), str(certs["client_key"]))
        assert post(srv, b'{"device_id": "d2"}', AUTH, known)[0] == 200
        assert [key for _, key in raw.sent] == [b"d2"]
    finally:
        srv.close()
    trusted = tls_context(
        settings(**tls(certs), **{"collector.tls_client_cafile": str(certs["ca"])})
    )
    assert trusted is not None  # only the given CA signs client certificates, not the system's
    assert [dict(c["subject"][0])["commonName"] for c in trusted.get_ca_certs()] == [
        "streamflow test CA"
    ]


def loaded_anyway(**extra: str) -> Any:
    """The settings as far as they load: the settings checks report a half TLS setting too
    (``streamflow validate``), and the server must still refuse one it is handed."""
    from streamflow.settings.loading import collect_settings

    s, problems = collect_settings(PIPELINE, {"name": "unit", **extra}, environ={})
    assert problems and all(p.startswith("collector.tls_") for p in problems), problems
    return s


def test_half_a_tls_setting_is_a_start_up_error_naming_the_key(certs: dict[str, Path]) -> None:
    only_cert = loaded_anyway(**{"collector.tls_certfile": str(certs["cert"])})
    assert check_tls(only_cert.collector) == [
        "collector.tls_keyfile: required with collector.tls_certfile (both or neither)"
    ]
    with pytest.raises(ConfigError, match="collector.tls_keyfile: required"):
        CollectorServer(only_cert, FakeRaw())  # type: ignore[arg-type]
    only_ca = loaded_anyway(**{"collector.tls_client_cafile": str(certs["ca"])})
    assert check_tls(only_ca.collector) == [
        "collector.tls_client_cafile: needs collector.tls_certfile and collector.tls_keyfile "
        "(client certificates are checked only over TLS)"
    ]
    missing = loaded_anyway(
        **{"collector.tls_certfile": "/nonexistent.pem", "collector.tls_keyfile": "/nope.key"}
    )
    assert check_tls(missing.collector) == [
        "collector.tls_certfile: file not found: /nonexistent.pem",
        "collector.tls_keyfile: file not found: /nope.key",
    ]
    swapped = settings(
        **{"collector.tls_certfile": str(certs["key"]), "collector.tls_keyfile": str(certs["cert"])}
    )
    with pytest.raises(ConfigError, match="cannot load"):
        CollectorServer(swapped, FakeRaw())  # type: ignore[arg-type]

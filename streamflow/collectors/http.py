"""``streamflow collect http``: records in over HTTP, produced to the raw topic.

    POST /records   a JSON object, a JSON array of objects, or JSON lines (one object per line)
    GET  /healthz   200 while the collector runs

All or nothing: a body with any line that is not a JSON object gets 400 listing those lines,
and nothing of it is produced, so a client can fix the body and send it again without
duplicating the good records. A record that is an object but does not fit the input schema is
produced as JSON, like ``collect file`` does: the pipeline dead-letters it with the reason.
200 means every record of the request was acknowledged by the broker (acks=all); 503 means
some were not (the response says how many were), and the client should retry.

Listens on 127.0.0.1 unless ``collector.host`` says otherwise. With ``collector.token`` set,
POST needs ``Authorization: Bearer <token>`` (compared in constant time; never logged). The
size limit (``collector.max_body_bytes``) is checked on Content-Length before the body is read.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from streamflow.collectors.produce import RawProducer
from streamflow.settings import Settings

log = logging.getLogger(__name__)
DELIVERY_TIMEOUT_S = 30.0
MAX_REPORTED_ERRORS = 20


def parse_body(body: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(records, errors) of a request body; each error is {"line": n, "error": why} (1-based
    lines)."""
    text = body.decode("utf-8", errors="replace")
    stripped = text.strip()
    if not stripped:
        return [], [{"line": 1, "error": "empty body"}]
    try:
        whole = json.loads(stripped)
    except json.JSONDecodeError:
        whole = None  # not one JSON document: JSON lines
    else:
        if isinstance(whole, dict):
            return [whole], []
        if isinstance(whole, list):
            bad = [
                {"line": 1, "error": f"item {i} of the array is not a JSON object"}
                for i, r in enumerate(whole)
                if not isinstance(r, dict)
            ]
            return ([] if bad else whole), bad
    records: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append({"line": n, "error": f"invalid JSON: {exc.msg} (column {exc.colno})"})
            continue
        if not isinstance(rec, dict):
            errors.append({"line": n, "error": "not a JSON object"})
            continue
        records.append(rec)
    return records, errors


class _Delivery:
    """Counts one request's delivery reports (called on the collector's poll thread)."""

    def __init__(self, n: int) -> None:
        self.pending, self.failed = n, 0
        self.done = threading.Event()
        self.lock = threading.Lock()
        if n == 0:
            self.done.set()

    def __call__(self, err: Any, msg: Any) -> None:
        with self.lock:
            if err is not None:
                self.failed += 1
            self.pending -= 1
            if self.pending <= 0:
                self.done.set()


class CollectorServer(ThreadingHTTPServer):
    """The HTTP server; ``serve_forever()`` in a thread, ``close()`` stops it and flushes the
    producer."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self, settings: Settings, raw: RawProducer, host: str = "", port: int | None = None
    ) -> None:
        self.settings, self.raw = settings, raw
        c = settings.collector
        self.token = c.token.reveal().encode()
        self.max_body = c.max_body_bytes
        super().__init__((host or c.host, c.port if port is None else port), _Handler)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="streamflow-http-poll", daemon=True)
        self._poller.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.raw.producer.poll(0.05)

    def produce(self, records: list[dict[str, Any]]) -> _Delivery:
        delivery = _Delivery(len(records))
        for rec in records:
            try:
                value = self.raw.codec.encode(rec)
            except Exception:  # noqa: BLE001 - does not fit the input schema: the pipeline dead-letters it
                value = json.dumps(rec).encode()
            self.raw.send(value, self.raw.key_of(rec), on_delivery=delivery)
        return delivery

    def close(self) -> int:
        """Stop serving, deliver what is queued; returns the number of records left undelivered."""
        self.shutdown()
        self.server_close()
        self._stop.set()
        self._poller.join(timeout=2)
        return self.raw.flush()


class _Handler(BaseHTTPRequestHandler):
    server: CollectorServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a slow client may take per read

    def _reply(
        self,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)
        if close:
            self._linger()

    def _linger(self, max_s: float = 1.0, max_bytes: int = 64 << 20) -> None:
        """After a reply sent without reading the body: stop writing, then discard what the client
        still sends for a moment, so closing does not reset the connection before it reads the
        reply."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.2)
            deadline, seen = time.monotonic() + max_s, 0
            while time.monotonic() < deadline and seen < max_bytes:
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                seen += len(chunk)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        # The request line and status only: headers (and so tokens) are never logged.
        log.info("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.split("?")[0] == "/healthz":
            self._reply(200, {"status": "ok", "topic": self.server.raw.topic})
        else:
            self._reply(404, {"error": "not found: GET /healthz, POST /records"})

    def _authorized(self) -> bool:
        token = self.server.token
        if not token:
            return True
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token)

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?")[0] != "/records":
            self._reply(404, {"error": "not found: POST /records"}, close=True)
            return
        if not self._authorized():
            self._reply(
                401,
                {"error": "unauthorized: send Authorization: Bearer <collector.token>"},
                {"WWW-Authenticate": 'Bearer realm="streamflow"'},
                close=True,
            )
            return
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._reply(
                411,
                {"error": "send a Content-Length (chunked bodies are not accepted)"},
                close=True,
            )
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._reply(411, {"error": "Content-Length required"}, close=True)
            return
        if length < 0:
            self._reply(400, {"error": "bad Content-Length"}, close=True)
            return
        if length > self.server.max_body:
            # The body is never read: close the connection rather than drain it.
            self._reply(
                413,
                {
                    "error": f"body of {length} bytes exceeds collector.max_body_bytes = "
                    f"{self.server.max_body}"
                },
                close=True,
            )
            return
        body = self.rfile.read(length)
        records, errors = parse_body(body)
        if errors:
            self._reply(
                400,
                {
                    "error": f"{len(errors)} bad line(s); nothing was produced",
                    "lines": [e["line"] for e in errors],
                    "errors": errors[:MAX_REPORTED_ERRORS],
                    "accepted": 0,
                },
            )
            return
        delivery = self.server.produce(records)
        if not delivery.done.wait(DELIVERY_TIMEOUT_S) or delivery.failed:
            failed = delivery.failed + max(delivery.pending, 0)
            self._reply(
                503,
                {
                    "error": (
                        f"{failed} of {len(records)} record(s) not acknowledged by the broker; "
                        "retry"
                    ),
                    "delivered": len(records) - failed,
                    "failed": failed,
                },
            )
            return
        self._reply(200, {"accepted": len(records), "topic": self.server.raw.topic})


def run_http(
    settings: Settings, raw: RawProducer, stop: Any, *, host: str = "", port: int | None = None
) -> int:
    """Serve until ``stop`` is set (a StopFlag or Event); returns the records left undelivered."""
    server = CollectorServer(settings, raw, host, port)
    threading.Thread(target=server.serve_forever, name="streamflow-http", daemon=True).start()
    bound = str(server.server_address[0])
    if not server.token and bound not in ("127.0.0.1", "::1", "localhost"):
        log.warning(
            "the HTTP collector listens on %s without a token: anyone who reaches it can produce "
            "records (set collector.token or STREAMFLOW_COLLECTOR_TOKEN)",
            bound,
        )
    print(
        f"streamflow collect http: listening on {server.url} (POST /records, GET /healthz), "
        "producing to "
        f"{raw.topic}; " + ("bearer token required" if server.token else "no token required"),
        flush=True,
    )
    try:
        while not stop.is_set():
            time.sleep(0.1)
    finally:
        left = server.close()
    return left

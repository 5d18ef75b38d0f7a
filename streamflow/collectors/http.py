"""``streamflow collect http``: records in over HTTP(S), produced to the raw topic.

    POST /records   a JSON object, a JSON array of objects, or JSON lines (one object per line)
    GET  /healthz   200 while the collector runs

All or nothing: a body with any line that is not a JSON object gets 400 listing those lines,
and nothing of it is produced, so a client can fix the body and send it again without
duplicating the good records. A record that is an object but does not fit the input schema is
produced as JSON, like ``collect file`` does: the pipeline dead-letters it with the reason.
200 means every record of the request was acknowledged by the broker (acks=all); 503 means
some were not (the response says how many were), and the client should retry.

Listens on 127.0.0.1 unless ``collector.host`` says otherwise; over TLS with
``collector.tls_certfile`` and ``collector.tls_keyfile`` (and client certificates signed by
``collector.tls_client_cafile`` when set). With ``collector.token`` set, POST needs
``Authorization: Bearer <token>`` (compared in constant time; never logged). The size limit
(``collector.max_body_bytes``) is checked on Content-Length before the body is read.

The server is aiohttp on its own event loop (``serve_forever()`` in a thread); producing, which
may block while librdkafka's queue is full, runs on a small thread pool, and the delivery
reports arrive on a poll thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from streamflow.collectors.http_tls import tls_context
from streamflow.collectors.produce import RawProducer
from streamflow.errors import ConfigError
from streamflow.metrics import Metrics
from streamflow.settings import Settings

log = logging.getLogger(__name__)
DELIVERY_TIMEOUT_S = 30.0
READ_TIMEOUT_S = 30.0  # seconds a slow client may take per read of the body
LINGER_S = 1.0  # after a reply sent without reading the body: how long its rest is discarded
MAX_REPORTED_ERRORS = 20
# The request line and status only: headers (and so tokens) are never logged.
ACCESS_LOG_FORMAT = '%a "%r" %s %b'


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
            return [r for r in whole if isinstance(r, dict)], bad
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
    """Counts one request's delivery reports (called on the collector's poll thread) and
    resolves ``done`` on the server's loop once every record is reported."""

    def __init__(self, n: int, loop: asyncio.AbstractEventLoop) -> None:
        self.pending, self.failed = n, 0
        self.loop = loop
        self.done: asyncio.Future[None] = loop.create_future()
        self.lock = threading.Lock()
        if n == 0:
            self.done.set_result(None)

    def _resolve(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def __call__(self, err: Any, msg: Any) -> None:
        with self.lock:
            if err is not None:
                self.failed += 1
            self.pending -= 1
            finished = self.pending == 0
        if finished:
            # RuntimeError: the server's loop has ended, nobody waits any more
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._resolve)


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None, close: bool = False
) -> web.Response:
    resp = web.Response(
        status=status,
        body=(json.dumps(body) + "\n").encode(),
        content_type="application/json",
        headers=headers,
    )
    if close:  # the body was not read: "Connection: close", and the rest of it is discarded
        resp.force_close()
    return resp


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port: IPv4 where the host has an IPv4 address (every
    interface when empty), else IPv6."""
    family = socket.AF_INET
    if host:
        families = [a[0] for a in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
        family = socket.AF_INET if socket.AF_INET in families else families[0]
    return socket.create_server((host, port), family=family, backlog=128)


class CollectorServer:
    """The HTTP server, listening from construction: ``serve_forever()`` in a thread,
    ``close()`` stops it (requests in flight finish first) and flushes the producer."""

    def __init__(
        self,
        settings: Settings,
        raw: RawProducer,
        host: str = "",
        port: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings, self.raw = settings, raw
        c = settings.collector
        self.token = c.token.reveal().encode()
        self.max_body = c.max_body_bytes
        self.ssl_context = tls_context(settings)
        self.metrics = metrics if metrics is not None else Metrics.create()
        self.socket = _bind(host or c.host, c.port if port is None else port)
        self.server_address: tuple[Any, ...] = self.socket.getsockname()
        self._executor = ThreadPoolExecutor(4, thread_name_prefix="streamflow-http-produce")
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_serving: asyncio.Event | None = None
        self._closing = False
        self.started, self._served = threading.Event(), threading.Event()
        self.error: Exception | None = None  # why serve_forever() stopped, when it failed
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="streamflow-http-poll", daemon=True)
        self._poller.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        scheme = "https" if self.ssl_context else "http"
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"{scheme}://{shown}:{port}"

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.raw.producer.poll(0.05)

    def produce(self, records: list[dict[str, Any]], delivery: _Delivery) -> None:
        """Queue the records (blocking while the producer's queue is full)."""
        for rec in records:
            try:
                value = self.raw.codec.encode(rec)
            except Exception:  # noqa: BLE001 - does not fit the input schema: the pipeline dead-letters it
                value = json.dumps(rec).encode()
            self.raw.send(value, self.raw.key_of(rec), on_delivery=delivery)

    def serve_forever(self) -> None:
        """Serve until ``close()``; run it in its own thread."""
        try:
            asyncio.run(self._serve())
        except Exception as exc:  # noqa: BLE001 - kept for run_http, which raises it
            self.error = exc
            log.error("the HTTP collector stopped: %s", exc)
        finally:
            self.started.set()  # wake a waiter even when the start failed
            self._served.set()

    async def _serve(self) -> None:
        with self._lock:
            if self._closing:
                self.socket.close()
                return
            self._loop, self._stop_serving = asyncio.get_running_loop(), asyncio.Event()
        app = web.Application(client_max_size=self.max_body)
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(
            app,
            access_log=log,
            access_log_format=ACCESS_LOG_FORMAT,
            shutdown_timeout=DELIVERY_TIMEOUT_S + 5,
            keepalive_timeout=READ_TIMEOUT_S,
            lingering_time=LINGER_S,
        )
        await runner.setup()
        try:
            await web.SockSite(runner, self.socket, ssl_context=self.ssl_context).start()
            self.started.set()
            await self._stop_serving.wait()
        finally:
            await runner.cleanup()  # stops listening, lets requests in flight finish
            self.socket.close()

    def close(self) -> int:
        """Stop serving, deliver what is queued; returns the number of records left undelivered."""
        with self._lock:
            self._closing = True
            loop, stop = self._loop, self._stop_serving
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stop.set)
            self._served.wait(DELIVERY_TIMEOUT_S + 10)
        else:
            self.socket.close()
        self._executor.shutdown(wait=True)
        self._stop.set()
        self._poller.join(timeout=2)
        return self.raw.flush()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        status, outcomes = 500, dict[str, int]()
        try:
            resp, outcomes = await self._respond(request)
            status = resp.status
            return resp
        finally:
            self._count(status, outcomes, time.perf_counter() - t0)

    def _count(self, status: int, outcomes: dict[str, int], seconds: float) -> None:
        m, name = self.metrics, self.settings.name
        m.collector_requests.labels(name, str(status)).inc()
        m.collector_request_seconds.labels(name).observe(seconds)
        for outcome, n in outcomes.items():
            if n:
                m.collector_records.labels(name, outcome).inc(n)

    def _authorized(self, request: web.Request) -> bool:
        if not self.token:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token
        )

    async def _respond(self, request: web.Request) -> tuple[web.Response, dict[str, int]]:
        """The reply to one request, and its records by outcome (accepted, rejected, failed)."""
        if request.method == "GET":
            if request.path == "/healthz":
                return _json(200, {"status": "ok", "topic": self.raw.topic}), {}
            return _json(404, {"error": "not found: GET /healthz, POST /records"}), {}
        if request.method != "POST":
            return _json(
                501,
                {"error": f"unsupported method {request.method}: GET /healthz, POST /records"},
                close=True,
            ), {}
        if request.path != "/records":
            return _json(404, {"error": "not found: POST /records"}, close=True), {}
        if not self._authorized(request):
            return _json(
                401,
                {"error": "unauthorized: send Authorization: Bearer <collector.token>"},
                {"WWW-Authenticate": 'Bearer realm="streamflow"'},
                close=True,
            ), {}
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            return _json(
                411,
                {"error": "send a Content-Length (chunked bodies are not accepted)"},
                close=True,
            ), {}
        length = request.content_length
        if length is None:
            return _json(411, {"error": "Content-Length required"}, close=True), {}
        if length > self.max_body:
            # The body is never read: the connection closes once its rest is discarded.
            return _json(
                413,
                {
                    "error": f"body of {length} bytes exceeds collector.max_body_bytes = "
                    f"{self.max_body}"
                },
                close=True,
            ), {}
        body = await self._read(request)
        if body is None:
            return _json(408, {"error": f"no data for {READ_TIMEOUT_S:g} s"}, close=True), {}
        records, errors = parse_body(body)
        if errors:
            return _json(
                400,
                {
                    "error": f"{len(errors)} bad line(s); nothing was produced",
                    "lines": [e["line"] for e in errors],
                    "errors": errors[:MAX_REPORTED_ERRORS],
                    "accepted": 0,
                },
            ), {"rejected": len(records) + len(errors)}
        delivery = _Delivery(len(records), asyncio.get_running_loop())
        await asyncio.get_running_loop().run_in_executor(
            self._executor, self.produce, records, delivery
        )
        with contextlib.suppress(TimeoutError):  # what is still pending counts as failed
            await asyncio.wait_for(asyncio.shield(delivery.done), DELIVERY_TIMEOUT_S)
        with delivery.lock:
            failed = delivery.failed + max(delivery.pending, 0)
        if failed:
            return _json(
                503,
                {
                    "error": (
                        f"{failed} of {len(records)} record(s) not acknowledged by the broker; "
                        "retry"
                    ),
                    "delivered": len(records) - failed,
                    "failed": failed,
                },
            ), {"accepted": len(records) - failed, "failed": failed}
        return _json(200, {"accepted": len(records), "topic": self.raw.topic}), {
            "accepted": len(records)
        }

    async def _read(self, request: web.Request) -> bytes | None:
        """The body (at most ``max_body`` bytes: Content-Length was checked), None when the
        client sends nothing for READ_TIMEOUT_S."""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = await asyncio.wait_for(request.content.readany(), READ_TIMEOUT_S)
            except TimeoutError:
                return None
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def run_http(
    settings: Settings,
    raw: RawProducer,
    stop: Any,
    *,
    host: str = "",
    port: int | None = None,
    serve_metrics: bool = True,
) -> int:
    """Serve until ``stop`` is set (a StopFlag or Event); returns the records left undelivered.

    With ``serve_metrics``, the collector's metrics are served on ``metrics.host:metrics.port``
    like a worker's."""
    from streamflow.metrics import serve

    metrics = Metrics.create()
    server = CollectorServer(settings, raw, host, port, metrics)
    metrics_server = None
    try:
        if serve_metrics:
            m = settings.metrics
            try:
                metrics_server = serve(metrics.registry, m.host, m.port)
            except OSError as exc:
                raise ConfigError(
                    f"metrics.port: cannot serve metrics on {m.host}:{m.port}: {exc} (give the "
                    "collector its own port: --metrics-port)",
                    source=settings.source,
                ) from None
        threading.Thread(target=server.serve_forever, name="streamflow-http", daemon=True).start()
        server.started.wait(30)
        if server.error is not None:
            raise server.error
    except BaseException:
        server.close()
        _stop_metrics(metrics_server)
        raise
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
        f"{raw.topic}; "
        + ("bearer token required" if server.token else "no token required")
        + ("; client certificate required" if settings.collector.tls_client_cafile else "")
        + (
            f"; metrics on http://{settings.metrics.host}:{metrics_server.server_address[1]}"
            "/metrics"
            if metrics_server is not None
            else ""
        ),
        flush=True,
    )
    try:
        while not stop.is_set():
            time.sleep(0.1)
    finally:
        left = server.close()
        _stop_metrics(metrics_server)
    return left


def _stop_metrics(server: Any) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()

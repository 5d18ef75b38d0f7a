"""A schema registry on loopback for the tests: the part of Confluent's REST API that
streamflow and confluent-kafka's Avro serializer call, with HTTP Basic or bearer
authentication and TLS, as a real registry is run. A stand-in: no Confluent Schema Registry
(a JVM service) runs here.

- ``POST /subjects/<subject>/versions``: register (the same schema text gets the same id and
  GUID), answering ``{"id", "guid", ...}``;
- ``GET /schemas/ids/<id>`` and ``GET /schemas/guids/<guid>``: the schema, or 404 (40403).

Every request without the expected credentials gets 401 (40101); ``requests`` records each
request's path and whether it was authenticated.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Registry:
    url: str
    schemas: dict[int, str] = field(default_factory=dict)  # id -> schema text
    guids: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str, bool]] = field(default_factory=list)  # method, path, authed

    def register(self, text: str) -> tuple[int, str]:
        for i, known in self.schemas.items():
            if known == text:
                return i, next(g for g, j in self.guids.items() if j == i)
        i = len(self.schemas) + 1
        guid = str(uuid.uuid4())
        self.schemas[i], self.guids[guid] = text, i
        return i, guid


@contextmanager
def serve_registry(
    *,
    user: str = "",
    password: str = "",
    token: str = "",
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> Iterator[Registry]:
    """A registry on 127.0.0.1 (https with ``certfile``/``keyfile``) requiring Basic
    ``user``:``password`` or ``Bearer token`` when given."""
    expected = []
    if user:
        expected.append("Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    if token:
        expected.append(f"Bearer {token}")
    registry = Registry(url="")

    class Handler(BaseHTTPRequestHandler):
        def authed(self) -> bool:
            ok = not expected or self.headers.get("Authorization") in expected
            registry.requests.append((self.command, self.path, ok))
            if not ok:
                self.reply(401, {"error_code": 40101, "message": "Unauthorized"})
            return ok

        def do_GET(self) -> None:  # noqa: N802
            if not self.authed():
                return
            parts = self.path.split("?")[0].strip("/").split("/")
            i: int | None = None
            if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit():
                i = int(parts[2])
            elif len(parts) == 3 and parts[:2] == ["schemas", "guids"]:
                i = registry.guids.get(parts[2])
            if i is None or i not in registry.schemas:
                self.reply(404, {"error_code": 40403, "message": "Schema not found"})
                return
            self.reply(200, {"schema": registry.schemas[i]})

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not self.authed():
                return
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) != 3 or parts[0] != "subjects" or parts[2] != "versions":
                self.reply(404, {"error_code": 404, "message": "Not found"})
                return
            text = json.loads(body)["schema"]
            i, guid = registry.register(text)
            self.reply(
                200, {"id": i, "guid": guid, "subject": parts[1], "version": 1, "schema": text}
            )

        def reply(self, status: int, doc: dict[str, Any]) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if certfile is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(certfile, keyfile)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    registry.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()

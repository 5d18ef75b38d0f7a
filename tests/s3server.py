"""An S3-compatible server on loopback for the store tests: moto's server mode.

No S3-compatible server ships in Debian or on PyPI except moto's (``moto[server]``), so it is the
stand-in for S3 here: real HTTP on 127.0.0.1, real multipart uploads, listing and ranged reads,
through the same ``pyarrow.fs.S3FileSystem`` the store step uses. It does not check signatures,
so the credentials below are fakes that only have to be present.

A test module takes the fixture with ``pytest_plugins = ["tests.s3server"]``. One server and one
bucket serve the whole session; each test writes under its own prefix (``S3Server.prefix``).
Importing it as well is fine: it asks pytest not to rewrite it (PYTEST_DONT_REWRITE), so the
order in which modules import it and name it as a plugin does not matter.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from streamflow.settings.schema import Secret
from streamflow.store.files import S3Options, Storage

# A developer's AWS settings that would send the tests' clients elsewhere (or to a profile that
# is not there): unset while the server runs.
AWS_REDIRECTS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@dataclass(frozen=True)
class S3Server:
    """A running server: its endpoint, its bucket and the (fake) credentials it takes."""

    endpoint: str  # http://127.0.0.1:<port>
    bucket: str
    region: str = "us-east-1"
    access_key_id: str = "streamflow-test-key-id"
    secret_access_key: str = "streamflow-test-secret-never-shown"

    def options(self, **bounds: Any) -> S3Options:
        """The store's S3 options for this server (``bounds``: timeouts, attempts)."""
        return S3Options(
            endpoint=self.endpoint,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=Secret(self.secret_access_key),
            **bounds,
        )

    def prefix(self) -> str:
        """A fresh ``s3://bucket/<prefix>`` for one test."""
        return f"s3://{self.bucket}/t{uuid.uuid4().hex[:8]}"

    def storage(self, uri: str = "") -> Storage:
        return Storage(uri or self.prefix(), self.options())

    def client(self) -> Any:
        """A boto3 client, to look at the bucket other than through pyarrow."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def keys(self, uri: str) -> list[str]:
        """Every object under ``s3://bucket/prefix``, whatever its name."""
        prefix = uri[len(f"s3://{self.bucket}/") :].rstrip("/") + "/"
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def pending_uploads(self, uri: str) -> list[str]:
        """Keys under ``uri`` with a multipart upload begun and neither completed nor aborted."""
        prefix = uri[len(f"s3://{self.bucket}/") :].rstrip("/") + "/"
        got = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return sorted(u["Key"] for u in got.get("Uploads", []))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port, with one bucket, for the whole session."""
    from moto.server import ThreadedMotoServer

    requests = logging.getLogger("werkzeug")  # one INFO line per request: noise in a failure
    level = requests.level
    requests.setLevel(logging.WARNING)
    env = pytest.MonkeyPatch()
    for var in AWS_REDIRECTS:
        env.delenv(var, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = S3Server(endpoint=f"http://{host}:{port}", bucket="streamflow-store-tests")
        s3.client().create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        server.stop()
        env.undo()
        requests.setLevel(level)

"""Security as a user meets it: the pipeline through TLS (stunnel in front of the embedded
broker), a client without the CA failing fast and clearly, and secrets that never reach a
worker's log or its metrics. Tansu has no usable SASL (FIELD_NOTES), so SASL is checked up to
the broker's refusal: the right mechanism is offered, OAUTHBEARER fetches its token, and
the error says why without the secret."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from streamflow.broker import free_port
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE, ROOT
from tests.integration.helpers import read_topic, wait_for
from tests.integration.tls import TlsBroker, tls_broker

pytestmark = pytest.mark.integration

PASSWORD = "pw-9f3Kq-must-never-be-printed"
CLIENT_SECRET = "cs-7hW2x-must-never-be-printed"
TOKEN = "tok-4Rt8v-must-never-be-printed"
SECRET_ENV = {
    "STREAMFLOW_KAFKA_SASL_USERNAME": "streamflow-svc",
    "STREAMFLOW_KAFKA_SASL_PASSWORD": PASSWORD,
    "STREAMFLOW_KAFKA_SASL_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
    "STREAMFLOW_COLLECTOR_TOKEN": TOKEN,
}


def sets(overrides: dict[str, str]) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]


def own_pipeline(unique: str, bootstrap: str, **extra: str) -> dict[str, str]:
    return {
        "name": f"t{unique}",
        "topics.raw": f"t{unique}.raw",
        "topics.scored": f"t{unique}.scored",
        "topics.dlq": f"t{unique}.dlq",
        "kafka.bootstrap": bootstrap,
        "metrics.port": str(free_port()),
        "runtime.topology": "chained",
        "kafka.connect_timeout_s": "5",
        **extra,
    }


def record(i: int) -> dict[str, Any]:
    return {
        "device_id": f"rack1-node{i % 7}",
        "timestamp": int(time.time() * 1000),
        "cpu_temp_c": 60.0 + i % 10,
        "power_w": 400.0,
        "cpu_util_pct": 50.0,
    }


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    with tls_broker(tmp_path_factory.mktemp("tls")) as b:
        yield b


def test_the_pipeline_runs_through_tls(tls: TlsBroker, unique: str) -> None:
    from streamflow.collectors.produce import RawProducer
    from streamflow.kafka.config import security_config
    from streamflow.supervisor import LocalPipeline

    overrides = own_pipeline(
        unique,
        tls.bootstrap,
        **{"kafka.security_protocol": "SSL", "kafka.ssl_cafile": str(tls.cafile)},
    )
    settings = load_settings(PIPELINE, overrides, environ={})
    pipe = LocalPipeline(settings, ["--pipeline", str(PIPELINE), *sets(overrides)])
    pipe.start()  # creates the topics through TLS too
    try:
        assert pipe.wait_consuming(90), f"the worker did not start over TLS; logs in {pipe.log_dir}"
        raw = RawProducer(settings, tls.bootstrap)
        for i in range(50):
            raw.send_record(record(i))
        assert raw.flush(30) == 0 and raw.stats.failed == 0
        scored = read_topic(
            tls.bootstrap, settings.topics.scored, until=50, conf=security_config(settings.kafka)
        )
        assert len(scored) == 50
        assert {m.key for m in scored} == {f"rack1-node{i}".encode() for i in range(7)}
    finally:
        pipe.stop()


def test_a_client_without_the_ca_fails_fast_and_says_why(tls: TlsBroker, unique: str) -> None:
    from streamflow.errors import BrokerUnavailable
    from streamflow.kafka.admin import wait_ready

    no_ca = load_settings(
        PIPELINE, {"kafka.security_protocol": "SSL"}, environ={}
    )  # the system CAs only
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="certificate verify failed"):
        wait_ready(tls.bootstrap, 5, settings=no_ca)
    assert time.monotonic() - t0 < 15
    # the same through the CLI: an error naming the cause, exit 2, no hang, no traceback
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamflow.cli",
            "consume",
            "any.topic",
            "--limit",
            "1",
            *sets(own_pipeline(unique, tls.bootstrap, **{"kafka.security_protocol": "SSL"})),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert f"no Kafka broker answered at {tls.bootstrap} within 5s (SSL)" in r.stderr
    assert "certificate verify failed" in r.stderr and "Traceback" not in r.stderr
    # and a plaintext client at the TLS port fails too, rather than hanging
    with pytest.raises(BrokerUnavailable):
        wait_ready(tls.bootstrap, 3)


def scrape(port: int) -> str:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return ""


def test_secrets_from_the_environment_never_reach_a_workers_log_or_metrics(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    from streamflow.collectors.produce import RawProducer

    overrides = own_pipeline(unique, bootstrap)
    port = int(overrides["metrics.port"])
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:  # the whole log, debug level, faust and aiokafka included
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamflow.cli",
                "-v",
                "worker",
                "--stage",
                "chained",
                "--loglevel",
                "debug",
                "--pipeline",
                str(PIPELINE),
                *sets(overrides),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **SECRET_ENV},
        )
    try:
        assert wait_for(
            lambda: (
                f'streamflow_worker_up{{pipeline="t{unique}",stage="chained"}} 1.0' in scrape(port)
            ),
            timeout_s=90,
        ), log_path.read_text()[-3000:]
        settings = load_settings(PIPELINE, overrides, environ={})
        raw = RawProducer(settings, bootstrap)
        for i in range(20):
            raw.send_record(record(i))
        raw.flush(30)
        assert len(read_topic(bootstrap, settings.topics.scored, until=20)) == 20
        assert wait_for(lambda: "streamflow_records_total{" in scrape(port), timeout_s=10)
        metrics = scrape(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    text = log_path.read_text(errors="replace")
    assert "stage chained consuming" in text and "streamflow_records_total" in metrics
    for secret in (PASSWORD, CLIENT_SECRET, TOKEN):
        assert secret not in text, f"a secret is in the worker's log: {secret}"
        assert secret not in metrics, f"a secret is in the metrics: {secret}"


class _TokenEndpoint(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).seen.append(self.headers.get("Authorization", ""))

        def b64(d: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

        now = int(time.time())
        jwt = (
            f"{b64({'alg': 'none'})}.{b64({'sub': 'streamflow', 'iat': now, 'exp': now + 3600})}.x"
        )
        out = json.dumps({"access_token": jwt, "token_type": "bearer", "expires_in": 3600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "OAUTHBEARER"])
def test_sasl_refused_by_the_broker_says_why_without_the_secret(
    bootstrap: str, unique: str, mechanism: str
) -> None:
    _TokenEndpoint.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token_url = f"http://127.0.0.1:{server.server_address[1]}/oauth2/token"
    overrides = own_pipeline(
        unique,
        bootstrap,
        **{
            "kafka.security_protocol": "SASL_PLAINTEXT",
            "kafka.sasl_mechanism": mechanism,
            "kafka.sasl_oauth_token_url": token_url,
            "kafka.sasl_oauth_client_id": "streamflow",
        },
    )
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamflow.cli",
                "-v",
                "worker",
                "--stage",
                "chained",
                "--pipeline",
                str(PIPELINE),
                *sets(overrides),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
            env={**os.environ, **SECRET_ENV},
        )
    finally:
        server.shutdown()
        server.server_close()
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert f"no Kafka broker answered at {bootstrap} within 5s (SASL_PLAINTEXT)" in out
    assert (
        f"SASL {mechanism} mechanism handshake failed" in out
    )  # the mechanism was offered to the broker
    if mechanism == "OAUTHBEARER":  # librdkafka fetched a token with the client credentials
        basic = base64.b64encode(f"streamflow:{CLIENT_SECRET}".encode()).decode()
        assert _TokenEndpoint.seen and set(_TokenEndpoint.seen) == {f"Basic {basic}"}
    for secret in (PASSWORD, CLIENT_SECRET, TOKEN):
        assert secret not in out
        assert urllib.parse.quote(secret) not in out

"""[kafka] TLS/SASL settings: validation, the mapping onto librdkafka and faust/aiokafka, and
secrets that never show in a repr, an error, a log line or `streamflow validate`."""

from __future__ import annotations

import base64
import json
import logging
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from streamflow.errors import BrokerUnavailable, ConfigError
from streamflow.kafka.config import (
    OAuthTokenProvider,
    faust_credentials,
    kafka_config,
    producer_config,
    redacting_logger,
    security_config,
)
from streamflow.settings import Secret
from streamflow.settings.loading import collect_settings, load_settings
from tests.conftest import PIPELINE

PASSWORD = "pw-Zq8-never-print-me"
CLIENT_SECRET = "cs-Xy7-never-print-me"


def problems(overrides: dict[str, str], environ: dict[str, str] | None = None) -> list[str]:
    _, found = collect_settings(PIPELINE, overrides, environ=environ or {})
    return found


def test_a_secret_shows_only_when_revealed() -> None:
    s = Secret(PASSWORD)
    assert PASSWORD not in repr(s) and PASSWORD not in str(s) and PASSWORD not in f"{s}"
    assert s.reveal() == PASSWORD and s == Secret(PASSWORD) and bool(s) and not Secret()


def test_passwords_from_the_environment_never_show_in_the_settings_repr() -> None:
    env = {
        "STREAMFLOW_KAFKA_SASL_PASSWORD": PASSWORD,
        "STREAMFLOW_KAFKA_SASL_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "STREAMFLOW_COLLECTOR_TOKEN": "tok-never-print-me",
    }
    s = load_settings(PIPELINE, environ=env)
    assert s.kafka.sasl_password.reveal() == PASSWORD
    assert s.kafka.sasl_oauth_client_secret.reveal() == CLIENT_SECRET
    assert s.collector.token.reveal() == "tok-never-print-me"
    text = repr(s) + str(s)
    assert PASSWORD not in text and CLIENT_SECRET not in text and "tok-never-print-me" not in text


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"kafka.security_protocol": "TLS"},
            "kafka.security_protocol: must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
        ),
        (
            {"kafka.security_protocol": "SASL_SSL"},
            "kafka.sasl_mechanism: kafka.security_protocol = SASL_SSL needs a mechanism",
        ),
        (
            {"kafka.sasl_mechanism": "PLAIN"},
            "kafka.sasl_mechanism: PLAIN is set but kafka.security_protocol = PLAINTEXT",
        ),
        (
            {"kafka.security_protocol": "SASL_PLAINTEXT", "kafka.sasl_mechanism": "GSSAPI"},
            "kafka.sasl_mechanism: must be one of",
        ),
        (
            {"kafka.security_protocol": "SASL_SSL", "kafka.sasl_mechanism": "SCRAM-SHA-512"},
            "kafka.sasl_username: required with kafka.sasl_mechanism = SCRAM-SHA-512",
        ),
        (
            {"kafka.security_protocol": "SASL_SSL", "kafka.sasl_mechanism": "OAUTHBEARER"},
            "kafka.sasl_oauth_token_url: required with kafka.sasl_mechanism = OAUTHBEARER",
        ),
        (
            {"kafka.security_protocol": "SSL", "kafka.ssl_cafile": "/nonexistent/ca.pem"},
            "kafka.ssl_cafile: file not found: /nonexistent/ca.pem",
        ),
        (
            {"kafka.ssl_cafile": str(PIPELINE)},
            "kafka.ssl_cafile: is set but kafka.security_protocol = PLAINTEXT does not use TLS",
        ),
        (
            {"kafka.security_protocol": "SSL", "kafka.ssl_keyfile": str(PIPELINE)},
            "kafka.ssl_keyfile: needs kafka.ssl_certfile",
        ),
        ({"kafka.ssl_check_hostname": "maybe"}, "kafka.ssl_check_hostname: expected true or false"),
    ],
)
def test_bad_security_settings_fail_at_start_naming_the_key(
    overrides: dict[str, str], expected: str
) -> None:
    found = problems(overrides)
    assert any(expected in p for p in found), found


def test_a_password_without_sasl_is_inert_not_an_error() -> None:
    assert (
        problems(
            {}, {"STREAMFLOW_KAFKA_SASL_USERNAME": "u", "STREAMFLOW_KAFKA_SASL_PASSWORD": PASSWORD}
        )
        == []
    )


def test_config_errors_never_contain_a_secret(tmp_path: Path) -> None:
    # a typo'd key, a password in TOML that is not a string, and a mechanism that needs what is
    # missing
    text = PIPELINE.read_text().replace('"../', f'"{PIPELINE.parent.parent}/')
    text = (
        "\n".join(line for line in text.splitlines() if not line.startswith("security_protocol"))
        + "\n"
    )
    text = text.replace(
        "[kafka]\n",
        '[kafka]\nsasl_password = 123456789\nsasl_pasword = "x"\n'
        'security_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\n',
    )
    p = tmp_path / "p.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(
            p,
            {"kafka.sasl_oauth_client_secret": CLIENT_SECRET},
            environ={
                "STREAMFLOW_KAFKA_SASL_PASSWORD": PASSWORD,
                "STREAMFLOW_KAFKA_SASL_USERNAME": "",
            },
        )
    msg = str(err.value)
    assert "kafka.sasl_username: required with kafka.sasl_mechanism = PLAIN" in msg
    assert "kafka.sasl_pasword: unknown key (did you mean 'sasl_password'?)" in msg
    assert PASSWORD not in msg and CLIENT_SECRET not in msg
    with pytest.raises(ConfigError) as err:
        load_settings(p, environ={})
    assert "kafka.sasl_password: expected a string (value not shown: it is a secret)" in str(
        err.value
    )
    assert "123456789" not in str(err.value)


def test_validate_command_never_prints_a_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamflow.cli import main

    monkeypatch.setenv("STREAMFLOW_KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("STREAMFLOW_KAFKA_SASL_OAUTH_CLIENT_SECRET", CLIENT_SECRET)
    assert main(["validate", str(PIPELINE)]) == 0
    assert (
        main(
            [
                "validate",
                str(PIPELINE),
                "--set",
                "kafka.security_protocol=SASL_SSL",
                "--set",
                "kafka.sasl_mechanism=SCRAM-SHA-256",
            ]
        )
        == 1
    )
    out = capsys.readouterr()
    assert "kafka.sasl_username: required" in out.err
    assert PASSWORD not in out.out + out.err and CLIENT_SECRET not in out.out + out.err


def settings_with(**kafka: str) -> Any:
    return load_settings(PIPELINE, {f"kafka.{k}": v for k, v in kafka.items()}, environ={})


def test_plaintext_adds_nothing_to_the_librdkafka_config() -> None:
    assert security_config(settings_with().kafka) == {}


def test_tls_maps_onto_librdkafka(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "client.pem", "client.key"))
    for f in (ca, cert, key):
        f.write_text("x")
    s = settings_with(
        security_protocol="SSL",
        ssl_cafile=str(ca),
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        ssl_check_hostname="false",
    )
    assert security_config(s.kafka) == {
        "security.protocol": "ssl",
        "ssl.ca.location": str(ca),
        "ssl.certificate.location": str(cert),
        "ssl.key.location": str(key),
        "ssl.endpoint.identification.algorithm": "none",
    }


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_maps_onto_librdkafka_and_aiokafka(mechanism: str) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    s = settings_with(
        security_protocol="SASL_SSL",
        sasl_mechanism=mechanism,
        sasl_username="svc",
        sasl_password=PASSWORD,
    )
    conf = security_config(s.kafka)
    assert conf == {
        "security.protocol": "sasl_ssl",
        "ssl.endpoint.identification.algorithm": "https",
        "sasl.mechanism": mechanism,
        "sasl.username": "svc",
        "sasl.password": PASSWORD,
    }
    auth = credentials_to_aiokafka_auth(faust_credentials(s))  # what faust hands aiokafka
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == mechanism
    assert auth["sasl_plain_username"] == "svc" and auth["sasl_plain_password"] == PASSWORD
    assert auth["ssl_context"].check_hostname is True
    assert PASSWORD not in repr(faust_credentials(s))


def test_oauthbearer_maps_onto_librdkafka_oidc_and_an_aiokafka_token_provider() -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    s = settings_with(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauth_token_url="https://idp.example/token",
        sasl_oauth_client_id="streamflow",
        sasl_oauth_client_secret=CLIENT_SECRET,
        sasl_oauth_scope="kafka",
    )
    assert security_config(s.kafka) == {
        "security.protocol": "sasl_plaintext",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.token.endpoint.url": "https://idp.example/token",
        "sasl.oauthbearer.client.id": "streamflow",
        "sasl.oauthbearer.client.secret": CLIENT_SECRET,
        "sasl.oauthbearer.scope": "kafka",
    }
    auth = credentials_to_aiokafka_auth(faust_credentials(s))
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["sasl_mechanism"] == "OAUTHBEARER"
    provider = auth["sasl_oauth_token_provider"]
    assert (
        isinstance(provider, OAuthTokenProvider)
        and provider.token_url == "https://idp.example/token"
    )
    assert CLIENT_SECRET not in repr(provider) and CLIENT_SECRET not in repr(faust_credentials(s))


def test_ssl_alone_gives_faust_an_ssl_context() -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(
        faust_credentials(settings_with(security_protocol="SSL", ssl_check_hostname="false"))
    )
    assert auth["security_protocol"] == "SSL" and auth["ssl_context"].check_hostname is False
    assert faust_credentials(settings_with()) is None


def test_every_librdkafka_client_gets_the_security_settings() -> None:
    s = settings_with(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password=PASSWORD,
    )
    for conf in (producer_config(s, "b:9092"), kafka_config(s, "b:9092", logger="x")):
        assert conf["sasl.password"] == PASSWORD and conf["security.protocol"] == "sasl_plaintext"
        assert conf["bootstrap.servers"] == "b:9092"


def test_client_library_log_lines_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    log = redacting_logger("streamflow.librdkafka.test", [PASSWORD])
    with caplog.at_level(logging.DEBUG, logger="streamflow.librdkafka.test"):
        log.error(
            "%s [%s] %s", "SASL", "rdkafka#producer-1", f"auth failed for password {PASSWORD}"
        )
    assert PASSWORD not in caplog.text and "auth failed for password ********" in caplog.text


class TokenEndpoint(BaseHTTPRequestHandler):
    requests: list[dict[str, str]] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        type(self).requests.append(
            {"auth": self.headers.get("Authorization", ""), **dict(urllib.parse.parse_qsl(body))}
        )
        if type(self).status != 200:
            self.send_response(type(self).status)
            self.end_headers()
            self.wfile.write(
                json.dumps({"error": "invalid_client", "error_description": "bad secret"}).encode()
            )
            return
        out = json.dumps(
            {
                "access_token": f"token-{len(type(self).requests)}",
                "token_type": "bearer",
                "expires_in": 3600,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def token_endpoint() -> Iterator[str]:
    TokenEndpoint.requests, TokenEndpoint.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/token"
    server.shutdown()
    server.server_close()


def test_the_token_provider_does_the_client_credentials_flow_and_reuses_the_token(
    token_endpoint: str,
) -> None:
    import asyncio

    provider = OAuthTokenProvider(token_endpoint, "streamflow", CLIENT_SECRET, "kafka")

    async def twice() -> list[str]:
        return [await provider.token(), await provider.token()]

    assert asyncio.run(twice()) == ["token-1", "token-1"]
    (req,) = TokenEndpoint.requests
    assert req["grant_type"] == "client_credentials" and req["scope"] == "kafka"
    assert (
        req["auth"] == "Basic " + base64.b64encode(f"streamflow:{CLIENT_SECRET}".encode()).decode()
    )


def test_a_refused_token_request_says_why_without_the_secret(token_endpoint: str) -> None:
    TokenEndpoint.status = 401
    with pytest.raises(BrokerUnavailable) as err:
        OAuthTokenProvider(token_endpoint, "streamflow", CLIENT_SECRET).fetch()
    assert "answered HTTP 401: invalid_client bad secret" in str(err.value)
    assert CLIENT_SECRET not in str(err.value) and not err.value.retriable


def test_the_metrics_endpoint_binds_localhost_by_default() -> None:
    from prometheus_client import CollectorRegistry

    from streamflow.broker import free_port
    from streamflow.metrics import serve

    s = load_settings(PIPELINE, {"metrics.port": str(free_port())}, environ={})
    assert s.metrics.host == "127.0.0.1" and s.collector.host == "127.0.0.1"
    server = serve(CollectorRegistry(), s.metrics.host, s.metrics.port)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()

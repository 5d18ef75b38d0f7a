"""The schema-registry client as a user configures it ([schema_registry]: Basic or bearer auth,
TLS, client passthrough) and schema ids in headers, against the registry stand-in on loopback
(tests/registry_server.py) and confluent-kafka's own Avro serializer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient, header_schema_id_serializer
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streamflow.codecs import VALUE_SCHEMA_ID_HEADER, ReadingDecoder, registry_for
from streamflow.codecs.avro import header_schema_ref, registry_client_config
from streamflow.collectors.synthetic import MEASUREMENTS
from streamflow.errors import ConfigError, DecodeError
from streamflow.settings import SchemaRegistrySettings, Secret
from streamflow.settings.loading import collect_settings, load_settings
from tests.conftest import PIPELINE, ROOT
from tests.registry_server import serve_registry

READING = str(ROOT / "schemas/telemetry_reading.avsc")
SCHEMA = (ROOT / "schemas/telemetry_reading.avsc").read_text()
RECORD = {
    "device_id": "rack1-node1", "timestamp": 1764000000000, "status": "ok", "cpu_temp_c": 61.5,
    "power_w": 310.0, "cpu_util_pct": 40.0,
}  # fmt: skip


def serialize(client_conf: dict[str, Any], headers: list[tuple[str, bytes]] | None) -> bytes:
    """``RECORD`` as confluent-kafka's AvroSerializer writes it: the id as a prefix, or (with
    ``headers``) a GUID header and a plain Avro value."""
    conf: dict[str, Any] = {"auto.register.schemas": True}
    if headers is not None:
        conf["schema.id.serializer"] = header_schema_id_serializer
    ser = AvroSerializer(SchemaRegistryClient(client_conf), SCHEMA, conf=conf)
    ctx = SerializationContext("raw", MessageField.VALUE, headers)
    out = ser(_full(RECORD), ctx)
    assert out is not None
    return out


def _full(rec: dict[str, Any]) -> dict[str, Any]:
    return {f["name"]: rec.get(f["name"]) for f in json.loads(SCHEMA)["fields"]}


def test_basic_auth_prefix_and_header_ids_read_alike() -> None:
    with serve_registry(user="sr", password="s3cret-pw") as reg:
        client = {"url": reg.url, "basic.auth.user.info": "sr:s3cret-pw"}
        prefixed = serialize(client, None)
        headers: list[tuple[str, bytes]] = []
        plain = serialize(client, headers)
        assert prefixed[0] == 0 and headers[0][0] == VALUE_SCHEMA_ID_HEADER
        assert headers[0][1][0] == 1 and len(headers[0][1]) == 17  # magic 1 + GUID
        settings = SchemaRegistrySettings(username="sr", password=Secret("s3cret-pw"))
        dec = ReadingDecoder(READING, MEASUREMENTS, registry=registry_for(reg.url, settings))
        out = dec.decode_batch([prefixed, plain, plain], headers=[(), headers, ()])
        assert out.errors[:2] == [None, None]
        assert out.device_ids[:2] == ["rack1-node1", "rack1-node1"]
        np.testing.assert_array_equal(out.values[0], out.values[1])
        # the same plain value without its header: not the wire format, a bad record
        assert out.errors[2] is not None and "magic byte" in out.errors[2]
        assert all(authed for _, _, authed in reg.requests)
        assert any("/schemas/guids/" in path for _, path, _ in reg.requests)


def test_refused_credentials_stop_with_the_keys_named_and_no_secret() -> None:
    with serve_registry(user="sr", password="right") as reg:
        wrong = SchemaRegistrySettings(username="sr", password=Secret("wrong-pw-123"))
        with pytest.raises(ConfigError) as err:
            registry_for(reg.url, wrong).register("raw-value", READING)  # type: ignore[union-attr]
        text = str(err.value)
        assert "HTTP 401" in text and "schema_registry.username" in text
        assert "wrong-pw-123" not in text


def test_bearer_token() -> None:
    with serve_registry(token="tok-abc") as reg:
        s = SchemaRegistrySettings(bearer_token=Secret("tok-abc"), logical_cluster="lsrc-1")
        assert registry_for(reg.url, s).register("raw-value", READING) == 1  # type: ignore[union-attr]
        assert reg.requests and all(authed for _, _, authed in reg.requests)


def test_the_client_configuration() -> None:
    s = SchemaRegistrySettings(
        username="u", password=Secret("p"), ssl_cafile="/ca.pem", timeout_s=3.0,
        client={"max.retries": 5},
    )  # fmt: skip
    assert registry_client_config("https://r:8081", s) == {
        "url": "https://r:8081", "timeout": 3.0, "basic.auth.user.info": "u:p",
        "ssl.ca.location": "/ca.pem", "max.retries": 5,
    }  # fmt: skip
    token = SchemaRegistrySettings(bearer_token=Secret("t"), logical_cluster="lsrc-9")
    conf = registry_client_config("https://r", token)
    assert conf["bearer.auth.credentials.source"] == "STATIC_TOKEN"
    assert conf["bearer.auth.token"] == "t" and conf["bearer.auth.logical.cluster"] == "lsrc-9"


def test_header_references() -> None:
    assert header_schema_ref(b"\x00\x00\x00\x00\x07") == 7
    guid = bytes(range(16))
    assert header_schema_ref(b"\x01" + guid) == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    with pytest.raises(DecodeError, match="__value_schema_id header .*holds no schema id"):
        header_schema_ref(b"\x05abc")


def test_settings_problems_name_the_key(tmp_path: Path) -> None:
    base = {"input.schema_registry_url": "http://registry:8081"}
    cases = {
        "schema_registry.username: HTTP Basic needs both": {"schema_registry.username": "u"},
        "schema_registry.bearer_token: set either": {
            "schema_registry.username": "u", "schema_registry.password": "p",
            "schema_registry.bearer_token": "t",
        },
        "schema_registry.client.url: set input.schema_registry_url instead": {
            "schema_registry.client.url": "http://x"
        },
        "schema_registry.client.basic.auth.user.info: set schema_registry.username": {
            "schema_registry.client.basic.auth.user.info": "a:b"
        },
        "schema_registry.ssl_cafile: file not found": {
            "schema_registry.ssl_cafile": str(tmp_path / "none.pem")
        },
    }  # fmt: skip
    for expected, overrides in cases.items():
        _, problems = collect_settings(PIPELINE, {**base, **overrides}, environ={})
        assert any(expected in p for p in problems), (expected, problems)
        assert not any("wrong" in p or "p:" in p for p in problems)
    creds = {"schema_registry.username": "u", "schema_registry.password": "p"}
    _, problems = collect_settings(PIPELINE, creds, environ={})
    assert "schema_registry: is configured but input.schema_registry_url is not set" in problems
    # the password from the environment, never shown
    env = {
        "STREAMFLOW_SCHEMA_REGISTRY_USERNAME": "u",
        "STREAMFLOW_SCHEMA_REGISTRY_PASSWORD": "pw-x",
    }
    s = load_settings(PIPELINE, base, environ=env)
    assert s.schema_registry.password.reveal() == "pw-x" and "pw-x" not in repr(s)

"""A pipeline reading the Confluent wire format from a registry that wants credentials over
TLS, as a managed registry does (the stand-in on loopback, tests/registry_server.py): records
written by confluent-kafka's own AvroSerializer, with the schema id as a prefix and as a
header, are all scored; the results are registered with the same credentials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient, header_schema_id_serializer
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.conftest import ROOT
from tests.integration.helpers import read_topic, running_pipeline
from tests.integration.tls import make_certificates
from tests.registry_server import serve_registry

pytestmark = pytest.mark.integration
SCHEMA = (ROOT / "schemas/telemetry_reading.avsc").read_text()
FIELDS = [f["name"] for f in json.loads(SCHEMA)["fields"]]


def test_registry_with_basic_auth_over_tls_and_header_ids(
    pipeline_overrides: dict[str, str],
    bootstrap: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca, cert, key = make_certificates(tmp_path)
    with serve_registry(user="sr-key", password="sr-s3cret", certfile=cert, keyfile=key) as reg:
        overrides = {
            **pipeline_overrides,
            "runtime.topology": "chained",
            "input.format": "avro",
            "input.schema_registry_url": reg.url,
            "schema_registry.username": "sr-key",
            "schema_registry.ssl_cafile": str(ca),
        }
        monkeypatch.setenv("STREAMFLOW_SCHEMA_REGISTRY_PASSWORD", "sr-s3cret")  # the workers' too
        client = SchemaRegistryClient(
            {"url": reg.url, "basic.auth.user.info": "sr-key:sr-s3cret",
             "ssl.ca.location": str(ca)}
        )  # fmt: skip
        prefix = AvroSerializer(client, SCHEMA)
        header = AvroSerializer(
            client, SCHEMA, conf={"schema.id.serializer": header_schema_id_serializer}
        )
        with running_pipeline(overrides) as (s, pipe):
            producer = Producer({"bootstrap.servers": bootstrap})
            for i in range(60):
                rec: dict[str, Any] = {f: None for f in FIELDS} | {
                    "device_id": f"d{i % 5}", "timestamp": 1764000000000 + i,
                    "cpu_temp_c": 55.0, "power_w": 300.0, "cpu_util_pct": 30.0,
                }  # fmt: skip
                headers: list[tuple[str, bytes]] = []
                ser = header if i % 2 else prefix
                value = ser(rec, SerializationContext(s.topics.raw, MessageField.VALUE, headers))
                producer.produce(
                    s.topics.raw, key=rec["device_id"].encode(), value=value, headers=headers
                )
            assert producer.flush(10) == 0
            scored = read_topic(bootstrap, s.topics.scored, until=60, timeout_s=60)
            dead = read_topic(bootstrap, s.topics.dlq, timeout_s=2, idle_s=1.0)
            log = "".join(p.read_text() for p in Path(pipe.log_dir).glob("*.log"))
        assert len(scored) == 60, f"{len(dead)} dead letters: {[d.value for d in dead[:2]]}"
        assert all(m.value[0] == 0 for m in scored)  # results in the wire format, registered
        paths = [path for _, path, _ in reg.requests]
        assert any(p.startswith("/schemas/guids/") for p in paths)  # header ids looked up
        assert any(p.startswith(f"/subjects/{s.topics.scored}-value/versions") for p in paths)
        assert all(authed for _, _, authed in reg.requests)
        assert "sr-s3cret" not in log

"""The dead-letter contract, from the places that refuse records: every ``sf-error-class`` a
stage writes names a class in ``streamflow.errors``, every ``ReasonCode`` is given by some
stage (chosen where the record is refused), and a stopped worker's exit status follows
``InfrastructureError.retriable``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from confluent_kafka import KafkaError
from prometheus_client import CollectorRegistry

import streamflow.errors
from streamflow.agents.clean import CleanHandler
from streamflow.agents.context import StageContext, decode_batches
from streamflow.agents.inference import InferenceHandler
from streamflow.agents.normalize import NormalizeHandler
from streamflow.codecs import RecordCodec, encode_record_batch
from streamflow.errors import (
    DEAD_LETTER_ERRORS,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    BrokerUnavailable,
    DeliveryError,
    InfrastructureError,
    ModelError,
    StreamflowError,
    exit_status,
)
from streamflow.headers import H_ERROR_CLASS, H_REASON, H_REASON_CODE, dead_letter
from streamflow.inference.session import load_model
from streamflow.kafka.transport import Chunk
from streamflow.metrics import Metrics
from streamflow.records import REASON_CODES, BytesColumn, OutMessage, ReasonCode, RecordBatch
from streamflow.settings import FeatureSpec, Settings, TransformSpec
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE, ROOT

SETTINGS = load_settings(PIPELINE, environ={})
AVRO = RecordCodec(str(ROOT / "schemas/telemetry_reading.avsc"))
GOOD: dict[str, Any] = {
    "device_id": "d",
    "timestamp": 1,
    "cpu_temp_c": 50.0,
    "power_w": 300.0,
    "cpu_util_pct": 5.0,
}


def ctx(settings: Settings = SETTINGS, stage: str = "clean") -> StageContext:
    metrics = Metrics.create(CollectorRegistry())
    return StageContext(settings, stage, metrics, producer=None)  # type: ignore[arg-type]


def raw(values: Sequence[bytes | None]) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(
            value=v, key=b"k", offset=i, timestamp=7, headers=[], topic="raw", partition=0
        )
        for i, v in enumerate(values)
    ]


def js(**fields: Any) -> bytes:
    return json.dumps({**GOOD, **fields}).encode()


def clean_letters(handler: CleanHandler, values: Sequence[bytes | None]) -> list[OutMessage]:
    _, rejected = handler.process("raw", 0, raw(values))
    assert len(rejected) == len(values), [r.reason for r in rejected]
    return [dead_letter(r, "dlq") for r in rejected]


def batch(features: np.ndarray) -> RecordBatch:
    n = len(features)
    return RecordBatch(
        "raw",
        0,
        np.arange(n, dtype=np.int64),
        np.zeros(n, np.int64),
        BytesColumn.from_list([b"k"] * n),
        BytesColumn.from_list([b"v"] * n),
        BytesColumn.from_list([b"d"] * n),
        np.ones(n, np.int64),
        np.asarray(features, dtype=np.float32),
    )


def every_dead_letter(monkeypatch: pytest.MonkeyPatch) -> list[OutMessage]:
    """A dead letter from every place that writes one."""
    letters: list[OutMessage] = []
    # clean: undecodable (DecodeError) and invalid (ValidationError) records
    letters += clean_letters(
        CleanHandler(ctx()),
        [
            b"",
            b"x" * (SETTINGS.limits.max_message_bytes + 1),
            b'{"device_id": ',
            json.dumps({k: v for k, v in GOOD.items() if k != "device_id"}).encode(),
            js(device_id="X").replace(b'"X"', b'"\xff"'),
            js(cpu_temp_c="hot"),
            AVRO.encode(GOOD)[:3],
            js(cpu_temp_c=None),
            js(power_w=float("nan")),
            js(power_w=-50.0),
        ],
    )
    registry = {"input.schema_registry_url": "mock://test-errors"}
    wire = CleanHandler(ctx(load_settings(PIPELINE, registry, environ={})))
    letters += clean_letters(wire, [b"\x00" + (4242).to_bytes(4, "big") + AVRO.encode(GOOD)])
    first = replace(SETTINGS.features[0], type="int")
    integer = replace(SETTINGS, features=(first, *SETTINGS.features[1:]))
    letters += clean_letters(CleanHandler(ctx(integer)), [js(cpu_temp_c=50.5)])
    status = FeatureSpec("status", type="category", vocabulary=("ok", "degraded"), required=True)
    category = replace(SETTINGS, features=(*SETTINGS.features, status))
    letters += clean_letters(CleanHandler(ctx(category)), [js(status="on fire")])
    buggy = CleanHandler(ctx())

    def bug(data: bytes) -> dict[str, Any]:
        raise ValueError("x")

    monkeypatch.setattr(buggy.kind.decoder, "_read_avro", bug)
    letters += clean_letters(buggy, [AVRO.encode(GOOD)])

    # normalize: a value log1p cannot take (the batch comes from clean, which would refuse it)
    features = np.zeros((2, len(SETTINGS.features)), np.float32)
    features[1, SETTINGS.feature_names.index("disk_read_mbps")] = -2.0
    _, rejected = NormalizeHandler(ctx(stage="normalize")).process(batch(features))
    letters += [dead_letter(r, "dlq") for r in rejected]

    # inference: a row the model scores non-finite
    model = load_model(SETTINGS)
    features[1] = np.nan
    inference = InferenceHandler(ctx(stage="inference"), model)
    _, rejected, _ = asyncio.run(inference.score([batch(features)]))
    letters += [dead_letter(r, "dlq") for r in rejected]

    # shed (batching.queue_policy = reject): raw records, internal batches, a corrupt internal batch
    c = ctx(stage="inference")
    monkeypatch.setattr(c, "send", letters.extend)
    c.shed([Chunk("raw", 0, raw([js()]), 1)], raw=True)
    internal = raw([encode_record_batch(batch(features[:1])), b"SFB1 not a batch"])
    c.shed([Chunk("p.internal.normalized", 0, internal, 2)], raw=False)
    assert decode_batches([Chunk("p.internal.normalized", 0, internal[1:], 1)], "inference", "dlq")[
        1
    ]

    # user transforms: a row one raises on (bisected), a row one refuses with a reason
    transforms = tuple(
        TransformSpec(f"tests.unit.stages.user_transforms:{name}")
        for name in ("poison", "refuse_hot")
    )
    transformed = CleanHandler(ctx(replace(SETTINGS, transforms=transforms)))
    dead: list[OutMessage] = []
    values = [js(cpu_temp_c=66.6), js(cpu_temp_c=95.0), js()]
    asyncio.run(transformed.run([Chunk("raw", 0, raw(values), 3)], dead))
    assert len(dead) == 2
    letters += dead

    # deliver: a result the sink topic refuses for good
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    refused = c.undeliverable(OutMessage(SETTINGS.topics.scored, b"r"), too_large)
    assert refused is not None
    return [*letters, refused]


def test_every_error_class_a_dead_letter_names_is_a_class_in_streamflow_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    letters = every_dead_letter(monkeypatch)
    names = {dict(m.headers or [])[H_ERROR_CLASS].decode() for m in letters}
    for name in names:
        cls = getattr(streamflow.errors, name, None)
        assert isinstance(cls, type) and issubclass(cls, StreamflowError), name
    assert names == {c.__name__ for c in DEAD_LETTER_ERRORS}
    # the values users see, as they were
    assert names == {
        "DecodeError",
        "ValidationError",
        "ModelError",
        "QueueFull",
        "DeliveryError",
        "TransformError",  # new with [[transforms]]
    }


def test_every_reason_code_is_given_where_a_record_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = [dict(m.headers or []) for m in every_dead_letter(monkeypatch)]
    given = {h[H_REASON_CODE].decode(): h[H_REASON].decode() for h in headers}
    assert set(given) == set(REASON_CODES) == {c.value for c in ReasonCode}, given
    assert given["other"].startswith("decode: internal error (ValueError: x)")
    assert given["not_integer"] == "cpu_temp_c: expected an integer, got 50.5"
    assert given["unknown_category"] == "status: 'on fire' is not in the vocabulary (ok, degraded)"
    assert given["corrupt_batch"].startswith("internal batch undecodable: record batch:")
    assert given["transform_error"] == "transform poison raised ValueError: 66.6 is cursed"
    assert given["transform_rejected"] == "transform refuse_hot: too hot to score"


def test_a_worker_stopped_by_a_retriable_fault_exits_75_else_70() -> None:
    assert (EX_SOFTWARE, EX_TEMPFAIL) == (70, 75)
    assert exit_status(InfrastructureError("registry away", retriable=True)) == EX_TEMPFAIL
    assert exit_status(BrokerUnavailable("no broker")) == EX_TEMPFAIL
    assert exit_status(BrokerUnavailable("embedded broker died", retriable=False)) == EX_SOFTWARE
    assert exit_status(DeliveryError("refused for good", retriable=False)) == EX_SOFTWARE
    assert exit_status(ModelError("cannot load")) == EX_SOFTWARE
    assert exit_status(RuntimeError("a bug")) == EX_SOFTWARE

"""The two baselines ``streamflow bench`` measures beside streamflow, on the same data and machine.

- ``limit``: a plain confluent-kafka loop. ``consume(5000, 5 ms)``, decode, clean, normalize, one
  ORT run per batch, encode, produce, async commit. No framework: the machine's limit for this
  work in Python. ``limit-<N>ms`` is the same loop with a consume wait (and
  ``fetch.wait.max.ms``) of N ms: ``limit-5ms`` names the latency reference explicitly (the same
  wait as ``limit`` today), ``limit-50ms`` a loop tuned for batches over latency.
- ``naive``: a per-record faust agent (``await topic.send`` per result), the way most faust
  code is written.

Both use streamflow's own codecs and stages, and write the same headers as streamflow
(source coordinates, ingest time), so one monitor measures all three systems.
Run as ``python -m streamflow.bench.baselines limit|naive --pipeline P --bootstrap B --raw T
--scored S --dlq D --group G [--wait-ms 5]``. Each prints ``ready`` once it has its partitions.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from streamflow.bench.systems import LIMIT_WAIT_MS
from streamflow.codecs import ReadingDecoder, ResultEncoder
from streamflow.headers import H_MODEL, H_MODEL_VERSION, batch_source_headers, dead_letter
from streamflow.inference.session import load_model
from streamflow.kafka.config import kafka_config, producer_config
from streamflow.kafka.transport import patch_fetch_wait
from streamflow.records import ReasonCode, Rejected
from streamflow.settings import Settings
from streamflow.settings.loading import load_settings
from streamflow.stages.clean import CleanRules, clean
from streamflow.stages.normalize import Normalizer, normalize

RawMessage = tuple[
    str, int, int, int, bytes | None, bytes
]  # topic, partition, offset, ingest_ms, key, value
Headers = list[tuple[str, bytes]]


class Work:
    """decode -> clean -> normalize -> score -> encode, on a list of raw messages."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.decoder = ReadingDecoder(s.input.schema, s.feature_names, format=s.input.format)
        self.rules = CleanRules.from_features(s.features)
        self.norm = Normalizer.from_features(s.features)
        self.model = load_model(s)
        self.encoder = ResultEncoder.from_file(s.output.schema, format=s.output.format)

    def run(
        self, msgs: Sequence[RawMessage], scored: str, dlq: str
    ) -> list[tuple[str, bytes, bytes | None, Headers]]:
        """(topic, partition, offset, ingest_ms, key, value) -> (topic, value, key, headers) to
        produce."""
        dec = self.decoder.decode_batch([m[5] for m in msgs])
        c = clean(dec.values, dec.missing, self.rules)
        n = normalize(c.values, self.norm)
        ok = c.ok & n.ok & np.array([e is None for e in dec.errors], dtype=bool)
        out: list[tuple[str, bytes, bytes | None, Headers]] = []
        idx = np.flatnonzero(ok)
        if len(idx):
            scores = self.model.run(n.values[idx])
            labels = np.where(scores >= self.s.model.threshold, "anomaly", "normal").tolist()
            now = time.time() * 1000
            ingest = np.array([msgs[i][3] for i in idx.tolist()], dtype=np.float64)
            rows = len(idx)
            values = self.encoder.encode(
                {
                    "device_id": [dec.device_ids[i] for i in idx.tolist()],
                    "timestamp": dec.event_ms[idx].tolist(),
                    "score": scores.tolist(),
                    "label": labels,
                    "model_name": [self.model.name] * rows,
                    "model_version": [self.model.version] * rows,
                    "latency_ms": (now - ingest).tolist(),
                },
                rows,
            )
            # The same headers as streamflow's results, built the same way (shared constant tuples).
            model = (
                (H_MODEL, self.model.name.encode()),
                (H_MODEL_VERSION, self.model.version.encode()),
            )
            for i, v in zip(idx.tolist(), values, strict=True):
                t, p, o, ing, k, _ = msgs[i]
                out.append((scored, v, k, batch_source_headers(t, p, (o,), (ing,), model)[0]))
        for i in np.flatnonzero(~ok).tolist():
            t, p, o, ing, k, v = msgs[i]
            reason = dec.errors[i] or c.reasons[i] or n.reasons[i] or "rejected"
            code = dec.codes[i] or c.codes[i] or n.codes[i] or ReasonCode.OTHER
            d = dead_letter(
                Rejected("clean", "ValidationError", reason, t, p, o, k, v, ing, code=code), dlq
            )
            out.append((dlq, d.value, d.key, d.headers or []))
        return out


def run_limit(s: Settings, a: argparse.Namespace) -> None:
    from confluent_kafka import Consumer, Producer

    work = Work(s)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    consumer = Consumer(
        kafka_config(s, a.bootstrap, logger="streamflow.librdkafka.bench")
        | {
            "group.id": a.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": max(1, round(a.wait_ms)),
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    producer = Producer(producer_config(s, a.bootstrap))

    def on_assign(c: Any, parts: Any) -> None:
        print("ready", flush=True)

    consumer.subscribe([a.raw], on_assign=on_assign)
    wait_s = a.wait_ms / 1000.0
    while not stop["now"]:
        batch = consumer.consume(5000, timeout=wait_s)
        msgs: list[RawMessage] = [
            (
                m.topic() or "",
                m.partition() or 0,
                m.offset() or 0,
                m.timestamp()[1],
                m.key(),
                m.value() or b"",
            )
            for m in batch
            if not m.error()
        ]
        if not msgs:
            producer.poll(0)
            continue
        for topic, value, key, headers in work.run(msgs, a.scored, a.dlq):
            while True:
                try:
                    producer.produce(topic, value, key, headers=cast(Any, headers))
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.poll(0)
        consumer.commit(asynchronous=True)
    producer.flush(10)
    consumer.close()


def run_naive(s: Settings, a: argparse.Namespace) -> None:
    import faust

    from streamflow.agents.app import make_app

    patch_fetch_wait(s.kafka.fetch_max_wait_ms)
    work = Work(s)
    app = make_app(s, "naive", a.bootstrap, chunked=False)  # faust as shipped
    source = app.topic(a.raw, key_serializer="raw", value_serializer="raw")
    topics = {
        a.scored: app.topic(a.scored, key_serializer="raw", value_serializer="raw"),
        a.dlq: app.topic(a.dlq, key_serializer="raw", value_serializer="raw"),
    }

    @app.agent(source)
    async def score_each(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            msg = (m.topic, m.partition, m.offset, int(m.timestamp * 1000), m.key, m.value or b"")
            for topic, value, key, headers in work.run([msg], a.scored, a.dlq):
                await topics[topic].send(key=key, value=value, headers=headers)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def assigned(app: Any, *args: Any, **kwargs: Any) -> None:
        print("ready", flush=True)

    faust.Worker(
        app, loglevel="warning", quiet=True, redirect_stdouts=False
    ).execute_from_commandline()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("system", choices=["limit", "naive"])
    for flag in ("--pipeline", "--bootstrap", "--raw", "--scored", "--dlq", "--group"):
        p.add_argument(flag, required=True)
    p.add_argument(
        "--wait-ms",
        type=float,
        default=LIMIT_WAIT_MS,
        help="limit: the consume wait (and fetch.wait.max.ms)",
    )
    p.add_argument("--set", action="append", default=[], help="SECTION.KEY=VALUE (the bench's)")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    user = dict(item.split("=", 1) for item in a.set)
    s = load_settings(
        a.pipeline, {**user, "kafka.bootstrap": a.bootstrap, "name": a.group.replace(".", "-")}
    )
    (run_limit if a.system == "limit" else run_naive)(s, a)
    sys.exit(0)


if __name__ == "__main__":
    main()

"""``streamflow bench inference``: the inference agent against a bare ``session.run`` on the
same batches.

For each batch size B, the same model-ready feature rows are scored twice in this process:

- raw: ``model.run(x[i:i+B])`` in a loop, nothing else (the ceiling);
- agent: the inference stage's own code path (``InferenceHandler.handle``) on internal batch
  messages of B records, pipelined as the worker does (``batching.max_in_flight``): decode,
  ONNX Runtime on its thread, result encoding, produce to the sink topic of a real broker and
  wait for its acknowledgements. Only Kafka's consumer side is left out.

efficiency = agent records/s / raw records/s. With a model as small as the demo MLP the
agent's per-record work (decode, Avro, produce) dominates and the efficiency is low; a model
that costs more per record than that work (a transformer) approaches 1. Optionally also the
whole pipeline's end-to-end latency at a fixed input rate (the ``bench e2e`` latency run).

A text-embedding pipeline gets token ids instead of feature rows: every record a text of
32 tokens ([CLS], random WordPiece ids, [SEP]; ``TextEmbeddingKind.sample_inputs``), as one
length bucket hands them on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from streamflow.agents.context import StageContext
from streamflow.agents.inference import InferenceHandler
from streamflow.broker import EmbeddedBroker
from streamflow.codecs import encode_record_batches
from streamflow.headers import INTERNAL_MESSAGE_BYTES
from streamflow.inference.kinds import kind_for
from streamflow.inference.session import LoadedModel, load_model
from streamflow.kafka.admin import ensure_topics
from streamflow.kafka.config import producer_config
from streamflow.kafka.producer import BatchProducer
from streamflow.kafka.transport import Chunk
from streamflow.metrics import Metrics
from streamflow.records import BytesColumn, RecordBatch
from streamflow.settings import Settings, with_overrides
from streamflow.steps import pipeline_topics, source_topic, step_named

CALLS_PER_SIZE = 2000


def bench_inputs(settings: Settings, model: LoadedModel, records: int) -> np.ndarray:
    """Model-ready rows, as the pipeline's model kind makes them for benchmarks."""
    return kind_for(settings).sample_inputs(records, model.n_features)


@dataclass
class Row:
    batch: int
    raw_records_per_s: float
    agent_records_per_s: float
    efficiency: float


@dataclass
class InferenceBench:
    model: str
    provider: str
    records: int
    rows: list[Row] = field(default_factory=list)
    latency: list[dict[str, Any]] = field(default_factory=list)


def raw_rate(model: LoadedModel, x: np.ndarray, batch: int) -> float:
    model.run(x[:batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        model.run(x[i : i + batch])
    return len(x) / (time.perf_counter() - t0)


def internal_messages(settings: Settings, x: np.ndarray, batch: int) -> list[Chunk]:
    """``x`` as normalize would hand it on: internal batch messages of ``batch`` records."""
    now = int(time.time() * 1000)
    chunks = []
    partitions = settings.internal_partitions
    for n, i in enumerate(range(0, len(x), batch)):
        rows = x[i : i + batch]
        k = len(rows)
        part = n % partitions
        b = RecordBatch(
            settings.topics.raw,
            part,
            np.arange(i, i + k, dtype=np.int64),
            np.full(k, now, np.int64),
            BytesColumn.from_list([b"dev-%d" % (j % 500) for j in range(i, i + k)]),
            BytesColumn.from_list([b""] * k),
            BytesColumn.from_list([b"dev-%d" % (j % 500) for j in range(i, i + k)]),
            np.full(k, now, np.int64),
            np.ascontiguousarray(rows, dtype=np.float32),
            stage="normalize",
        )
        records = [
            SimpleNamespace(offset=n * 10 + j, timestamp=now, key=None, value=data, headers=[])
            for j, data in enumerate(encode_record_batches(b, INTERNAL_MESSAGE_BYTES))
        ]
        chunks.append(Chunk(source_topic(settings, step_named("inference")), part, records, k))
    return chunks


async def agent_rate(handler: InferenceHandler, chunks: list[Chunk], max_in_flight: int) -> float:
    """Records/s through ``handler.handle`` and delivery, pipelined like the worker's loop."""
    in_flight: asyncio.Queue[asyncio.Future[asyncio.Future[None]]] = asyncio.Queue(
        maxsize=max_in_flight
    )

    async def acknowledge() -> None:
        while True:
            handling = await in_flight.get()
            await (await handling)
            in_flight.task_done()

    acker = asyncio.ensure_future(acknowledge())
    await (await handler.handle(chunks[:1]))  # warm-up: connections, first allocations
    t0 = time.perf_counter()
    for c in chunks:
        await in_flight.put(asyncio.ensure_future(handler.handle([c])))
    await in_flight.join()
    secs = time.perf_counter() - t0
    acker.cancel()
    return sum(c.weight for c in chunks) / secs


@contextmanager
def _broker(settings: Settings) -> Iterator[str]:
    if settings.kafka.bootstrap:
        yield settings.kafka.bootstrap
        return
    with EmbeddedBroker() as b:
        yield b.bootstrap


def bench_inference(
    settings: Settings,
    *,
    records: int,
    batch_sizes: list[int],
    rate: float = 0.0,
    seconds: float = 5.0,
    out_dir: str = "bench-results",
) -> int:
    model = load_model(settings)
    x = bench_inputs(settings, model, records)
    result = InferenceBench(model.name, model.provider, records)
    print(
        f"inference bench: model {model.name} {model.version} on {model.provider}, "
        f"up to {records:,} records "
        f"(at most {CALLS_PER_SIZE} calls) per batch size, the agent pipelined with "
        f"max_in_flight={settings.batching.max_in_flight}"
        + f"; inputs: {kind_for(settings).describe()}",
        flush=True,
    )
    with _broker(settings) as bootstrap:
        s = with_overrides(settings, kafka={"bootstrap": bootstrap})
        ensure_topics(bootstrap, pipeline_topics(s), settings=s)
        producer = BatchProducer(producer_config(s, bootstrap))
        try:
            handler = InferenceHandler(
                StageContext(s, "inference", Metrics.create(), producer), model
            )
            for b in batch_sizes:
                xb = x[
                    : min(len(x), CALLS_PER_SIZE * b)
                ]  # small batches: fewer records, same number of calls
                raw = raw_rate(model, xb, b)
                agent = asyncio.run(
                    agent_rate(handler, internal_messages(s, xb, b), s.batching.max_in_flight)
                )
                row = Row(b, round(raw), round(agent), round(agent / raw, 4))
                result.rows.append(row)
                print(
                    f"  batch {b:>5}: raw session.run {raw:>12,.0f} rec/s   "
                    f"agent {agent:>9,.0f} rec/s   "
                    f"efficiency {row.efficiency:.3f}",
                    flush=True,
                )
        finally:
            producer.close(10)
    if rate and kind_for(settings).synthetic != "telemetry":
        print("  (no latency run: its feeder produces telemetry records only)", flush=True)
    elif rate:
        from streamflow.bench import latency_run

        with EmbeddedBroker() if not settings.kafka.bootstrap else _nullbroker(settings) as broker:
            lat = latency_run("streamflow", settings, broker.bootstrap, rate, seconds, broker.pid)
            result.latency.append(asdict(lat))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d = Path(out_dir)
    d.mkdir(exist_ok=True)
    path = d / f"inference-{stamp}.json"
    path.write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(f"wrote {path}")
    return 0


@contextmanager
def _nullbroker(settings: Settings) -> Iterator[Any]:
    yield SimpleNamespace(bootstrap=settings.kafka.bootstrap, pid=None)

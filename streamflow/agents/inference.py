"""The inference agent: model-ready batches -> one scored result per record on the sink topic.

Batches from several partitions are concatenated (dynamic batching: up to
``batching.max_batch`` records, waiting at most ``batching.max_delay_ms``) and scored in
ONNX Runtime on a worker thread, so the event loop keeps consuming while the model runs.
A batch that fails in ONNX Runtime is split in halves until the failing rows are found:
only those are dead-lettered, the rest are scored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from streamflow.agents.batching import AdaptiveWait
from streamflow.agents.common import (
    H_MODEL,
    H_MODEL_VERSION,
    StageContext,
    batch_source_headers,
    dead_letter,
)
from streamflow.agents.hotswap import ModelWatcher
from streamflow.agents.normalize import batch_weight, decode_batches
from streamflow.agents.transport import Chunk
from streamflow.clients import OutMessage
from streamflow.codecs import ResultEncoder
from streamflow.inference import LoadedModel, load_model
from streamflow.metrics import observe_many
from streamflow.records import RecordBatch, Rejected, rejected_from_batch

log = logging.getLogger(__name__)


def score_rows(model: LoadedModel, x: np.ndarray, max_batch: int) -> tuple[np.ndarray, dict[int, str]]:
    """Scores for every row; rows ONNX Runtime fails on (found by bisection) get an error instead."""
    scores = np.full(len(x), np.nan)
    errors: dict[int, str] = {}

    def run(lo: int, hi: int) -> None:
        try:
            scores[lo:hi] = model.run(x[lo:hi])
        except Exception as exc:  # ORT raises its own exception types
            if hi - lo == 1:
                errors[lo] = f"model {model.name} failed on this record: {type(exc).__name__}: {str(exc)[:300]}"
                return
            mid = (lo + hi) // 2
            run(lo, mid)
            run(mid, hi)

    for start in range(0, len(x), max_batch):
        run(start, min(start + max_batch, len(x)))
    for row in np.flatnonzero(~np.isfinite(scores)).tolist():
        errors.setdefault(row, f"model {model.name} produced a non-finite score")
    return scores, errors


class InferenceHandler:
    stage = "inference"

    def __init__(self, ctx: StageContext, model: LoadedModel) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.watcher = ModelWatcher(model, lambda: load_model(s), s.model.watch_interval_s, self._swapped)
        self.source_topic = s.normalized_topic
        self.max_weight = s.batching.max_batch
        self.wait = AdaptiveWait(s.batching.max_delay_ms / 1000.0, s.slo.p99_latency_ms / 1000.0,
                                 adapt=s.batching.adapt_to_slo)
        self.preferred = tuple(sorted(s.batching.preferred_batch_sizes))
        self.weight = batch_weight
        self.encoder = ResultEncoder(s.output.schema, format=s.output.format,
                                     schema_registry_url=s.input.schema_registry_url, topic=s.topics.scored)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamflow-ort")
        self.threshold = s.model.threshold
        self._info(model, 1)

    @property
    def model(self) -> LoadedModel:
        return self.watcher.model

    def _info(self, model: LoadedModel, value: int) -> None:
        s = self.ctx.settings
        self.ctx.metrics.model_info.labels(s.name, model.name, model.version, model.sha256, model.provider,
                                           s.runtime.device).set(value)

    def _swapped(self, old: LoadedModel, new: LoadedModel) -> None:
        self._info(old, 0)
        self._info(new, 1)

    @property
    def within(self) -> float:
        return self.wait.wait_s

    def results(self, batch: RecordBatch, scores: np.ndarray, model: LoadedModel) -> list[OutMessage]:
        """One result per row, naming ``model``: the one that scored them."""
        s = self.ctx.settings
        now_ms = time.time() * 1000.0
        labels = np.where(scores >= self.threshold, "anomaly", "normal").tolist()
        values = self.encoder.encode_batch(
            batch.device_id_list(), batch.event_ms, scores, labels, model.name, model.version,
            now_ms - batch.ingest_ms.astype(np.float64),
        )
        model_headers = ((H_MODEL, model.name.encode()), (H_MODEL_VERSION, model.version.encode()))
        headers = batch_source_headers(batch.source_topic, batch.source_partition, batch.offsets.tolist(),
                                       batch.ingest_ms.tolist(), model_headers)
        topic = s.topics.scored
        return [OutMessage(topic, v, k, h) for v, k, h in zip(values, batch.keys.to_list(), headers, strict=True)]

    async def score(self, batches: Sequence[RecordBatch]) -> tuple[list[OutMessage], list[Rejected], list[RecordBatch]]:
        """Score ``batches`` in one ONNX Runtime call: (results, rows the model failed on, batches scored)."""
        s, m = self.ctx.settings, self.ctx.metrics
        out: list[OutMessage] = []
        rejected: list[Rejected] = []
        delivered: list[RecordBatch] = []
        if not sum(len(b) for b in batches):
            return out, rejected, delivered
        x = np.ascontiguousarray(np.concatenate([b.features for b in batches]), dtype=np.float32)
        model = self.watcher.current()  # the whole batch is scored and named by this one (hot swap)
        t0 = time.perf_counter()
        scores, errors = await asyncio.get_running_loop().run_in_executor(
            self.pool, score_rows, model, x, s.batching.max_batch)
        m.inference_seconds.labels(s.name, model.name).observe(time.perf_counter() - t0)
        start = 0
        for batch in batches:
            rows = np.arange(start, start + len(batch))
            start += len(batch)
            bad = [i for i, r in enumerate(rows.tolist()) if r in errors]
            if bad:
                rejected += rejected_from_batch(batch, np.array(bad), [errors[rows[i]] for i in bad],
                                                stage=self.stage, error_class="ModelError")
                keep = np.ones(len(batch), dtype=bool)
                keep[bad] = False
                batch, batch_scores = batch.select(keep), scores[rows][keep]
            else:
                batch_scores = scores[rows]
            if len(batch):
                out += self.results(batch, batch_scores, model)
                delivered.append(batch)
        return out, rejected, delivered

    def send(self, out: list[OutMessage], delivered: Sequence[RecordBatch]) -> asyncio.Future[None]:
        """Send results (and dead letters); observe end-to-end latency once the broker has them."""
        s, m = self.ctx.settings, self.ctx.metrics
        sent = self.ctx.send(out)
        if delivered:
            ingest = np.concatenate([b.ingest_ms for b in delivered]).astype(np.float64) / 1000.0

            def observe(f: asyncio.Future[None]) -> None:
                if not f.cancelled() and f.exception() is None:
                    latencies = time.time() - ingest
                    observe_many(m.end_to_end.labels(s.name), latencies)
                    self.wait.observe(latencies)
                    m.batch_wait.labels(s.name, self.stage).set(self.wait.wait_s)
                    if self.wait.p99_s == self.wait.p99_s:  # measured at least once (not NaN)
                        m.slo_headroom.labels(s.name).set(self.wait.headroom_s)

            sent.add_done_callback(observe)
        return sent

    async def handle(self, chunks: Sequence[Chunk]) -> asyncio.Future[None]:
        started = time.perf_counter()
        s = self.ctx.settings
        batches, out = decode_batches(chunks, self.stage, s.topics.dlq)
        n = sum(len(b) for b in batches)
        results, rejected, delivered = await self.score(batches)
        out += results + [dead_letter(r, s.topics.dlq) for r in rejected]
        self.ctx.account(n - len(rejected), rejected, started, n)
        return self.send(out, delivered)

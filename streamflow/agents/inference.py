"""The inference agent: model-ready batches -> one scored result per record on the sink topic.

Batches from several partitions are concatenated (dynamic batching: up to
``batching.max_batch`` records, waiting at most ``batching.max_delay_ms``) and scored in
ONNX Runtime on a worker thread, so the event loop keeps consuming while the model runs.
A batch that fails in ONNX Runtime is split in halves until the failing rows are found:
only those are dead-lettered, the rest are scored.

A text-embedding model gets padded token ids: batches of the same width (one length bucket)
are run together, each width in its own call, and each result carries the embedding and
the label of the nearest centroid (``LoadedModel.head``).
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
    PaddingTally,
    StageContext,
    batch_source_headers,
    dead_letter,
)
from streamflow.agents.hotswap import ModelWatcher
from streamflow.agents.normalize import batch_weight, decode_batches
from streamflow.agents.transport import Chunk
from streamflow.clients import OutMessage
from streamflow.codecs import ResultEncoder, TextResultEncoder
from streamflow.inference import LoadedModel, load_model
from streamflow.metrics import observe_many
from streamflow.records import RecordBatch, Rejected, rejected_from_batch
from streamflow.stages.text import model_inputs

log = logging.getLogger(__name__)


def score_rows(model: LoadedModel, x: np.ndarray, max_batch: int) -> tuple[np.ndarray, dict[int, str]]:
    """The model's output for every row (a score, or an embedding row); rows ONNX Runtime fails on
    (found by bisection) or that come out non-finite get an error instead."""
    scores = np.full(len(x), np.nan)
    errors: dict[int, str] = {}

    def run(lo: int, hi: int) -> None:
        nonlocal scores
        try:
            y = model.run(x[lo:hi])
            if y.ndim > 1 and scores.ndim == 1:  # an embedding per row: widen the output once
                scores = np.full((len(x), *y.shape[1:]), np.nan, dtype=y.dtype)
            scores[lo:hi] = y
        except Exception as exc:  # ORT raises its own exception types
            if hi - lo == 1:
                errors[lo] = f"model {model.name} failed on this record: {type(exc).__name__}: {str(exc)[:300]}"
                return
            mid = (lo + hi) // 2
            run(lo, mid)
            run(mid, hi)

    for start in range(0, len(x), max_batch):
        run(start, min(start + max_batch, len(x)))
    for row in np.flatnonzero(~np.isfinite(scores.reshape(len(x), -1)).all(axis=1)).tolist():
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
        out = dict(format=s.output.format, schema_registry_url=s.input.schema_registry_url, topic=s.topics.scored)
        # One encoder, for this pipeline's result schema (with a registry, only it is registered).
        self.text_encoder = TextResultEncoder(s.output.schema, **out) if s.is_text else None
        self.encoder = None if s.is_text else ResultEncoder(s.output.schema, **out)
        self.padding = PaddingTally()
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
        latency_ms = now_ms - batch.ingest_ms.astype(np.float64)
        if self.text_encoder is not None:  # scores: embeddings [n, D]
            assert model.head is not None  # a text-embedding model is loaded with its head
            labels, label_scores = model.head.label(scores)
            values = self.text_encoder.encode_batch(batch.device_id_list(), batch.event_ms, scores, labels,
                                                    label_scores, model.name, model.version, latency_ms)
        else:
            assert self.encoder is not None
            labels = np.where(scores >= self.threshold, "anomaly", "normal").tolist()
            values = self.encoder.encode_batch(batch.device_id_list(), batch.event_ms, scores, labels,
                                               model.name, model.version, latency_ms)
        model_headers = ((H_MODEL, model.name.encode()), (H_MODEL_VERSION, model.version.encode()))
        headers = batch_source_headers(batch.source_topic, batch.source_partition, batch.offsets.tolist(),
                                       batch.ingest_ms.tolist(), model_headers)
        topic = s.topics.scored
        return [OutMessage(topic, v, k, h) for v, k, h in zip(values, batch.keys.to_list(), headers, strict=True)]

    async def score(self, batches: Sequence[RecordBatch]) -> tuple[list[OutMessage], list[Rejected], list[RecordBatch]]:
        """Score ``batches`` in one ONNX Runtime call per feature width: (results, rows the model
        failed on, batches scored)."""
        s, m = self.ctx.settings, self.ctx.metrics
        out: list[OutMessage] = []
        rejected: list[Rejected] = []
        delivered: list[RecordBatch] = []
        if not sum(len(b) for b in batches):
            return out, rejected, delivered
        model = self.watcher.current()  # the whole batch is scored and named by this one (hot swap)
        # One call per feature width: tabular batches share theirs, text buckets each have their own.
        widths = sorted({b.features.shape[1] for b in batches if len(b)})
        batches = sorted((b for b in batches if len(b)), key=lambda b: widths.index(b.features.shape[1]))
        parts: list[np.ndarray] = []
        errors: dict[int, str] = {}
        t0 = time.perf_counter()
        start = tokens = 0
        for w in widths:
            group = [b for b in batches if b.features.shape[1] == w]
            x = np.ascontiguousarray(np.concatenate([b.features for b in group]), dtype=np.float32)
            if model.kind == "text-embedding":
                tokens += int(model_inputs(x, model.pad_id)[1].sum())
            y, err = await asyncio.get_running_loop().run_in_executor(
                self.pool, score_rows, model, x, s.batching.max_batch)
            parts.append(y)
            errors.update({start + r: e for r, e in err.items()})
            start += len(x)
        if model.kind == "text-embedding":
            self.padding.add(self.ctx, tokens, sum(b.features.size for b in batches), start * max(widths))
        width = max((p.shape[1] for p in parts if p.ndim == 2), default=0)
        if width:  # a group every row of which failed came back as one NaN per row
            parts = [p if p.ndim == 2 else np.full((len(p), width), np.nan, dtype=np.float32) for p in parts]
        scores = np.concatenate(parts)
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

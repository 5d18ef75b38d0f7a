"""The inference agent: model-ready batches -> one scored result per record on the sink topic.

Batches from several partitions are concatenated (dynamic batching: up to
``batching.max_batch`` records, waiting at most ``batching.max_delay_ms``) and scored in
ONNX Runtime on a worker thread, so the event loop keeps consuming while the model runs.
Poison rows are found by bisection (``inference/scoring.py``) and dead-lettered alone. Batches
of the same feature width are run together, each width in its own call (a text model's length
buckets); the model kind turns the outputs into results (``inference/kinds/``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from streamflow.agents.context import StageContext, batch_weight
from streamflow.agents.handler import StepHandler, StepOutput, transformed_away
from streamflow.errors import ModelError
from streamflow.headers import H_MODEL, H_MODEL_VERSION, batch_source_headers
from streamflow.inference.batching import AdaptiveWait
from streamflow.inference.hotswap import ModelWatcher
from streamflow.inference.kinds import Outputs, take_outputs
from streamflow.inference.monitoring import OutputMonitor
from streamflow.inference.scoring import SCORE_ERROR_CODE, score_rows
from streamflow.inference.session import LoadedModel, load_model
from streamflow.metrics import observe_many
from streamflow.records import OutMessage, Reason, RecordBatch, Rejected, rejected_from_batch
from streamflow.stages.transforms import transform_batch

log = logging.getLogger(__name__)


# Batches up to this many rows are scored on the event loop: the hop to ONNX Runtime's thread
# and back cost ~90 µs a batch (measured, one-row batches: 440 µs a batch in all), more than
# the run itself for a small model; larger ones run on the thread while the next is decoded.
INLINE_ROWS = 64


class InferenceHandler(StepHandler):
    stage = "inference"

    def __init__(self, ctx: StageContext, model: LoadedModel | None = None) -> None:
        super().__init__(ctx)
        s = ctx.settings
        model = (
            model if model is not None else load_model(s)
        )  # fails here, before joining the group
        self.watcher = ModelWatcher(
            model, lambda: load_model(s), s.model.watch_interval_s, self._swapped
        )
        self.wait = AdaptiveWait(
            s.batching.max_delay_ms / 1000.0,
            s.slo.p99_latency_ms / 1000.0,
            adapt=s.batching.adapt_to_slo,
        )
        self.preferred = tuple(sorted(s.batching.preferred_batch_sizes))
        assert model.kind is not None, "load_model gives every model its kind"
        self.kind = model.kind  # started with the model: its outputs and result fields are known
        self.kind.encoder  # noqa: B018  (the result schema, and its registration, at start-up)
        self.monitor = OutputMonitor(ctx.metrics, s.name)  # outputs and labels per model version
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamflow-ort")
        self._info(model, 1)

    @property
    def model(self) -> LoadedModel:
        return self.watcher.model

    def weight(self, record: Any) -> int:
        return batch_weight(record)

    def _info(self, model: LoadedModel, value: int) -> None:
        s = self.ctx.settings
        self.ctx.metrics.model_info.labels(
            s.name, model.name, model.version, model.sha256, model.provider, s.runtime.device
        ).set(value)

    def _swapped(self, old: LoadedModel, new: LoadedModel) -> None:
        self._info(old, 0)
        self._info(new, 1)

    @property
    def within(self) -> float:
        return self.wait.wait_s

    def results(self, batch: RecordBatch, outputs: Outputs, model: LoadedModel) -> list[OutMessage]:
        """One result per row, naming ``model``: the one that scored them."""
        now_ms = time.time() * 1000.0
        latency_ms = now_ms - batch.ingest_ms.astype(np.float64)
        kind = model.kind if model.kind is not None else self.kind  # after a hot swap: the new one
        values = kind.results(batch, outputs, model, latency_ms)
        self.monitor.observe(model.name, model.version, *kind.monitored(outputs))
        model_headers = ((H_MODEL, model.name.encode()), (H_MODEL_VERSION, model.version.encode()))
        headers = batch_source_headers(
            batch.source_topic,
            batch.source_partition,
            batch.offsets.tolist(),
            batch.ingest_ms.tolist(),
            model_headers,
        )
        topic = self.sink_topic
        return [
            OutMessage(topic, v, k, h)
            for v, k, h in zip(values, batch.keys.to_list(), headers, strict=True)
        ]

    async def score(
        self, batches: Sequence[RecordBatch]
    ) -> tuple[list[OutMessage], list[Rejected], list[RecordBatch]]:
        """Score ``batches`` in one ONNX Runtime call per feature width: (results, rows the model
        failed on, batches scored)."""
        s, m = self.ctx.settings, self.ctx.metrics
        out: list[OutMessage] = []
        rejected: list[Rejected] = []
        delivered: list[RecordBatch] = []
        if not sum(len(b) for b in batches):
            return out, rejected, delivered
        model = self.watcher.current()  # the whole batch is scored and named by this one (hot swap)
        # One call per feature width: tabular batches share theirs, text buckets each have
        # their own.
        widths = sorted({b.features.shape[1] for b in batches if len(b)})
        groups = [[b for b in batches if len(b) and b.features.shape[1] == w] for w in widths]
        scored: list[tuple[list[RecordBatch], Outputs, dict[int, str]]] = []
        xs: list[np.ndarray] = []
        t0 = time.perf_counter()
        for group in groups:
            x = np.ascontiguousarray(np.concatenate([b.features for b in group]), dtype=np.float32)
            xs.append(x)
            if len(x) <= INLINE_ROWS:  # the thread hop would cost more than the run
                y, errors = score_rows(model, x, s.batching.max_batch)
            else:
                y, errors = await asyncio.get_running_loop().run_in_executor(
                    self.pool, score_rows, model, x, s.batching.max_batch
                )
            scored.append((group, y, errors))
        self.kind.observe(xs, self.ctx)
        m.inference_seconds.labels(s.name, model.name).observe(time.perf_counter() - t0)
        for group, outputs, errors in scored:
            start = 0
            for batch in group:
                rows = np.arange(start, start + len(batch))
                start += len(batch)
                bad = [i for i, r in enumerate(rows.tolist()) if r in errors]
                keep = np.ones(len(batch), dtype=bool)
                if bad:
                    reasons = [Reason(SCORE_ERROR_CODE, errors[rows[i]]) for i in bad]
                    rejected += rejected_from_batch(
                        batch,
                        np.array(bad),
                        reasons,
                        stage=self.stage,
                        error_class=ModelError.__name__,
                    )
                    keep[bad] = False
                    batch = batch.select(keep)
                if not len(batch):
                    continue
                batch_outputs = take_outputs(outputs, rows[keep])
                if self.transforms:  # [[transforms]] at = "after_model"
                    done = transform_batch(self.transforms, batch, self.layout, batch_outputs)
                    rejected += transformed_away(batch, done, self.stage)
                    batch = done.batch
                    assert done.outputs is not None
                    batch_outputs = done.outputs
                if len(batch):
                    out += self.results(batch, batch_outputs, model)
                    delivered.append(batch)
        return out, rejected, delivered

    async def transform(self, inputs: Sequence[RecordBatch]) -> StepOutput:
        results, rejected, scored = await self.score(inputs)
        return StepOutput(rejected=rejected, results=results, scored=scored)

    def send(self, messages: list[OutMessage], out: StepOutput) -> asyncio.Future[None]:
        """Send results (and dead letters); observe end-to-end latency once the broker has them."""
        s, m = self.ctx.settings, self.ctx.metrics
        sent = self.ctx.send(messages)
        if out.scored:
            ingest = np.concatenate([b.ingest_ms for b in out.scored]).astype(np.float64) / 1000.0

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

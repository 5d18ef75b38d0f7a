"""The faust shell of one step: one faust app (and consumer group) per step, so each scales on
its own.

``run_stage`` runs one step's handler (``agents/handler.py``) in this process. faust owns
group membership, assignment and commits; the ``streamflow://`` transport hands fetched
chunks to a buffer the agent takes batches from; a batch's chunks are acked, in order, once
the handler's output is acknowledged by the broker. Several steps, each in its own process,
are the supervisor's business (``streamflow/supervisor.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import time
from typing import Any

from aiokafka.errors import IllegalStateError

from streamflow import logs
from streamflow.agents import heap
from streamflow.agents.app import DrainingWorker, make_app
from streamflow.agents.context import StageContext
from streamflow.agents.handler import Handler
from streamflow.errors import EX_SOFTWARE, exit_status
from streamflow.inference.gpu import Gpus
from streamflow.inference.kinds import require_valid
from streamflow.kafka.admin import ensure_topics, wait_ready
from streamflow.kafka.config import internal_compression, producer_config
from streamflow.kafka.producer import BatchProducer
from streamflow.kafka.transport import Chunk, ChunkBuffer, patch_fetch_wait
from streamflow.metrics import Metrics, build_info, multiprocess_enabled, serve
from streamflow.resources import version
from streamflow.settings import Settings
from streamflow.steps import handler_class, pipeline_topics, step_named, writes_internal_topic

log = logging.getLogger(__name__)
EXIT_STAGE_FAILED = EX_SOFTWARE  # 70; a retriable InfrastructureError exits EX_TEMPFAIL (75)

InFlight = tuple["asyncio.Future[asyncio.Future[None]]", list[Chunk]]


def build_handler(stage: str, ctx: StageContext) -> Handler:
    """The handler of step ``stage`` (or ``chained``), as ``streamflow.steps`` registers it."""
    handler: Handler = handler_class(step_named(stage))(ctx)
    return handler


class StageWorker:
    """One step's handler inside a faust app: take batches, hand them over pipelined, ack in
    order."""

    def __init__(self, settings: Settings, stage: str, bootstrap: str) -> None:
        self.settings, self.stage, self.bootstrap = settings, stage, bootstrap
        self.metrics = metrics = Metrics.create()
        # client.id names the stage on the broker side (its logs, quotas, request metrics)
        # a stage writing an internal topic compresses with its codec (topics.internal_configs)
        conf = producer_config(
            settings,
            bootstrap,
            **{"client.id": f"streamflow-{settings.name}-{stage}"},
            **(internal_compression(settings) if writes_internal_topic(settings, stage) else {}),
        )
        self.producer = BatchProducer(conf, on_delivered=self.delivered)
        self.ctx = StageContext(settings, stage, metrics, self.producer)
        self.handler = build_handler(
            stage, self.ctx
        )  # loads the model: fails here, before joining the group
        self.app = make_app(settings, stage, bootstrap)
        # The consumer hands fetched records straight to this buffer (kafka/transport.py); when it
        # is full a slow stage stops the fetching. Where a model runs (inference, chained) its size
        # and policy are batching.max_queue_records and queue_policy; the other steps hold two
        # batches.
        model_step = step_named(stage).model
        b = settings.batching
        self.buffer = ChunkBuffer(
            self.handler.max_weight,
            self.handler.weight,
            max_weight=b.max_queue_records if model_step else 0,
            policy=b.queue_policy if model_step else "wait",
        )
        self.app.chunk_buffer = self.buffer
        # the topics it consumes (the store: the sink topic and the dead-letter topic)
        self.source_topics: tuple[str, ...] = tuple(
            getattr(self.handler, "source_topics", (self.handler.source_topic,))
        )
        self.failure: list[BaseException] = []
        self.gpus = Gpus.open() if model_step else None
        self.in_flight: asyncio.Queue[InFlight] | None = None  # made on the app's loop
        self.draining = asyncio.Event()  # a stop signal came: take nothing more, finish what is out
        self.drained = (
            asyncio.Event()
        )  # ... and it is finished: every batch taken is delivered and acked
        self.running = (
            asyncio.Event()
        )  # the agent has started (a signal during start-up has nothing to drain)
        self._export_constants()

    def delivered(self, topic: str, ok: int, bad: int) -> None:
        self.metrics.produced.labels(self.settings.name, topic).inc(ok)
        if bad:
            self.metrics.delivery_errors.labels(self.settings.name, topic).inc(bad)

    def _export_constants(self) -> None:
        """The pipeline's objectives (the alert rules' thresholds), the GPUs and the build."""
        s, m = self.settings, self.metrics
        m.slo_p99_latency.labels(s.name).set(s.slo.p99_latency_ms / 1000)
        m.slo_dead_letter_ratio.labels(s.name).set(s.slo.max_dead_letter_ratio)
        m.slo_lag.labels(s.name).set(s.slo.max_lag_seconds)
        m.slo_input_drift.labels(s.name).set(s.monitoring.max_input_psi)  # StreamflowInputDrift
        m.build_info.labels(**build_info(version())).set(1)
        if self.gpus is not None:
            m.gpus.labels(s.name).set(len(self.gpus))

    def fail(self, exc: BaseException) -> None:
        """Not a bad record (those are dead-lettered): a fault in the stage itself. Stop the
        worker with an error, committing only what was acked, so a supervisor restarts it and
        the unacked batches are read again, instead of a live process that does nothing. The
        exit status is 75 (EX_TEMPFAIL) when the fault is a retriable ``InfrastructureError``
        (a registry or broker that did not answer: a restart after a wait helps), else 70."""
        if not self.failure:
            log.critical("stage %s failed, stopping the worker: %r", self.stage, exc, exc_info=exc)
            self.failure.append(exc)
            os.kill(os.getpid(), signal.SIGTERM)

    async def acknowledge(self, in_flight: asyncio.Queue[InFlight]) -> None:
        """Batches sent and not yet acknowledged by the broker, oldest first. The stage works on
        the next batch while the broker acknowledges the previous ones; a batch's input offsets
        are acked only once its output is acknowledged, and in order, so acks never leave gaps."""
        consumer: Any = self.app.consumer
        while True:
            handling, chunks = await in_flight.get()
            await (await handling)  # handled (decoded, scored, encoded), then delivered
            for chunk in chunks:
                if chunk.revoked:  # its partition left meanwhile: read again by its next owner
                    continue
                consumer.ack_chunk(chunk)
                self.ctx.processed(
                    chunk.topic, chunk.partition, chunk.last_offset, chunk.records[-1].timestamp
                )
            in_flight.task_done()

    async def shed(self, chunks: list[Chunk]) -> asyncio.Future[None]:
        return self.ctx.shed(chunks, raw=self.handler.source_topic == self.settings.topics.raw)

    async def agent(self) -> None:
        """Take batches from the buffer and hand them over, pipelined, until drained or failed."""
        self.running.set()
        pauses = [
            self.metrics.gc_pause.labels(self.settings.name, self.stage, str(g)) for g in range(3)
        ]
        frozen = heap.settle(self.settings.runtime.gc_threshold, lambda g, s: pauses[g].observe(s))
        log.debug("%d start-up objects frozen out of the garbage collector", frozen)
        # A step whose output lands later than it is handed over (the store: when a file is
        # published) says how many batches it may have out.
        limit = getattr(self.handler, "max_in_flight", self.settings.batching.max_in_flight)
        in_flight = self.in_flight = asyncio.Queue(maxsize=limit)
        acker = asyncio.create_task(self.acknowledge(in_flight))

        def acker_done(t: asyncio.Task[None]) -> None:
            exc = None if t.cancelled() else t.exception()
            if exc is not None:
                self.fail(exc)

        acker.add_done_callback(acker_done)
        labels = (self.settings.name, self.stage)
        fill, queue_delay, fetch_delay = (
            self.metrics.batch_fill.labels(*labels),
            self.metrics.queue_delay.labels(*labels),
            self.metrics.fetch_delay.labels(*labels),
        )
        handler, buffer = self.handler, self.buffer
        try:
            while not acker.done() and not self.draining.is_set():
                chunks = await buffer.take(handler.within, handler.preferred)
                if buffer.fetch_delays:
                    delays, buffer.fetch_delays = buffer.fetch_delays, []
                    for d in delays:
                        fetch_delay.observe(d)
                if chunks and chunks[0].shed:
                    await in_flight.put((asyncio.ensure_future(self.shed(chunks)), chunks))
                elif chunks:
                    fill.observe(sum(c.weight for c in chunks) / buffer.batch_weight)
                    queue_delay.observe(buffer.waited_s)
                    # Pipelined: the next batch is taken and decoded while this one is still in the
                    # model (ORT runs on its own thread) or on its way to the broker. Waits while
                    # max_in_flight batches are out.
                    await in_flight.put((asyncio.ensure_future(handler.handle(chunks)), chunks))
            if not acker.done():  # the acker acks what is still in flight (unless it fails)
                await asyncio.wait(
                    [asyncio.ensure_future(in_flight.join()), acker],
                    return_when=asyncio.FIRST_COMPLETED,
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.fail(exc)
        finally:
            acker.cancel()
            self.drained.set()  # after a failure too: only what was acked gets committed

    async def drain(self) -> None:
        """On SIGTERM/SIGINT, before faust stops anything: no batch is left half done, so a
        restart repeats nothing. Records fetched and not yet taken are simply not committed."""
        self.draining.set()
        self.buffer.wake()
        publish = getattr(self.handler, "drain", None)  # the store: publish the open files
        if publish is not None and self.running.is_set() and not self.failure:
            await publish()
        if self.running.is_set() and not self.failure:  # after a failure nothing more will be acked
            await self.drained.wait()
        consumer: Any = self.app.consumer
        await consumer.maybe_wait_for_commit_to_finish()  # commit() skips while another runs
        await consumer.force_commit()
        log.info(
            "stage %s drained: in-flight batches delivered, offsets committed %s",
            self.stage,
            {f"{tp.topic}[{tp.partition}]": o for tp, o in consumer._committed_offset.items()},
        )

    async def report_lag(self) -> None:
        """Lag per partition, in records and in seconds, and the GPUs' load."""
        s, m, ctx, stage = self.settings, self.metrics, self.ctx, self.stage
        consumer: Any = self.app.consumer
        for tp in consumer.assignment():
            if tp.topic not in self.source_topics:
                continue
            try:
                high = consumer.highwater(tp)
            except Exception:  # not fetched yet
                continue
            if high is None:  # assigned, nothing fetched yet (after a rebalance)
                continue
            nxt = ctx.next_offsets.get((tp.topic, tp.partition))
            if nxt is None:
                try:
                    nxt = await consumer.position(tp) or 0
                except IllegalStateError:  # revoked while this timer awaited (a rebalance)
                    continue
            lag = max(0, high - nxt)
            labels = (s.name, stage, tp.topic, str(tp.partition))
            m.consumer_lag.labels(*labels).set(lag)
            last_ms = ctx.last_timestamps_ms.get((tp.topic, tp.partition))
            if last_ms is not None:
                behind = max(0.0, time.time() - last_ms / 1000) if lag else 0.0
                m.consumer_lag_seconds.labels(*labels).set(behind)
        for g in self.gpus.sample() if self.gpus else ():
            m.gpu_utilization.labels(s.name, str(g.index)).set(g.utilization)
            m.gpu_memory_used.labels(s.name, str(g.index)).set(g.memory_used_bytes)
            m.gpu_memory_total.labels(s.name, str(g.index)).set(g.memory_total_bytes)

    def assigned(self, assigned: Any) -> None:
        """ "up" once the group join is done: before that no record would be processed."""
        s, source = self.settings, ", ".join(self.source_topics)
        mine = sorted(tp.partition for tp in assigned if tp.topic in self.source_topics)
        self.metrics.up.labels(s.name, self.stage).set(1)
        log.info(
            "stage %s consuming %s partitions %s as group %s at %s",
            self.stage,
            source,
            mine,
            s.group_id(self.stage),
            self.bootstrap,
        )

    def revoked(self, revoked: Any) -> None:
        """Records of revoked partitions are left to their new owner: the buffered ones are
        dropped, and those already taken (in the step, or out to the broker) are not acked
        (``Chunk.revoked``). The new owner reports their lag from now on (a frozen value here
        would hold alerts on)."""
        s, m, ctx = self.settings, self.metrics, self.ctx
        dropped = self.buffer.discard({(tp.topic, tp.partition) for tp in revoked})
        for tp in revoked:
            if tp.topic in self.source_topics:
                labels = (s.name, self.stage, tp.topic, str(tp.partition))
                m.consumer_lag.labels(*labels).set(0)
                m.consumer_lag_seconds.labels(*labels).set(0)
                ctx.next_offsets.pop((tp.topic, tp.partition), None)
                ctx.last_timestamps_ms.pop((tp.topic, tp.partition), None)
        if dropped:
            log.info(
                "stage %s: partitions revoked, %d buffered records left to their new owner",
                self.stage,
                dropped,
            )

    async def shutdown(self) -> None:
        """Before faust stops: every queued message delivered (or reported), scratch removed."""
        left = await asyncio.get_running_loop().run_in_executor(None, self.producer.close, 30.0)
        self.metrics.up.labels(self.settings.name, self.stage).set(0)
        shutil.rmtree(
            self.app.conf.datadir, ignore_errors=True
        )  # per-process scratch: no tables kept
        if left:
            log.error("stage %s: %d messages undelivered at shutdown", self.stage, left)

    def wire(self) -> None:
        """Register the agent, the lag timer and the rebalance and shutdown hooks on the app."""
        app = self.app
        topic = app.topic(*self.source_topics, key_serializer="raw", value_serializer="raw")

        @app.agent(topic, name=f"streamflow.{self.stage}")
        async def agent(stream: Any) -> None:
            await self.agent()

        @app.timer(interval=2.0)
        async def report_lag() -> None:
            await self.report_lag()

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode types receivers as sync
        async def assigned(app: Any, assigned: Any = (), **kwargs: Any) -> None:
            self.assigned(assigned)

        @app.on_partitions_revoked.connect  # type: ignore[arg-type]
        async def revoked(app: Any, revoked: Any = (), **kwargs: Any) -> None:
            self.revoked(revoked)  # first: chunks of these partitions, even taken ones, are stale
            leaving = getattr(self.handler, "revoked", None)  # the store publishes its open files
            if leaving is not None and not self.failure:
                await leaving([(tp.topic, tp.partition) for tp in revoked])

        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def flush_producer(app: Any, **kwargs: Any) -> None:
            await self.shutdown()

    def run(self, *, serve_metrics: bool) -> None:
        s = self.settings
        self.wire()
        if serve_metrics and not multiprocess_enabled():
            serve(self.metrics.registry, s.metrics.host, s.metrics.port)
            log.info("metrics at http://%s:%d/metrics", s.metrics.host, s.metrics.port)
        worker = DrainingWorker(
            self.app,
            self.drain,
            s.runtime.drain_timeout_s,
            quiet=True,
            redirect_stdouts=False,
            # streamflow.logs configured logging at start-up (--log-format, --log-level); mode
            # would replace the root handler with its own, on stdout, undoing JSON lines.
            override_logging=False,
        )
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            if not self.failure:
                raise
            raise SystemExit(exit_status(self.failure[0])) from exc


def run_stage(
    settings: Settings,
    stage: str,
    bootstrap: str,
    *,
    serve_metrics: bool = True,
) -> None:
    """Run one step's agent in this process until SIGINT/SIGTERM."""
    logs.bind(pipeline=settings.name, stage=stage)  # on each JSON log line
    patch_fetch_wait(
        settings.kafka.fetch_max_wait_ms,
        settings.kafka.fetch_idle_max_wait_ms,
        aiokafka_fetches=settings.kafka.fetch_client == "aiokafka",
    )
    require_valid(settings)
    wait_ready(bootstrap, settings.kafka.connect_timeout_s, settings=settings)
    ensure_topics(bootstrap, pipeline_topics(settings), settings=settings)
    StageWorker(settings, stage, bootstrap).run(serve_metrics=serve_metrics)

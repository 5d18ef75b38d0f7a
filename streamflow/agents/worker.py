"""faust shells: one faust app (and consumer group) per stage, so each stage scales on its own.

``run_stage`` runs one stage in this process. ``run_all`` runs every stage, each in its own
process (three processes use more than one core, and a crash in one is reported instead
of taking the others' state with it), and serves their summed metrics on one port.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from streamflow.agents.common import StageContext
from streamflow.agents.transport import ChunkBuffer
from streamflow.broker import die_with_parent, ensure_topics, pipeline_topics, wait_ready
from streamflow.clients import BatchProducer, faust_credentials, producer_config
from streamflow.errors import ConfigError
from streamflow.gpu import Gpus
from streamflow.metrics import Metrics, mark_process_dead, multiprocess_enabled, serve
from streamflow.settings import Settings

log = logging.getLogger(__name__)
STAGES = ("clean", "normalize", "inference")
CHAINED = "chained"


def process_stages(settings: Settings) -> tuple[str, ...]:
    """The agents ``worker --stage all`` (and demo, up) runs for this pipeline's topology."""
    return (CHAINED,) if settings.runtime.topology == "chained" else STAGES

_FETCH_MAX_WAIT_MS = 10
EXIT_STAGE_FAILED = 70  # EX_SOFTWARE: the stage hit an error it cannot dead-letter


def _patch_fetch_wait() -> None:
    """faust's aiokafka driver hard-codes fetch_max_wait_ms=1500; use ours (kafka.fetch_max_wait_ms).

    On the embedded broker a parked fetch is not woken by new data, so every hop would cost
    up to ~750 ms otherwise.
    """
    cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(cls, "_streamflow_patched", False):
        return
    original = cls._create_worker_consumer

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = _FETCH_MAX_WAIT_MS
        return consumer

    cls._create_worker_consumer = create
    cls._streamflow_patched = True


def make_app(settings: Settings, stage: str, bootstrap: str, *, chunked: bool = True) -> faust.App:
    k = settings.kafka
    # Per-process scratch (no tables are kept), owned by whoever runs the worker: a shared parent
    # made by another user would stop it with PermissionError.
    datadir = tempfile.mkdtemp(prefix=f"streamflow-faust-{settings.group_id(stage)}-")
    return faust.App(
        settings.group_id(stage),
        # streamflow:// is faust's aiokafka transport with chunked delivery (agents/transport.py)
        broker=f"{'streamflow' if chunked else 'kafka'}://{bootstrap}",
        broker_credentials=faust_credentials(settings),  # [kafka] TLS/SASL, as aiokafka takes them
        broker_session_timeout=k.session_timeout_s,
        broker_heartbeat_interval=k.heartbeat_interval_s,
        broker_commit_interval=k.commit_interval_s,
        broker_request_timeout=max(30.0, k.session_timeout_s * 2),
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=max(4 * 1024 * 1024, k.max_message_bytes * 2),
        broker_max_poll_records=5000,
        stream_buffer_maxsize=8192,
        stream_wait_empty=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=False,
        datadir=datadir,
        processing_guarantee="at_least_once",
    )


class DrainingWorker(faust.Worker):
    """faust's worker, draining the stage on the first SIGTERM/SIGINT before shutting down.

    faust's own shutdown cancels the agent and then stops the consumer: batches in flight
    would be produced but never committed, and repeated after a restart. The drain has to
    run while the consumer is still up, so it hooks the signal rather than a shutdown hook
    (``on_before_shutdown`` runs too late: mode gathers and cancels what is left).
    A second signal, or the drain timing out, shuts down at once (at-least-once still holds).
    """

    def __init__(self, app: faust.App, drain: Callable[[], Awaitable[None]], timeout_s: float,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._drain, self._drain_timeout_s = drain, timeout_s
        self._draining = False

    def _on_sigint(self) -> None:
        self._drain_then_stop(signal.SIGINT)

    def _on_sigterm(self) -> None:
        self._drain_then_stop(signal.SIGTERM)

    def _drain_then_stop(self, sig: signal.Signals) -> None:
        if self._draining:  # second signal: stop now
            self._schedule_shutdown(sig)
            return
        self._draining = True

        async def drain_then_stop() -> None:
            try:
                await asyncio.wait_for(self._drain(), self._drain_timeout_s)
            except TimeoutError:
                log.warning("drain did not finish within runtime.drain_timeout_s=%s; stopping anyway "
                            "(uncommitted batches are read again on restart)", self._drain_timeout_s)
            except Exception as exc:
                log.warning("drain failed, stopping anyway: %r", exc)
            finally:
                self._schedule_shutdown(sig)

        self.add_future(drain_then_stop())


def build_handler(stage: str, ctx: StageContext) -> Any:
    if stage == "clean":
        from streamflow.agents.clean import CleanHandler

        return CleanHandler(ctx)
    if stage == "normalize":
        from streamflow.agents.normalize import NormalizeHandler

        return NormalizeHandler(ctx)
    if stage == "inference":
        from streamflow.agents.inference import InferenceHandler
        from streamflow.inference import load_model

        return InferenceHandler(ctx, load_model(ctx.settings))
    if stage == CHAINED:
        from streamflow.agents.chained import ChainedHandler
        from streamflow.inference import load_model

        return ChainedHandler(ctx, load_model(ctx.settings))
    raise ConfigError(f"--stage: unknown stage {stage!r} (one of {', '.join(STAGES)}, {CHAINED}, all)")


def run_stage(settings: Settings, stage: str, bootstrap: str, *, serve_metrics: bool = True,
              loglevel: str = "info") -> None:
    """Run one stage's agent in this process until SIGINT/SIGTERM."""
    global _FETCH_MAX_WAIT_MS
    _FETCH_MAX_WAIT_MS = settings.kafka.fetch_max_wait_ms
    _patch_fetch_wait()
    from streamflow.validate import require_valid

    require_valid(settings)
    wait_ready(bootstrap, settings.kafka.connect_timeout_s, settings=settings)
    ensure_topics(bootstrap, pipeline_topics(settings), settings=settings)
    metrics = Metrics.create()
    def delivered(topic: str, ok: int, bad: int) -> None:
        metrics.produced.labels(settings.name, topic).inc(ok)
        if bad:
            metrics.delivery_errors.labels(settings.name, topic).inc(bad)

    # client.id names the stage on the broker side (its logs, quotas, request metrics)
    producer = BatchProducer(producer_config(settings, bootstrap, **{"client.id": f"streamflow-{settings.name}-{stage}"}),
                             on_delivered=delivered)
    ctx = StageContext(settings, stage, metrics, producer)
    handler = build_handler(stage, ctx)  # loads the model: fails here, before joining the group
    app = make_app(settings, stage, bootstrap)
    # The consumer hands fetched records straight to this buffer (see agents/transport.py); when
    # it is full a slow stage stops the fetching. Where a model runs (inference, chained) its size
    # and policy are batching.max_queue_records and queue_policy; the other stages hold two batches.
    model_stage = stage in ("inference", CHAINED)
    buffer = ChunkBuffer(handler.max_weight, handler.weight,
                         max_weight=settings.batching.max_queue_records if model_stage else 0,
                         policy=settings.batching.queue_policy if model_stage else "wait")
    app.streamflow_buffer = buffer  # type: ignore[attr-defined]
    topic = app.topic(handler.source_topic, key_serializer="raw", value_serializer="raw")
    failure: list[BaseException] = []

    def fail(exc: BaseException) -> None:
        # Not a bad record (those are dead-lettered): a fault in the stage itself. Stop the
        # worker with an error, committing only what was acked, so a supervisor restarts it
        # and the unacked batches are read again, instead of a live process that does nothing.
        if not failure:
            log.critical("stage %s failed, stopping the worker: %r", stage, exc, exc_info=exc)
            failure.append(exc)
            os.kill(os.getpid(), signal.SIGTERM)

    # Batches sent and not yet acknowledged by the broker, oldest first. The stage works on
    # the next batch while the broker acknowledges the previous ones; a batch's input offsets
    # are acked only once its output is acknowledged, and in order, so acks never leave gaps.
    in_flight: asyncio.Queue[tuple[asyncio.Future[asyncio.Future[None]], list[Any]]] = asyncio.Queue(
        maxsize=settings.batching.max_in_flight)

    async def acknowledge() -> None:
        consumer: Any = app.consumer
        while True:
            handling, chunks = await in_flight.get()
            await (await handling)  # handled (decoded, scored, encoded), then delivered
            for chunk in chunks:
                consumer.ack_chunk(chunk)
                ctx.processed(chunk.topic, chunk.partition, chunk.last_offset, chunk.records[-1].timestamp)
            in_flight.task_done()

    fill = metrics.batch_fill.labels(settings.name, stage)
    queue_delay = metrics.queue_delay.labels(settings.name, stage)
    preferred: tuple[int, ...] = getattr(handler, "preferred", ())
    for objective, value in (("p99_latency_seconds", settings.slo.p99_latency_ms / 1000),
                             ("dead_letter_ratio", settings.slo.max_dead_letter_ratio),
                             ("lag_seconds", settings.slo.max_lag_seconds)):
        metrics.slo.labels(settings.name, objective).set(value)
    gpus = Gpus.open() if model_stage else None
    if gpus is not None:
        metrics.gpus.labels(settings.name).set(len(gpus))

    async def shed(chunks: list[Any]) -> asyncio.Future[None]:
        return ctx.shed(chunks, raw=handler.source_topic == settings.topics.raw)

    draining = asyncio.Event()  # a stop signal came: take nothing more, finish what is out
    drained = asyncio.Event()  # ... and it is finished: every batch taken is delivered and acked
    running = asyncio.Event()  # the agent has started (a signal during start-up has nothing to drain)

    @app.agent(topic, name=f"streamflow.{stage}")
    async def agent(stream: Any) -> None:
        running.set()
        acker = asyncio.create_task(acknowledge())

        def acker_done(t: asyncio.Task[None]) -> None:
            exc = None if t.cancelled() else t.exception()
            if exc is not None:
                fail(exc)

        acker.add_done_callback(acker_done)
        try:
            while not acker.done() and not draining.is_set():
                chunks = await buffer.take(handler.within, preferred)
                if chunks and chunks[0].shed:
                    await in_flight.put((asyncio.ensure_future(shed(chunks)), chunks))
                elif chunks:
                    fill.observe(sum(c.weight for c in chunks) / buffer.batch_weight)
                    queue_delay.observe(buffer.waited_s)
                    # Pipelined: the next batch is taken and decoded while this one is still in the
                    # model (ORT runs on its own thread) or on its way to the broker.
                    await in_flight.put((asyncio.ensure_future(handler.handle(chunks)), chunks))  # waits while max_in_flight are out
            if not acker.done():  # the acker acks what is still in flight (unless it fails)
                await asyncio.wait([asyncio.ensure_future(in_flight.join()), acker],
                                   return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fail(exc)
        finally:
            acker.cancel()
            drained.set()  # after a failure too: only what was acked gets committed

    async def drain() -> None:
        """On SIGTERM/SIGINT, before faust stops anything: no batch is left half done, so a
        restart repeats nothing. Records fetched and not yet taken are simply not committed."""
        draining.set()
        buffer.wake()
        if running.is_set() and not failure:  # after a failure nothing more will be acked
            await drained.wait()
        consumer: Any = app.consumer
        await consumer.maybe_wait_for_commit_to_finish()  # commit() skips while another runs
        await consumer.force_commit()
        log.info("stage %s drained: in-flight batches delivered, offsets committed %s", stage,
                 {f"{tp.topic}[{tp.partition}]": o for tp, o in consumer._committed_offset.items()})

    @app.timer(interval=2.0)
    async def report_lag() -> None:
        consumer: Any = app.consumer
        for tp in consumer.assignment():
            if tp.topic != handler.source_topic:
                continue
            try:
                high = consumer.highwater(tp)
            except Exception:  # not fetched yet
                continue
            nxt = ctx.next_offsets.get((tp.topic, tp.partition))
            if nxt is None:
                nxt = await consumer.position(tp) or 0
            lag = max(0, high - nxt)
            labels = (settings.name, stage, tp.topic, str(tp.partition))
            metrics.consumer_lag.labels(*labels).set(lag)
            last_ms = ctx.last_timestamps_ms.get((tp.topic, tp.partition))
            if last_ms is not None:
                metrics.consumer_lag_seconds.labels(*labels).set(max(0.0, time.time() - last_ms / 1000) if lag else 0.0)
        for g in gpus.sample() if gpus else ():
            metrics.gpu_utilization.labels(settings.name, str(g.index)).set(g.utilization)
            metrics.gpu_memory_used.labels(settings.name, str(g.index)).set(g.memory_used_bytes)
            metrics.gpu_memory_total.labels(settings.name, str(g.index)).set(g.memory_total_bytes)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode types receivers as sync
    async def assigned(app: Any, assigned: Any = (), **kwargs: Any) -> None:
        # "up" once the group join is done: before that no record would be processed.
        mine = sorted(tp.partition for tp in assigned if tp.topic == handler.source_topic)
        metrics.up.labels(settings.name, stage).set(1)
        log.info("stage %s consuming %s partitions %s as group %s at %s", stage, handler.source_topic, mine,
                 settings.group_id(stage), bootstrap)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def revoked(app: Any, revoked: Any = (), **kwargs: Any) -> None:
        dropped = buffer.discard({(tp.topic, tp.partition) for tp in revoked})
        for tp in revoked:  # its new owner reports its lag; a frozen value here would hold alerts on
            if tp.topic == handler.source_topic:
                labels = (settings.name, stage, tp.topic, str(tp.partition))
                metrics.consumer_lag.labels(*labels).set(0)
                metrics.consumer_lag_seconds.labels(*labels).set(0)
                ctx.next_offsets.pop((tp.topic, tp.partition), None)
                ctx.last_timestamps_ms.pop((tp.topic, tp.partition), None)
        if dropped:
            log.info("stage %s: partitions revoked, %d buffered records left to their new owner", stage, dropped)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def flush_producer(app: Any, **kwargs: Any) -> None:
        left = await asyncio.get_running_loop().run_in_executor(None, producer.close, 30.0)
        metrics.up.labels(settings.name, stage).set(0)
        shutil.rmtree(app.conf.datadir, ignore_errors=True)  # per-process scratch: no tables are kept
        if left:
            log.error("stage %s: %d messages undelivered at shutdown", stage, left)

    if serve_metrics and not multiprocess_enabled():
        serve(metrics.registry, settings.metrics.host, settings.metrics.port)
        log.info("metrics at http://%s:%d/metrics", settings.metrics.host, settings.metrics.port)
    worker = DrainingWorker(app, drain, settings.runtime.drain_timeout_s, loglevel=loglevel, quiet=True,
                            redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if not failure:
            raise
        raise SystemExit(EXIT_STAGE_FAILED) from exc


def child_command(stage: str, argv_settings: list[str], bootstrap: str) -> list[str]:
    return [sys.executable, "-m", "streamflow.cli", "worker", "--stage", stage, "--bootstrap", bootstrap,
            *argv_settings]


class StageProcesses:
    """Every stage in its own child process, metrics summed on one endpoint."""

    def __init__(self, settings: Settings, bootstrap: str, argv_settings: list[str], *, log_dir: str = "",
                 stages: tuple[str, ...] = (), mp_dir: str = "", serve_metrics: bool = True) -> None:
        self.settings, self.bootstrap, self.argv_settings = settings, bootstrap, argv_settings
        self.stages = stages or process_stages(settings)
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        # Shared by several pipelines' processes (``worker --pipeline A --pipeline B``): one serves.
        self.mp_dir = mp_dir or tempfile.mkdtemp(prefix="streamflow-metrics-")
        self.serve_metrics = serve_metrics
        self.server: Any = None

    def start(self) -> None:
        self.procs = [(stage, self._spawn(i, stage)) for i, stage in enumerate(self.stages)]
        if self.serve_metrics:
            self.server = serve(None, self.settings.metrics.host, self.settings.metrics.port,
                                multiprocess_dir=self.mp_dir)

    def _spawn(self, index: int, stage: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=self.mp_dir, PYTHONUNBUFFERED="1")
        out: Any = None
        if self.log_dir:
            suffix = "" if self.stages.count(stage) == 1 else f"-{index}"
            out = open(Path(self.log_dir) / f"worker-{stage}{suffix}.log", "ab")  # noqa: SIM115
        try:
            return subprocess.Popen(child_command(stage, self.argv_settings, self.bootstrap),
                                    env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                    preexec_fn=die_with_parent, start_new_session=True)
        finally:
            if out is not None:
                out.close()  # the child has its own descriptor

    def restart(self, index: int, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Stop process ``index`` with ``sig`` (SIGKILL: a crash), start a fresh one in its place
        (it rejoins the stage's group); returns the old one's exit status."""
        stage, old = self.procs[index]
        if old.poll() is None:
            old.send_signal(sig)
        try:
            code = old.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            old.kill()
            code = old.wait()
        mark_process_dead(old.pid, self.mp_dir)
        self.procs[index] = (stage, self._spawn(index, stage))
        return code

    def dead(self) -> list[str]:
        return [f"{s} (exit {p.returncode})" for s, p in self.procs if p.poll() is not None]

    def stop(self, timeout_s: float = 30.0) -> None:
        for _, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for _, p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            mark_process_dead(p.pid, self.mp_dir)
        self._close_server()

    def kill(self) -> None:
        """SIGKILL every stage process now (an abort: no drain, uncommitted work is redone)."""
        for _, p in self.procs:
            if p.poll() is None:
                p.kill()
        for _, p in self.procs:
            p.wait()
            mark_process_dead(p.pid, self.mp_dir)
        self._close_server()

    def _close_server(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def run_all(pipelines: list[tuple[Settings, list[str]]], bootstrap: str, stage: str = "all") -> int:
    """``worker --stage all`` (every stage of the pipeline's topology) or several ``--pipeline``s:
    one process per stage and pipeline, supervised until a signal or a child's death, their
    metrics summed on one endpoint (the first pipeline's ``metrics.host:port``). So one worker
    (a pod, a compose service) can serve several pipelines, each with its own model."""
    groups: list[StageProcesses] = []
    mp_dir = tempfile.mkdtemp(prefix="streamflow-metrics-")
    for i, (settings, argv_settings) in enumerate(pipelines):
        wait_ready(bootstrap, settings.kafka.connect_timeout_s, settings=settings)
        ensure_topics(bootstrap, pipeline_topics(settings), settings=settings)
        stages = process_stages(settings) if stage == "all" else (stage,)
        groups.append(StageProcesses(settings, bootstrap, argv_settings, stages=stages, mp_dir=mp_dir,
                                     serve_metrics=i == 0))
    for g in groups:
        g.start()
    stop = {"signal": 0}

    def on_signal(signum: int, frame: Any) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    first = pipelines[0][0]
    for g in groups:
        print(f"streamflow: pipeline {g.settings.name}: stages {', '.join(g.stages)} running against {bootstrap}",
              flush=True)
    print(f"streamflow: metrics at http://{first.metrics.host}:{first.metrics.port}/metrics", flush=True)

    def dead() -> list[str]:
        return [f"{g.settings.name} {d}" for g in groups for d in g.dead()]

    while not stop["signal"] and not dead():
        time.sleep(0.2)
    died = dead()
    for g in groups:
        g.stop()
    if died and not stop["signal"]:
        print(f"streamflow: stage process died: {', '.join(died)}", file=sys.stderr)
        return 1
    return 0

"""``streamflow demo`` and ``streamflow up``: the whole pipeline on one machine.

The demo counts what a user would: it reads the result and dead-letter topics with its
own consumer, matches each message to its source record by the ``sf-source-*`` headers
(so a redelivered duplicate is counted once), and measures end-to-end latency as the time
a result becomes readable minus the raw message's Kafka timestamp.
"""

from __future__ import annotations

import logging
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streamflow.agents.common import H_INGEST_MS, H_REASON_CODE, H_SOURCE_OFFSET, H_SOURCE_PARTITION
from streamflow.agents.worker import STAGES, StageProcesses, process_stages
from streamflow.broker import EmbeddedBroker, ensure_topics, pipeline_topics
from streamflow.clients import kafka_config
from streamflow.collectors.produce import RawProducer, run_synthetic
from streamflow.errors import ConfigError
from streamflow.report import MetricsRecorder
from streamflow.settings import Settings
from streamflow.signals import install_stop_handler

log = logging.getLogger(__name__)
DRAIN_S = 20.0


@dataclass
class Tally:
    scored: int = 0
    dead: int = 0
    duplicates: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    first_ts: float = 0.0
    last_ts: float = 0.0

    @property
    def accounted(self) -> int:
        return self.scored + self.dead


class ResultMonitor(threading.Thread):
    """Reads the scored and dead-letter topics and tallies results of records ingested since ``since_ms``."""

    def __init__(self, settings: Settings, bootstrap: str, since_ms: int, *, keep_values: bool = False) -> None:
        super().__init__(name="streamflow-monitor", daemon=True)
        self.settings, self.since_ms = settings, since_ms
        self.values: dict[tuple[int, int], bytes] | None = {} if keep_values else None
        self.tally = Tally()
        self.lock = threading.Lock()
        self._stop_event = threading.Event()
        self.ready = threading.Event()  # set after the first fetch round trip
        self._seen: set[tuple[int, int]] = set()
        self.consumer = Consumer(kafka_config(settings, bootstrap, logger="streamflow.librdkafka.monitor") | {
            "group.id": f"streamflow-demo-monitor-{int(time.time())}", "enable.auto.commit": False,
            "fetch.wait.max.ms": 10})
        md = self.consumer.list_topics(timeout=10).topics
        t = settings.topics
        self.consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING)
                              for name in (t.scored, t.dlq) for p in md[name].partitions])

    def run(self) -> None:
        scored_topic = self.settings.topics.scored
        while not self._stop_event.is_set():
            # poll() returns as soon as one result is readable, then consume(timeout=0) takes what
            # else is already fetched: arrival times are not delayed by waiting for a full batch.
            first = self.consumer.poll(0.05)
            now = time.time()
            self.ready.set()
            if first is None:
                continue
            msgs = [first, *self.consumer.consume(5000, timeout=0)]
            with self.lock:
                for m in msgs:
                    if m.error():
                        continue
                    hdrs: Any = m.headers() or []
                    h: dict[str, bytes] = {k: v for k, v in hdrs if isinstance(v, bytes)}
                    ingest = int(h.get(H_INGEST_MS, b"0"))
                    if ingest < self.since_ms:
                        continue
                    src = (int(h.get(H_SOURCE_PARTITION, b"-1")), int(h.get(H_SOURCE_OFFSET, b"-1")))
                    if src in self._seen:
                        self.tally.duplicates += 1
                        continue
                    self._seen.add(src)
                    if m.topic() == scored_topic:
                        self.tally.scored += 1
                        if self.values is not None:
                            self.values[src] = m.value() or b""
                        self.tally.latencies_ms.append(now * 1000.0 - ingest)
                    else:
                        self.tally.dead += 1
                        self.tally.reasons[h.get(H_REASON_CODE, b"other").decode()] += 1
                    self.tally.first_ts = self.tally.first_ts or now
                    self.tally.last_ts = now
        self.consumer.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def percentiles(values: list[float], qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    if not values:
        return {f"p{int(q)}": float("nan") for q in qs} | {"max": float("nan")}
    arr = np.asarray(values)
    return {f"p{int(q)}": float(np.percentile(arr, q)) for q in qs} | {"max": float(arr.max())}


def scrape(url: str) -> dict[str, dict[str, float]]:
    """Per-stage totals from the metrics endpoint: {"records": {stage: n}, "lag": {stage: n}}."""
    out: dict[str, dict[str, float]] = {"records": {}, "lag": {}}
    try:
        text = urllib.request.urlopen(url, timeout=1).read().decode()
    except OSError:
        return out
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            stage = s.labels.get("stage", "")
            if s.name == "streamflow_records_total":
                out["records"][stage] = out["records"].get(stage, 0.0) + s.value
            elif s.name == "streamflow_consumer_lag_records":
                out["lag"][stage] = out["lag"].get(stage, 0.0) + s.value
    return out


class StatusLine:
    """A live status line on a terminal; a plain line every 5 s when stdout is not a TTY."""

    def __init__(self, metrics_url: str) -> None:
        self.url = metrics_url
        self.tty = sys.stdout.isatty()
        self.prev: dict[str, float] = {}
        self.prev_t = time.monotonic()
        self.last_print = 0.0

    def update(self, produced: int, tally: Tally, lock: threading.Lock) -> None:
        now = time.monotonic()
        if now - self.last_print < (1.0 if self.tty else 5.0):
            return
        m = scrape(self.url)
        dt = max(now - self.prev_t, 1e-3)
        rates = {s: (m["records"].get(s, 0.0) - self.prev.get(s, 0.0)) / dt for s in STAGES}
        self.prev, self.prev_t, self.last_print = dict(m["records"]), now, now
        with lock:
            recent = tally.latencies_ms[-5000:]
            dead = tally.dead
        pct = percentiles(recent)
        lag = sum(m["lag"].values())
        line = (f"produced {produced:>8} | " + " ".join(f"{s} {rates[s]:>7.0f}/s" for s in STAGES)
                + f" | lag {lag:>6.0f} | e2e p50 {pct['p50']:6.1f} ms p99 {pct['p99']:6.1f} ms | dlq {dead}")
        if self.tty:
            sys.stdout.write("\r\x1b[2K" + line)
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def end(self) -> None:
        if self.tty:
            sys.stdout.write("\n")


def summary(produced: int, tally: Tally, started: float, faults: dict[str, int]) -> str:
    pct = percentiles(tally.latencies_ms)
    elapsed = max((tally.last_ts or time.time()) - started, 1e-9)
    lines = [
        "streamflow demo summary",
        f"  produced       {produced}",
        f"  scored         {tally.scored}",
        f"  dead-lettered  {tally.dead}" + "".join(f"\n    {r:<18} {n}" for r, n in tally.reasons.most_common()),
        f"  accounted      {tally.accounted} of {produced}"
        + ("" if tally.accounted == produced else "  (INCOMPLETE)"),
        f"  duplicates     {tally.duplicates} (redelivered results, counted once)",
        f"  throughput     {tally.accounted / elapsed:,.0f} records/s (first produce to last result, {elapsed:.1f} s)",
        "  end-to-end latency (raw message timestamp -> result readable on the sink topic)",
        "    " + "  ".join(f"{k} {v:.1f} ms" for k, v in pct.items()),
        "  malformed records injected by the collector: "
        + ", ".join(f"{k} {v}" for k, v in sorted(faults.items())),
    ]
    return "\n".join(lines)


class LocalPipeline:
    """Embedded broker (unless a bootstrap is configured), topics and the three stage processes."""

    def __init__(self, settings: Settings, argv_settings: list[str]) -> None:
        self.settings, self.argv_settings = settings, argv_settings
        self.broker: EmbeddedBroker | None = None
        self.stages: StageProcesses | None = None
        self.log_dir = tempfile.mkdtemp(prefix="streamflow-logs-")

    @property
    def metrics_url(self) -> str:
        return f"http://{self.settings.metrics.host}:{self.settings.metrics.port}/metrics"

    def start(self) -> str:
        bootstrap = self.settings.kafka.bootstrap
        if not bootstrap:
            self.broker = EmbeddedBroker(log_path=f"{self.log_dir}/broker.log").start()
            bootstrap = self.broker.bootstrap
        ensure_topics(bootstrap, pipeline_topics(self.settings), settings=self.settings)
        self.stages = StageProcesses(self.settings, bootstrap, self.argv_settings, log_dir=self.log_dir)
        self.stages.start()
        self.bootstrap = bootstrap
        return bootstrap

    def wait_consuming(self, timeout_s: float = 60.0) -> bool:
        """Until every stage reports up (joined its group) or a stage process dies."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.stages and self.stages.dead():
                return False
            try:
                text = urllib.request.urlopen(self.metrics_url, timeout=1).read().decode()
                up = {s.labels["stage"] for f in text_string_to_metric_families(text) for s in f.samples
                      if s.name == "streamflow_worker_up" and s.value == 1}
                if up >= set(process_stages(self.settings)):
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        """Stop the stages (they drain and commit) and the broker. A signal meanwhile kills them."""
        def abort(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            signal.signal(signal.SIGINT, abort)
            signal.signal(signal.SIGTERM, abort)
        try:
            if self.stages:
                self.stages.stop()
            if self.broker:
                self.broker.stop()
        except KeyboardInterrupt:
            self.kill()

    def kill(self) -> None:
        """Abort: SIGKILL every child now (what a second Ctrl-C asks for). Nothing interrupts it."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.stages:
            self.stages.kill()
        if self.broker:
            self.broker.kill()


def report_line(settings: Settings, samples: Path) -> str:
    """Render the run's PNG (when matplotlib is there) and say where it is and how to redo it."""
    redo = f"streamflow report --samples {samples} --out run.png"
    try:
        from streamflow.report import from_samples, render  # matplotlib: the dev extra

        png = render(from_samples(samples, settings.name), samples.with_name("report.png"),
                     f"streamflow demo: pipeline {settings.name}")
    except ImportError:
        return f"  report    pip install matplotlib, then: {redo}"
    except ConfigError as exc:  # too short a run to plot
        return f"  report    none ({exc})"
    return f"  report    {png}  (again: {redo})"


def run_demo(settings: Settings, argv_settings: list[str], *, records: int, rate: float, seed: int = 0) -> int:
    stop = install_stop_handler()
    pipe = LocalPipeline(settings, argv_settings)
    print("streamflow demo: starting " + ("the embedded broker, " if not settings.kafka.bootstrap else "")
          + "the clean, normalize and inference stages and a synthetic collector", flush=True)
    try:
        bootstrap = pipe.start()
        print(f"  broker    {bootstrap}\n  metrics   {pipe.metrics_url}\n  logs      {pipe.log_dir}", flush=True)
        if not pipe.wait_consuming():
            print(f"streamflow demo: the stages did not start; see the logs in {pipe.log_dir}", file=sys.stderr)
            return 1
        recorder = MetricsRecorder(pipe.metrics_url, Path(pipe.log_dir) / "metrics.jsonl")
        recorder.start()
        started = time.time()
        monitor = ResultMonitor(settings, bootstrap, int(started * 1000) - 1)
        monitor.start()
        raw = RawProducer(settings, bootstrap)
        raw.producer.list_topics(timeout=10)  # connected before the first record is timed
        monitor.ready.wait(10)
        collector = threading.Thread(target=run_synthetic, name="collector", daemon=True,
                                     kwargs={"raw": raw, "rate": rate, "records": records, "seed": seed, "stop": stop})
        collector.start()
        status = StatusLine(pipe.metrics_url)
        print("  (Ctrl-C stops)" + (f"; stops by itself after {records} records are accounted for" if records else ""),
              flush=True)
        while not stop.is_set():
            time.sleep(0.1)
            status.update(raw.stats.produced, monitor.tally, monitor.lock)
            if pipe.stages and pipe.stages.dead():
                status.end()
                print(f"streamflow demo: a stage died: {', '.join(pipe.stages.dead())}; logs in {pipe.log_dir}",
                      file=sys.stderr)
                return 1
            if records and not collector.is_alive() and monitor.tally.accounted >= raw.stats.produced:
                break
        status.end()
        stop.set()
        collector.join(timeout=10)
        if monitor.tally.accounted < raw.stats.produced:
            print(f"streamflow demo: stopping; waiting up to {DRAIN_S:.0f} s for the "
                  f"{raw.stats.produced - monitor.tally.accounted} records in flight (Ctrl-C again to abort)", flush=True)
            deadline = time.monotonic() + DRAIN_S
            while monitor.tally.accounted < raw.stats.produced and time.monotonic() < deadline:
                time.sleep(0.1)
        monitor.stop()
        recorder.stop()
        print(summary(raw.stats.produced, monitor.tally, started, raw.stats.faults), flush=True)
        print(report_line(settings, recorder.path), flush=True)
        return 0 if (not records or monitor.tally.accounted == raw.stats.produced) else 1
    except KeyboardInterrupt:  # a second signal: abort
        pipe.kill()
        return 130
    finally:
        pipe.stop()


def run_up(settings: Settings, argv_settings: list[str]) -> int:
    stop = install_stop_handler()
    pipe = LocalPipeline(settings, argv_settings)
    try:
        bootstrap = pipe.start()
        ok = pipe.wait_consuming()
        t = settings.topics
        print(f"streamflow up: pipeline {settings.name} {'running' if ok else 'NOT running (see logs)'}\n"
              f"  bootstrap  {bootstrap}\n  produce to {t.raw}; results on {t.scored}; dead letters on {t.dlq}\n"
              f"  metrics    {pipe.metrics_url}\n  logs       {pipe.log_dir}\n  Ctrl-C stops", flush=True)
        if not ok:
            return 1
        while not stop.is_set():
            if pipe.stages and pipe.stages.dead():
                print(f"streamflow up: a stage died: {', '.join(pipe.stages.dead())}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    except KeyboardInterrupt:  # a second signal: abort
        pipe.kill()
        return 130
    finally:
        pipe.stop()

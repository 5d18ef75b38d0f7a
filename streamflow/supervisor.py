"""Stage processes: every step of a pipeline in a process of its own, supervised.

``StageProcesses`` starts one ``streamflow worker --stage X`` child per step (or per
pipeline and step), sums their metrics on one endpoint, restarts one on request and stops
them all (SIGTERM: each drains and commits). ``run_all`` is ``worker --stage all``: when a
child dies the others are stopped and the command exits non-zero, for the user's supervisor
(systemd, compose, k8s) to restart it. ``LocalPipeline`` adds the embedded broker and the
topics: what ``demo``, ``up`` and the integration tests run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from streamflow import logs
from streamflow.broker import EmbeddedBroker, die_with_parent
from streamflow.kafka.admin import ensure_topics, wait_ready
from streamflow.metrics import ChildProcess, mark_process_dead, serve
from streamflow.settings import Settings
from streamflow.steps import pipeline_topics, process_stages


def child_command(stage: str, argv_settings: list[str], bootstrap: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamflow.cli",
        *logs.cli_args(),  # the same log format and level as this process
        "worker",
        "--stage",
        stage,
        "--bootstrap",
        bootstrap,
        *argv_settings,
    ]


class StageProcesses:
    """Every stage in its own child process, metrics summed on one endpoint."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        argv_settings: list[str],
        *,
        log_dir: str = "",
        stages: tuple[str, ...] = (),
        mp_dir: str = "",
        serve_metrics: bool = True,
    ) -> None:
        self.settings, self.bootstrap, self.argv_settings = settings, bootstrap, argv_settings
        self.stages = stages or process_stages(settings)
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        # Shared by several pipelines' processes (``worker --pipeline A --pipeline B``): one serves.
        self.mp_dir = mp_dir or tempfile.mkdtemp(prefix="streamflow-metrics-")
        self.serve_metrics = serve_metrics
        self.server: Any = None
        # Whose process metrics this group's endpoint serves (run_all: every group's).
        self.peers: list[StageProcesses] = [self]

    def start(self) -> None:
        self.procs = [(stage, self._spawn(i, stage)) for i, stage in enumerate(self.stages)]
        if self.serve_metrics:
            self.server = serve(
                None,
                self.settings.metrics.host,
                self.settings.metrics.port,
                multiprocess_dir=self.mp_dir,
                children=lambda: [c for g in self.peers for c in g.children()],
            )

    def children(self) -> list[ChildProcess]:
        """The running stage processes, labelled for their ``process_*`` metrics: pipeline,
        stage and replica (0, 1, ... among processes of the same stage)."""
        out: list[ChildProcess] = []
        seen: dict[str, int] = {}
        for stage, p in list(self.procs):
            replica = seen[stage] = seen.get(stage, -1) + 1
            if p.poll() is None:
                labels = {"pipeline": self.settings.name, "stage": stage, "replica": str(replica)}
                out.append((labels, p.pid))
        return out

    def _spawn(self, index: int, stage: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=self.mp_dir, PYTHONUNBUFFERED="1")
        out: Any = None
        if self.log_dir:
            suffix = "" if self.stages.count(stage) == 1 else f"-{index}"
            out = open(Path(self.log_dir) / f"worker-{stage}{suffix}.log", "ab")  # noqa: SIM115
        try:
            return subprocess.Popen(
                child_command(stage, self.argv_settings, self.bootstrap),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                preexec_fn=die_with_parent,
                start_new_session=True,
            )
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
        groups.append(
            StageProcesses(
                settings,
                bootstrap,
                argv_settings,
                stages=stages,
                mp_dir=mp_dir,
                serve_metrics=i == 0,
            )
        )
    groups[0].peers = groups  # the one endpoint shows every group's process metrics
    for g in groups:
        g.start()
    stop = {"signal": 0}

    def on_signal(signum: int, frame: Any) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    first = pipelines[0][0]
    for g in groups:
        print(
            f"streamflow: pipeline {g.settings.name}: stages {', '.join(g.stages)} "
            f"running against {bootstrap}",
            flush=True,
        )
    print(
        f"streamflow: metrics at http://{first.metrics.host}:{first.metrics.port}/metrics",
        flush=True,
    )

    def dead() -> list[str]:
        return [f"{g.settings.name} {d}" for g in groups for d in g.dead()]

    while not stop["signal"] and not dead():
        time.sleep(0.2)
    died = dead()
    for g in groups:
        g.stop()
    if died and not stop["signal"]:
        logs.say(f"stage process died: {', '.join(died)}")
        return 1
    return 0


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
        self.stages = StageProcesses(
            self.settings, bootstrap, self.argv_settings, log_dir=self.log_dir
        )
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
                up = {
                    s.labels["stage"]
                    for f in text_string_to_metric_families(text)
                    for s in f.samples
                    if s.name == "streamflow_worker_up" and s.value == 1
                }
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

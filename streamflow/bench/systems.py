"""The systems a benchmark runs: streamflow's stage processes and the two baselines.

Each runs as separate processes, so CPU time and peak RSS are read from /proc the same
way for all of them; the broker's own CPU is not counted for any of them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamflow.broker import die_with_parent
from streamflow.kafka.admin import TopicSpec, ensure_topics
from streamflow.settings import Settings
from streamflow.settings.loading import load_settings
from streamflow.steps import pipeline_topics, process_stages
from streamflow.supervisor import StageProcesses

CLK_TCK = os.sysconf("SC_CLK_TCK")
LIMIT_WAIT_MS = 5.0  # ``limit``'s consume wait, the latency reference's (issue 13)


def consume_wait_ms(system: str) -> float | None:
    """The consume wait of a plain loop named ``limit`` or ``limit-<N>ms`` (None: not one)."""
    if system == "limit":
        return LIMIT_WAIT_MS
    m = re.fullmatch(r"limit-(\d+(?:\.\d+)?)ms", system)
    return float(m.group(1)) if m else None


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a live process, in seconds (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


@dataclass
class Run:
    """Topics of one measured run: a raw topic (shared or fresh) and this system's outputs."""

    system: str
    raw: str
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    @property
    def scored(self) -> str:
        return f"bench-{self.system}-{self.tag}.scored"

    @property
    def dlq(self) -> str:
        return f"bench-{self.system}-{self.tag}.dlq"

    @property
    def name(self) -> str:
        return f"bench-{self.system}-{self.tag}"


class System:
    """One system under test; ``start()`` returns once it has its partitions."""

    def __init__(
        self,
        kind: str,
        base: Settings,
        bootstrap: str,
        run: Run,
        *,
        replicas: int = 1,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        """``overrides``: the bench's own ``--set`` settings, given to every system (the bench's
        names, topics and ports win)."""
        self.overrides = dict(overrides or {})
        self.kind, self.base, self.bootstrap, self.run, self.replicas = (
            kind,
            base,
            bootstrap,
            run,
            replicas,
        )
        self.settings = load_settings(
            base.source,
            {
                **self.overrides,
                "name": run.name,
                "topics.raw": run.raw,
                "topics.scored": run.scored,
                "topics.dlq": run.dlq,
                "kafka.bootstrap": bootstrap,
                "metrics.port": str(_free_port()),
                "runtime.topology": "chained" if kind == "chained" else base.runtime.topology,
            },
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stages: StageProcesses | None = None
        self.log_dir = tempfile.mkdtemp(prefix=f"streamflow-bench-{kind}-")
        ensure_topics(bootstrap, pipeline_topics(self.settings), settings=self.settings)

    def start(self, timeout_s: float = 90.0) -> None:
        s = self.settings
        if self.kind in ("streamflow", "chained"):
            argv = ["--pipeline", s.source] + [
                a
                for k, v in {
                    **self.overrides,
                    "name": s.name,
                    "topics.raw": s.topics.raw,
                    "topics.scored": s.topics.scored,
                    "topics.dlq": s.topics.dlq,
                    "metrics.port": str(s.metrics.port),
                    "runtime.topology": s.runtime.topology,
                }.items()
                for a in ("--set", f"{k}={v}")
            ]
            self.stages = StageProcesses(
                s,
                self.bootstrap,
                argv,
                log_dir=self.log_dir,
                stages=tuple(st for st in process_stages(s) for _ in range(self.replicas)),
            )
            self.stages.start()
            from streamflow.supervisor import LocalPipeline

            probe = LocalPipeline(s, [])
            probe.stages = self.stages
            if not probe.wait_consuming(timeout_s):
                raise RuntimeError(f"streamflow stages did not start; logs in {self.log_dir}")
            self.procs = [p for _, p in self.stages.procs]
            return
        wait_ms = consume_wait_ms(self.kind)
        cmd = [
            sys.executable,
            "-m",
            "streamflow.bench.baselines",
            "limit" if wait_ms is not None else self.kind,
            "--pipeline",
            s.source,
            "--bootstrap",
            self.bootstrap,
            "--raw",
            s.topics.raw,
            "--scored",
            s.topics.scored,
            "--dlq",
            s.topics.dlq,
            "--group",
            s.name,
            *(["--wait-ms", str(wait_ms)] if wait_ms is not None else []),
            *(a for k, v in self.overrides.items() for a in ("--set", f"{k}={v}")),
        ]
        log = open(Path(self.log_dir) / f"{self.kind}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
        self.procs = [proc]
        ready = threading.Event()

        def watch() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.rstrip().endswith(b"ready"):  # faust may prefix terminal escape codes
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        if not ready.wait(timeout_s):
            self.stop()
            raise RuntimeError(f"{self.kind} did not get its partitions; log in {self.log_dir}")

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu_by_process(self) -> dict[str, float]:
        procs = (
            [(f"{st}#{i}", p) for i, (st, p) in enumerate(self.stages.procs)]
            if self.stages
            else [(f"{self.kind}#{i}", p) for i, p in enumerate(self.procs)]
        )
        return {name: proc_cpu_s(p.pid) for name, p in procs}

    def rss_mb(self) -> float:
        """Peak RSS of the largest process (a worker's footprint)."""
        return max((proc_peak_rss_mb(pid) for pid in self.pids()), default=0.0)

    def dead(self) -> bool:
        return any(p.poll() is not None for p in self.procs)

    def stop(self) -> None:
        if self.stages is not None:
            self.stages.stop()
            return
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class CpuSampler(threading.Thread):
    """Samples the CPU time of a system's processes (and the broker's) every ``interval_s``,
    so the CPU spent between two instants (first and last result) can be read afterwards:
    start-up (imports, model load, group join) is not counted as work on records."""

    def __init__(self, system: System, broker_pid: int | None, interval_s: float = 0.02) -> None:
        super().__init__(name="cpu-sampler", daemon=True)
        self.system, self.broker_pid, self.interval_s = system, broker_pid, interval_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            cpu = self.system.cpu_by_process()
            if self.broker_pid:
                cpu["broker"] = proc_cpu_s(self.broker_pid)
            self.samples.append((time.time(), cpu))
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)

    def at(self, t: float) -> dict[str, float]:
        """CPU seconds per process at time ``t`` (the last sample at or before it)."""
        before = [cpu for ts, cpu in self.samples if ts <= t]
        return before[-1] if before else (self.samples[0][1] if self.samples else {})

    def between(self, t0: float, t1: float) -> dict[str, float]:
        a, b = self.at(t0), self.at(t1)
        return {k: b[k] - a.get(k, 0.0) for k in b}


def _free_port() -> int:
    from streamflow.broker import free_port

    return free_port()


def fresh_raw_topic(bootstrap: str, settings: Settings) -> str:
    name = f"bench-raw-{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, [TopicSpec(name, settings.topics.partitions)], settings=settings)
    return name


TIMED_OUT = "still running when the bench stopped waiting"  # slow, not a loss


def wait_accounted(monitor: object, target: int, system: System, timeout_s: float) -> str:
    """Wait until ``target`` records are accounted for; '' then, else why the wait stopped short
    (a process exited, or the time ran out while the system was still working: slow, not a
    loss)."""
    deadline = time.monotonic() + timeout_s
    tally = monitor.tally  # type: ignore[attr-defined]
    while tally.accounted < target:
        if system.dead():
            return "a process of the system exited"
        if time.monotonic() >= deadline:
            return f"{TIMED_OUT} after {timeout_s:.0f} s"
        time.sleep(0.05)
    return ""


def set_overrides(argv: Sequence[str]) -> dict[str, str]:
    """The ``--set KEY=VALUE`` pairs of a command line (``cli.argv_settings``)."""
    pairs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--set"]
    return dict(p.split("=", 1) for p in pairs if "=" in p)

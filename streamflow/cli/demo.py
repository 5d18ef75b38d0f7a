"""``streamflow demo``: the whole pipeline on one machine, fed by a synthetic collector.

The demo counts what a user would (``streamflow.monitor.ResultMonitor``): it reads the result
and dead-letter topics with its own consumer, matches each message to its source record by the
``sf-source-*`` headers (so a redelivered duplicate is counted once), and measures end-to-end
latency as the time a result becomes readable minus the raw message's Kafka timestamp.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import threading
import time
from pathlib import Path

from streamflow.cli import argv_settings, load, settings_args
from streamflow.cli.report import MetricsRecorder
from streamflow.collectors.produce import RawProducer, run_synthetic
from streamflow.errors import ConfigError
from streamflow.monitor import ResultMonitor, Tally, percentiles, scrape
from streamflow.settings import Settings, with_overrides
from streamflow.signals import install_stop_handler
from streamflow.steps import STAGES
from streamflow.supervisor import LocalPipeline

log = logging.getLogger(__name__)
DRAIN_S = 20.0


class StatusLine:
    """A live status line on a terminal; a plain line every 5 s when stdout is not a TTY."""

    def __init__(self, metrics_url: str) -> None:
        self.url = metrics_url
        self.tty = sys.stdout.isatty()
        self.prev: dict[str, float] = {}
        self.prev_t = time.monotonic()
        self.last_print = 0.0

    def update(self, produced: int, tally: Tally, lock: threading.Lock) -> None:
        """Print the line again when it is due (every 1 s on a TTY, else every 5 s)."""
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
        line = (
            f"produced {produced:>8} | "
            + " ".join(f"{s} {rates[s]:>7.0f}/s" for s in STAGES)
            + f" | lag {lag:>6.0f} | e2e p50 {pct['p50']:6.1f} ms p99 {pct['p99']:6.1f} ms"
            + f" | dlq {dead}"
        )
        if self.tty:
            sys.stdout.write("\r\x1b[2K" + line)
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def end(self) -> None:
        """End the line on a TTY."""
        if self.tty:
            sys.stdout.write("\n")


def summary(produced: int, tally: Tally, started: float, faults: dict[str, int]) -> str:
    """The demo's closing report: counts, throughput, latency percentiles, injected faults."""
    pct = percentiles(tally.latencies_ms)
    elapsed = max((tally.last_ts or time.time()) - started, 1e-9)
    lines = [
        "streamflow demo summary",
        f"  produced       {produced}",
        f"  scored         {tally.scored}",
        f"  dead-lettered  {tally.dead}"
        + "".join(f"\n    {r:<18} {n}" for r, n in tally.reasons.most_common()),
        f"  accounted      {tally.accounted} of {produced}"
        + ("" if tally.accounted == produced else "  (INCOMPLETE)"),
        f"  duplicates     {tally.duplicates} (redelivered results, counted once)",
        f"  throughput     {tally.accounted / elapsed:,.0f} records/s"
        f" (first produce to last result, {elapsed:.1f} s)",
        "  end-to-end latency (raw message timestamp -> result readable on the sink topic)",
        "    " + "  ".join(f"{k} {v:.1f} ms" for k, v in pct.items()),
        "  malformed records injected by the collector: "
        + ", ".join(f"{k} {v}" for k, v in sorted(faults.items())),
    ]
    return "\n".join(lines)


def report_line(settings: Settings, samples: Path) -> str:
    """Render the run's PNG (when matplotlib is there) and say where it is and how to redo it."""
    redo = f"streamflow report --samples {samples} --out run.png"
    try:
        from streamflow.cli.report import from_samples, render  # matplotlib: the dev extra

        png = render(
            from_samples(samples, settings.name),
            samples.with_name("report.png"),
            f"streamflow demo: pipeline {settings.name}",
        )
    except ImportError:
        return f"  report    pip install matplotlib, then: {redo}"
    except ConfigError as exc:  # too short a run to plot
        return f"  report    none ({exc})"
    return f"  report    {png}  (again: {redo})"


def store_summary(settings: Settings, scored: int) -> str:
    """What the store holds once the pipeline has stopped: ``streamflow query --summary``."""
    from streamflow.cli.query import reader_of, summary_table, write_table
    from streamflow.store.files import StoreError
    from streamflow.store.query import open_store

    path = settings.store.path
    again = f"streamflow query --summary --set store.path={path}"
    try:
        store = open_store(settings)
        try:
            ((stored,),) = store.query("SELECT count(*) FROM results").fetchall()
            table = summary_table(store, settings)
        finally:
            store.close()
    except StoreError as exc:
        return f"  store     cannot read it: {exc}"
    out = io.StringIO()
    write_table(reader_of(table), out, max_rows=48)
    head = f"store {path}: {stored} results (this run scored {scored})  (again: {again})"
    return head + "\n" + "\n".join("  " + line for line in out.getvalue().splitlines())


def run_demo(
    settings: Settings, argv_settings: list[str], *, records: int, rate: float, seed: int = 0
) -> int:
    """Start the pipeline and the collector, show the status line, then print the summary.

    Exit 0; 1 when the stages do not start or die, or when ``records`` were asked for and not
    all of them were accounted for; 130 on a second Ctrl-C."""
    stop = install_stop_handler()
    pipe = LocalPipeline(settings, argv_settings)
    if not settings.store.path:  # the demo stores what it scores, beside its logs
        store = str(Path(pipe.log_dir) / "store")
        settings = with_overrides(settings, store={"path": store})
        argv_settings = [*argv_settings, "--set", f"store.path={store}"]
        pipe.settings, pipe.argv_settings = settings, argv_settings  # read by start()
    print(
        "streamflow demo: starting "
        + ("the embedded broker, " if not settings.kafka.bootstrap else "")
        + "the clean, normalize and inference stages and a synthetic collector",
        flush=True,
    )
    try:
        bootstrap = pipe.start()
        print(
            f"  broker    {bootstrap}\n  metrics   {pipe.metrics_url}\n  logs      {pipe.log_dir}"
            f"\n  store     {settings.store.path}",
            flush=True,
        )
        if not pipe.wait_consuming():
            print(
                f"streamflow demo: the stages did not start; see the logs in {pipe.log_dir}",
                file=sys.stderr,
            )
            return 1
        recorder = MetricsRecorder(pipe.metrics_url, Path(pipe.log_dir) / "metrics.jsonl")
        recorder.start()
        started = time.time()
        monitor = ResultMonitor(settings, bootstrap, int(started * 1000) - 1)
        monitor.start()
        raw = RawProducer(settings, bootstrap)
        raw.producer.list_topics(timeout=10)  # connected before the first record is timed
        monitor.ready.wait(10)
        collector = threading.Thread(
            target=run_synthetic,
            name="collector",
            daemon=True,
            kwargs={"raw": raw, "rate": rate, "records": records, "seed": seed, "stop": stop},
        )
        collector.start()
        status = StatusLine(pipe.metrics_url)
        print(
            "  (Ctrl-C stops)"
            + (f"; stops by itself after {records} records are accounted for" if records else ""),
            flush=True,
        )
        while not stop.is_set():
            time.sleep(0.1)
            status.update(raw.stats.produced, monitor.tally, monitor.lock)
            if pipe.stages and pipe.stages.dead():
                status.end()
                print(
                    f"streamflow demo: a stage died: {', '.join(pipe.stages.dead())}; "
                    f"logs in {pipe.log_dir}",
                    file=sys.stderr,
                )
                return 1
            if (
                records
                and not collector.is_alive()
                and monitor.tally.accounted >= raw.stats.produced
            ):
                break
        status.end()
        stop.set()
        collector.join(timeout=10)
        if monitor.tally.accounted < raw.stats.produced:
            print(
                f"streamflow demo: stopping; waiting up to {DRAIN_S:.0f} s for the "
                f"{raw.stats.produced - monitor.tally.accounted} records in flight "
                "(Ctrl-C again to abort)",
                flush=True,
            )
            deadline = time.monotonic() + DRAIN_S
            while monitor.tally.accounted < raw.stats.produced and time.monotonic() < deadline:
                time.sleep(0.1)
        monitor.stop()
        recorder.stop()
        print(summary(raw.stats.produced, monitor.tally, started, raw.stats.faults), flush=True)
        print(report_line(settings, recorder.path), flush=True)
        pipe.stop()  # the store step drains: it publishes its open files before it exits
        print(store_summary(settings, monitor.tally.scored), flush=True)
        return 0 if (not records or monitor.tally.accounted == raw.stats.produced) else 1
    except KeyboardInterrupt:  # a second signal: abort
        pipe.kill()
        return 130
    finally:
        pipe.stop()


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow demo [--records N] [--rate R] [--seed S]``."""
    d = sub.add_parser(
        "demo", help="embedded broker + all stages + synthetic collector, with a live status line"
    )
    d.add_argument(
        "--records",
        type=int,
        default=0,
        help="stop once this many records are accounted for (0: run until Ctrl-C)",
    )
    d.add_argument(
        "--rate", type=float, default=2000.0, help="records per second (0: as fast as possible)"
    )
    d.add_argument("--seed", type=int, default=0)
    settings_args(d)
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo (see ``run_demo``)."""
    return run_demo(
        load(args), argv_settings(args), records=args.records, rate=args.rate, seed=args.seed
    )

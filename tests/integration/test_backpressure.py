"""Backpressure: a stalled sink holds the inference worker's memory flat, and loses nothing.

The proxy in front of the broker holds the inference stage's produce requests (its sink) while
150,000 records wait upstream. The stage may have ``batching.max_in_flight`` batches out and
two batches buffered; beyond that it stops taking, its consumer stops fetching, and the
records wait in Kafka, not in the worker's memory.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from streamflow.collectors.produce import RawProducer, run_synthetic
from tests.integration.helpers import running_pipeline, wait_for
from tests.integration.kafka_proxy import broker_behind_proxy
from tests.integration.test_delivery import sources

pytestmark = pytest.mark.integration
N = 150_000
STALL_S = 20.0
RSS_BOUND_MB = 300.0  # the worker's whole resident memory, stalled with the backlog waiting
GROWTH_BOUND_MB = 10.0  # between the first and second half of the stall: flat, not creeping up


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_stalled_sink_keeps_the_worker_memory_bounded(
    pipeline_overrides: dict[str, str], tmp_path: Path
) -> None:
    with broker_behind_proxy(str(tmp_path / "broker.log")) as (broker, proxy):
        bootstrap = broker.advertise
        overrides = {
            **pipeline_overrides,
            "kafka.bootstrap": bootstrap,
            "runtime.topology": "stages",
            "kafka.delivery_timeout_s": "300",
        }  # the stall is shorter: no retries, just waiting
        with running_pipeline(overrides) as (settings, pipe):
            try:
                assert pipe.stages is not None
                inference = next(p for s, p in pipe.stages.procs if s == "inference")
                proxy.hold(f"streamflow-{settings.name}-inference")
                stats = run_synthetic(RawProducer(settings, bootstrap), rate=0, records=N, seed=3)
                assert stats.produced == N
                samples: list[float] = []
                t0 = time.monotonic()
                while time.monotonic() - t0 < STALL_S:
                    samples.append(rss_mb(inference.pid))
                    time.sleep(0.25)
                t = settings.topics
                during = len(sources(bootstrap, t.scored))
                half = len(samples) // 2
                peak, growth = max(samples), max(samples[half:]) - max(samples[:half])
                print(
                    f"\nstalled sink {STALL_S:.0f} s with {N} records waiting: inference RSS "
                    f"{samples[0]:.0f} -> peak {peak:.0f} MB (bound {RSS_BOUND_MB:.0f}), "
                    f"second-half growth {growth:+.1f} MB; {during} results out during the stall"
                )
                assert during < N // 10, "the sink was not stalled"
                assert not pipe.stages.dead()
                assert peak < RSS_BOUND_MB
                assert growth < GROWTH_BOUND_MB

                proxy.release()

                def all_out() -> tuple[Counter, Counter] | None:  # type: ignore[type-arg]
                    scored, dead = sources(bootstrap, t.scored), sources(bootstrap, t.dlq)
                    return (scored, dead) if len(set(scored) | set(dead)) >= N else None

                assert wait_for(all_out, timeout_s=180, interval_s=2), (
                    f"records missing; logs in {pipe.log_dir}"
                )
            finally:
                proxy.release()  # before the stages stop: they drain against it

"""Chaos: stage processes SIGKILLed at random moments while 100,000 records flow; nothing is lost.

A SIGKILL leaves no time to drain: a stage's replacement reads again from the last committed
offset, so what the killed process had handled since its last commit comes out twice. In a
stream at ``RATE`` records/s that is at most what arrives in one commit interval plus the
commit's own round trip, per kill, in a steady stream. A kill that lands while the stages catch
up (after an earlier kill and restart) repeats more: the stage then handles more than ``RATE``
per commit interval, and up to ``batching.max_in_flight`` batches of ``batching.max_batch``
records are handled and not yet acknowledged. Measured duplicates with three kills: 3,600-11,600
before December 2026's model-output and monitoring work, 16,000-32,600 after when the third kill
lands during the catch-up (an open finding: see the stop-10 closing note). The bound counts both
terms; the test asserts the duplicates stay under it (and that nothing is lost) and prints the
figures.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter

import pytest

from streamflow.collectors.produce import ProduceStats, RawProducer, run_synthetic
from streamflow.dedupe import Deduplicator
from streamflow.steps import STAGES
from tests.integration.helpers import read_topic, running_pipeline, wait_for
from tests.integration.test_delivery import sources

pytestmark = pytest.mark.integration
N = 100_000
RATE = 2500  # records/s: 40 s of input, room for at least three kills and restarts
COMMIT_ROUND_TRIP_S = 1.0  # a commit's own latency, and a batch's time between stages, on 2 cores


def test_stage_processes_killed_at_random_lose_nothing(
    pipeline_overrides: dict[str, str], bootstrap: str
) -> None:
    seed = int(os.environ.get("STREAMFLOW_CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    with running_pipeline({**pipeline_overrides, "runtime.topology": "stages"}) as (settings, pipe):
        assert pipe.stages is not None
        stats: list[ProduceStats] = []
        raw = RawProducer(settings, bootstrap)
        feeder = threading.Thread(
            target=lambda: stats.append(run_synthetic(raw, rate=RATE, records=N, seed=seed))
        )
        feeder.start()
        victims = rng.sample(STAGES, len(STAGES))  # each stage once, then at random
        kills: list[tuple[float, str]] = []
        started = time.monotonic()
        while feeder.is_alive() or len(kills) < 3:
            time.sleep(rng.uniform(2.0, 5.0))  # a random moment of a running stream
            stage = victims[len(kills)] if len(kills) < len(victims) else rng.choice(STAGES)
            index = next(i for i, (s, _) in enumerate(pipe.stages.procs) if s == stage)
            code = pipe.stages.restart(index, signal.SIGKILL)
            assert code == -signal.SIGKILL
            kills.append((round(time.monotonic() - started, 1), stage))
            # The replacement joins once the broker gives up on the killed member (session timeout).
            assert pipe.wait_consuming(90), f"{stage} did not come back; logs in {pipe.log_dir}"
        feeder.join()
        produced = stats[0]
        assert produced.produced == N and produced.failed == 0
        t = settings.topics

        def all_out() -> tuple[Counter, Counter] | None:  # type: ignore[type-arg]
            scored, dead = sources(bootstrap, t.scored), sources(bootstrap, t.dlq)
            return (scored, dead) if len(set(scored) | set(dead)) >= N else None

        result = wait_for(all_out, timeout_s=240, interval_s=3)
        assert result, f"records missing after {len(kills)} kills {kills}; logs in {pipe.log_dir}"
        scored, dead = result
        raw_sources = {(m.partition, m.offset) for m in read_topic(bootstrap, t.raw, until=N)}
        lost = raw_sources - set(scored) - set(dead)
        duplicates = sum(n - 1 for n in (scored + dead).values())
        b = settings.batching
        bound = len(kills) * (
            RATE * (settings.kafka.commit_interval_s + COMMIT_ROUND_TRIP_S)
            + b.max_in_flight * b.max_batch  # handled, not yet acknowledged: done again
        )
        print(
            f"\nchaos (seed {seed}): {N} records, {len(kills)} SIGKILLs {kills}, lost {len(lost)}, "
            f"duplicates {duplicates} (bound {bound:.0f}), dead-lettered {len(dead)} "
            f"(faults injected {sum(produced.faults.values())})"
        )
        assert not lost
        assert not set(scored) & set(
            dead
        )  # a record is either scored or dead-lettered, even when repeated
        assert (
            len(dead) >= sum(produced.faults.values()) * 0.9
        )  # the bad ones are in the dead-letter topic
        assert duplicates <= bound, f"seed {seed}: {duplicates} duplicates > {bound}"
        # A consumer de-duplicating by the source headers (streamflow.dedupe) sees each input once.
        dedupe = Deduplicator()
        kept = sum(
            dedupe.first_time(m.headers) for m in read_topic(bootstrap, t.scored, idle_s=0.5)
        )
        assert kept == len(scored) and dedupe.repeats == sum(n - 1 for n in scored.values())

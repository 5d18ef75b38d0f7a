"""Delivery against the real broker: a worker stopped mid-stream and restarted loses nothing,
and (SIGTERM drains) repeats nothing.

Regression: the chunking consumer treated faust's read offset after a seek (the committed
offset, i.e. the next record to read) as already handed over, and skipped one message per
partition on every restart or rebalance: a whole internal batch on the inner stages.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from streamflow.collectors.produce import RawProducer, run_synthetic
from tests.integration.helpers import read_topic, running_pipeline, wait_for

pytestmark = pytest.mark.integration
N = 12_000


def sources(bootstrap: str, topic: str) -> Counter[tuple[int, int]]:
    return Counter(
        (int(m.headers["sf-source-partition"]), int(m.headers["sf-source-offset"]))
        for m in read_topic(bootstrap, topic, idle_s=0.5)
    )


@pytest.mark.parametrize(
    "topology,stage,fetch_client",
    [
        ("stages", "clean", "aiokafka"),
        ("stages", "inference", "aiokafka"),
        ("chained", "chained", "aiokafka"),
        # librdkafka fetches, aiokafka keeps the group: the restart rebalances, re-assigns and
        # seeks it (kafka.fetch_client)
        ("stages", "normalize", "librdkafka"),
    ],
)
def test_a_worker_stopped_mid_stream_and_restarted_loses_nothing(
    pipeline_overrides: dict[str, str], bootstrap: str, topology: str, stage: str, fetch_client: str
) -> None:
    overrides = {
        **pipeline_overrides,
        "runtime.topology": topology,
        "kafka.fetch_client": fetch_client,
    }
    with running_pipeline(overrides) as (settings, pipe):
        raw = RawProducer(settings, bootstrap)
        feeder = threading.Thread(
            target=run_synthetic, kwargs={"raw": raw, "rate": 3000, "records": N, "seed": 7}
        )
        feeder.start()
        time.sleep(1.5)  # records are flowing through every stage
        assert pipe.stages is not None
        index = next(i for i, (s, _) in enumerate(pipe.stages.procs) if s == stage)
        code = pipe.stages.restart(index, signal.SIGTERM)  # a replacement starts at once
        assert code == 0, f"the stopped worker failed; logs in {pipe.log_dir}"
        feeder.join()
        t = settings.topics

        def all_out() -> tuple[Counter, Counter] | None:  # type: ignore[type-arg]
            scored, dead = sources(bootstrap, t.scored), sources(bootstrap, t.dlq)
            return (scored, dead) if len(scored) + len(dead) >= N else None

        result = wait_for(all_out, timeout_s=150, interval_s=2)
        assert result, f"not every record came out after the restart; logs in {pipe.log_dir}"
        scored, dead = result
        assert len(set(scored) | set(dead)) == N  # nothing lost
        # SIGTERM drains: the batches in flight are delivered and their offsets committed before
        # the worker stops, so its replacement repeats nothing.
        repeated = sorted(k for k, n in (scored + dead).items() if n > 1)
        print(
            f"{stage}: {len(scored) + len(dead)} records out, "
            f"{len(repeated)} repeated: {repeated[:10]}"
        )
        assert not repeated, f"records repeated after a drained stop; logs in {pipe.log_dir}"
        logs = "".join(p.read_text() for p in Path(pipe.log_dir).glob("*.log"))
        assert ("fetching with librdkafka" in logs) == (fetch_client == "librdkafka")

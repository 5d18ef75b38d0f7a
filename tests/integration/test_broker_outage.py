"""The broker stops answering mid-run (SIGSTOP: a hung broker or a network partition) and
comes back.

The workers must say so, keep running with their state, retry what they could not deliver
and carry on when it returns: every record comes out, none of them exits.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from streamflow.broker import EmbeddedBroker
from streamflow.collectors.produce import ProduceStats, RawProducer, run_synthetic
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE
from tests.integration.helpers import running_pipeline, wait_for
from tests.integration.test_delivery import sources
from tests.integration.test_pipeline_e2e import metric_sum, scrape

pytestmark = pytest.mark.integration
N = 60_000
OUTAGE_S = 12.0  # longer than the session timeout and the delivery timeout below


def test_workers_ride_out_a_broker_outage_and_lose_nothing(
    pipeline_overrides: dict[str, str], tmp_path: Path
) -> None:
    with EmbeddedBroker(log_path=str(tmp_path / "broker.log")) as broker:
        overrides = {
            **pipeline_overrides,
            "kafka.bootstrap": broker.bootstrap,
            "runtime.topology": "stages",
            "kafka.delivery_timeout_s": "3",
            "kafka.retry_backoff_s": "0.2",
            "kafka.retry_backoff_max_s": "2",
        }
        with running_pipeline(overrides) as (settings, pipe):
            try:
                assert pipe.stages is not None and broker.pid is not None
                feeder_settings = load_settings(
                    PIPELINE, {**pipeline_overrides, "kafka.bootstrap": broker.bootstrap}
                )
                stats: list[ProduceStats] = []
                raw = RawProducer(
                    feeder_settings, broker.bootstrap
                )  # librdkafka's 30 s: it waits the outage out
                # As fast as it goes: every stage is saturated, so each has output in flight when
                # the broker freezes (at a modest rate a stage is often idle between batches, and
                # an idle stage has nothing to retry).
                feeder = threading.Thread(
                    target=lambda: stats.append(run_synthetic(raw, rate=0, records=N, seed=5))
                )
                feeder.start()

                def scoring() -> bool:
                    return (
                        metric_sum(
                            scrape(pipe.metrics_url), "streamflow_records_total", stage="inference"
                        )
                        > 0
                    )

                assert wait_for(scoring, timeout_s=60, interval_s=0.05), (
                    f"nothing scored; logs in {pipe.log_dir}"
                )
                os.kill(broker.pid, signal.SIGSTOP)
                time.sleep(OUTAGE_S)
                assert not pipe.stages.dead(), "a worker exited during the outage"
                os.kill(broker.pid, signal.SIGCONT)
                feeder.join()
                assert stats[0].produced == N and stats[0].failed == 0
                t = settings.topics

                def all_out() -> tuple[Counter, Counter] | None:  # type: ignore[type-arg]
                    scored, dead = (
                        sources(broker.bootstrap, t.scored),
                        sources(broker.bootstrap, t.dlq),
                    )
                    return (scored, dead) if len(set(scored) | set(dead)) >= N else None

                result = wait_for(all_out, timeout_s=180, interval_s=2)
                assert result, f"records missing after the outage; logs in {pipe.log_dir}"
                assert not pipe.stages.dead(), "a worker exited after the outage"
                scored, dead = result
                samples = scrape(pipe.metrics_url)
                retries = metric_sum(samples, "streamflow_delivery_retries_total")
                logs = "".join(
                    p.read_text(errors="replace") for p in Path(pipe.log_dir).glob("worker-*.log")
                )
                duplicates = sum(n - 1 for n in (scored + dead).values())
                print(
                    f"\noutage {OUTAGE_S:.0f} s: {N} records, {len(set(scored) | set(dead))} out, "
                    f"{duplicates} duplicates, {retries:.0f} messages retried"
                )
                assert retries > 0, "the outage should have made deliveries time out and be retried"
                assert "retry" in logs and "failed for" in logs  # the operator is told
            finally:
                if broker.pid is not None:  # before the stages stop: they drain against it
                    os.kill(broker.pid, signal.SIGCONT)

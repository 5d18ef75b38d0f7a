"""Input drift, end to end: the telemetry pipeline's inputs drift halfway through the stream,
and a real Prometheus with deploy/prometheus/alerts.yml sees the PSI gauge move and
``StreamflowInputDrift`` fire, after staying silent on the undrifted half.

The first half is drawn like the model's training data (streamflow/model/train.py: the
synthetic generator with 5 % anomalies, readings spread over days, the training seed's fleet of
200 devices: another seed is another fleet, whose per-device humidity and voltage read as a PSI
up to about 0.25 when a window holds mostly one partition's quarter of the devices); the second
half continues the same stream with cpu_temp_c and power_w shifted by 4 training standard
deviations.

The drift window is 2,000 records (the pipeline's is 10,000) and each half twice that, so the
drifted half fills the window. The rule's ``for: 15m`` is rewritten to 3 s in a copy of
alerts.yml: pending, then firing, within the test.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamflow.collectors.produce import RawProducer
from streamflow.collectors.synthetic import TelemetryGenerator
from streamflow.settings import Settings
from streamflow.supervisor import LocalPipeline
from tests.conftest import ROOT
from tests.integration.helpers import running_pipeline, wait_for
from tests.integration.test_prometheus import PROM_DIR, Prometheus
from tests.integration.tls import require_tool

pytestmark = pytest.mark.integration

ALERT = "StreamflowInputDrift"
WINDOW = 2000
HALF = 2 * WINDOW  # records per half
SHIFT_STDS = 4.0
SHIFTED = {"cpu_temp_c", "power_w"}
TRAINING_SEED = 7  # streamflow/model/train.py's default
STATS = json.loads((ROOT / "models/telemetry-anomaly/stats.json").read_text())["features"]


def readings(gen: TelemetryGenerator, n: int, shift: bool) -> list[dict[str, Any]]:
    """The next n readings, one a minute of simulated time (a window of 2,000 spans more than a
    day's cycle); with ``shift``, SHIFTED moved up by SHIFT_STDS."""
    out = []
    for sample in gen.sample(n, interval_ms=60_000):
        rec = sample.record
        for name in SHIFTED if shift else ():
            if rec[name] is not None:
                rec[name] += SHIFT_STDS * STATS[name]["std"]
        out.append(rec)
    return out


def rules_with_short_for(d: Path) -> Path:
    """alerts.yml with StreamflowInputDrift's ``for: 15m`` made 3 s."""
    text = (PROM_DIR / "alerts.yml").read_text()
    head, rule = text.split(f"- alert: {ALERT}\n", 1)
    rule, n = re.subn(r"^(\s+)for: 15m$", r"\1for: 3s", rule, count=1, flags=re.M)
    assert n == 1, f"{ALERT}: no `for: 15m` to shorten"
    path = d / "alerts.yml"
    path.write_text(f"{head}- alert: {ALERT}\n{rule}")
    return path


@pytest.fixture()
def prometheus_binary() -> str:
    """Before the pipeline starts: without prometheus there is nothing to run it for."""
    return require_tool("prometheus", "prometheus")


@pytest.fixture()
def pipeline(pipeline_overrides: dict[str, str]) -> Iterator[tuple[Settings, LocalPipeline]]:
    with running_pipeline(
        {**pipeline_overrides, "monitoring.drift_window": str(WINDOW)}
    ) as running:
        yield running


def test_drift_gauge_moves_and_the_alert_fires_only_on_the_drifted_half(
    prometheus_binary: str, pipeline: tuple[Settings, LocalPipeline], bootstrap: str, tmp_path: Path
) -> None:
    settings, pipe = pipeline
    name, limit = settings.name, settings.monitoring.max_input_psi
    features = set(settings.feature_names)
    target = f"{settings.metrics.host}:{settings.metrics.port}"
    raw = RawProducer(settings, bootstrap)
    gen = TelemetryGenerator(seed=TRAINING_SEED, anomaly_rate=0.05, malformed_rate=0.0)
    started = time.monotonic()

    with Prometheus(prometheus_binary, tmp_path, target, rules_with_short_for(tmp_path)) as prom:
        psi = f'streamflow_input_drift_psi{{pipeline="{name}"}}'
        records = f'sum by (stage, outcome) (streamflow_records_total{{pipeline="{name}"}})'
        alert_series = f'ALERTS{{alertname="{ALERT}", pipeline="{name}"}}'

        def gauges() -> dict[str, float]:
            return {m["feature"]: v for m, v in prom.query(psi)}

        def send(records: list[dict[str, Any]]) -> None:
            for rec in records:
                raw.send_record(rec)
            assert raw.flush() == 0

        def counts() -> dict[str, float]:
            return {f"{m['stage']} {m['outcome']}": v for m, v in prom.query(records)}

        def scraped(total: int) -> bool:
            """Prometheus has scraped ``total`` records through clean and every good one through
            normalize, and the gauges set with the last of them."""
            n = counts()
            cleaned = n.get("clean ok", 0) + n.get("clean rejected", 0)
            normalized = n.get("normalize ok", 0) + n.get("normalize rejected", 0)
            return (
                cleaned >= total
                and normalized >= n.get("clean ok", 0) > 0
                and (set(gauges()) == features)
            )

        # Undrifted: every feature published, all under the threshold, the alert silent.
        send(readings(gen, HALF, shift=False))
        assert wait_for(lambda: scraped(HALF), timeout_s=60, interval_s=0.5), (
            f"normalize did not report {HALF} records and 16 gauges: {counts()}, "
            f"{gauges()}; logs in {pipe.log_dir}"
        )
        calm = {
            m["feature"]: v for m, v in prom.query(f"max by (feature) (max_over_time({psi}[10m]))")
        }
        assert set(calm) == features and max(calm.values()) < limit, calm
        rule = next(
            r for g in prom.api("rules")["groups"] for r in g["rules"] if r["name"] == ALERT
        )
        assert rule["health"] == "ok", rule
        assert prom.query(rule["query"]) == [], "the rule's expression holds on undrifted input"
        assert prom.query(f"count_over_time({alert_series}[10m])") == [], "alert while undrifted"
        calm_s = time.monotonic() - started

        # Drifted: the shifted features' gauges rise past the threshold, the alert fires.
        send(readings(gen, HALF, shift=True))

        def firing() -> set[str]:
            return {
                a["labels"]["feature"]
                for a in prom.api("alerts")["alerts"]
                if a["labels"].get("alertname") == ALERT
                and a["labels"].get("pipeline") == name
                and a["state"] == "firing"
            }

        assert wait_for(lambda: firing() == SHIFTED, timeout_s=60, interval_s=0.5), (
            f"firing: {firing()}; gauges {gauges()}; logs in {pipe.log_dir}"
        )
        now = gauges()
        assert all(now[f] > limit for f in SHIFTED), now
        assert all(v < limit for f, v in now.items() if f not in SHIFTED), now
        states = {
            (m["feature"], m["alertstate"])
            for m, _ in prom.query(f"count_over_time({alert_series}[10m])")
        }
        assert states == {(f, s) for f in SHIFTED for s in ("pending", "firing")}, states
        alert = next(a for a in prom.api("alerts")["alerts"] if a["labels"]["alertname"] == ALERT)
        notes = alert["annotations"]
        assert alert["labels"]["feature"] in notes["summary"] and "PSI" in notes["summary"]
        assert notes["runbook_url"].endswith(f"docs/runbooks.md#{ALERT.lower()}")

    print(
        f"\nundrifted: max PSI {max(calm.values()):.3f} ({max(calm, key=calm.__getitem__)}) "
        f"after {calm_s:.1f} s; drifted: "
        + ", ".join(f"{f} {now[f]:.2f}" for f in sorted(SHIFTED))
        + f"; firing after {time.monotonic() - started:.1f} s"
    )

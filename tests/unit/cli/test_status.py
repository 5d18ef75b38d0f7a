"""`streamflow status` from fake inputs: the stages it lists, the endpoints it reads, the report
and the JSON (the command on a running pipeline: tests/integration/test_status.py)."""

from __future__ import annotations

import io
import json

from prometheus_client import generate_latest

from streamflow.cli.status import (
    WorkerEndpoint,
    assemble,
    default_metrics_url,
    metrics_url,
    read_endpoint,
    render,
    scrape,
    stage_groups,
    to_json,
)
from streamflow.kafka.groups import GroupStatus, Member, PartitionLag
from streamflow.metrics import Metrics, build_info
from streamflow.settings import Settings
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE

URL = "http://127.0.0.1:9108/metrics"


def settings(**overrides: str) -> Settings:
    return load_settings(PIPELINE, {"kafka.bootstrap": "k:9092", **overrides}, environ={})


def group(
    name: str, topic: str, *, members: tuple[Member, ...] | None = (), lag: int = 0
) -> GroupStatus:
    rows = (
        PartitionLag(topic, 0, 100, 0, 100 + lag, 1, lag),
        PartitionLag(topic, 1, None, 0, 0, 0, 0),
    )
    return GroupStatus(name, (topic,), "stable", members, rows)


def groups_of(s: Settings, **lags: int) -> list[GroupStatus]:
    return [group(g, topics[0], lag=lags.get(stage, 0)) for stage, g, topics in stage_groups(s)]


def exposition(pipeline: str = "telemetry") -> str:
    """What a worker's endpoint serves, from the real instruments."""
    m = Metrics.create()
    m.build_info.labels(**build_info("0.1.0")).set(1)
    for stage in ("inference", "clean", "normalize"):
        m.up.labels(pipeline, stage).set(1)
    m.model_info.labels(pipeline, "old", "0.9", "aa", "CPUExecutionProvider", "auto").set(0)
    m.model_info.labels(
        pipeline, "anomaly", "1.0.0", "ab" * 32, "CPUExecutionProvider", "auto"
    ).set(1)
    m.up.labels("other", "clean").set(1)
    return generate_latest(m.registry).decode()


def test_each_stage_of_the_topology_is_listed_with_its_group_and_source() -> None:
    s = settings()
    assert stage_groups(s) == [
        ("clean", "streamflow-telemetry-clean", ("telemetry.raw",)),
        ("normalize", "streamflow-telemetry-normalize", ("telemetry.internal.cleaned",)),
        ("inference", "streamflow-telemetry-inference", ("telemetry.internal.normalized",)),
    ]
    chained = stage_groups(settings(**{"runtime.topology": "chained", "store.path": "/tmp/x"}))
    assert chained == [
        ("chained", "streamflow-telemetry-chained", ("telemetry.raw",)),
        ("store", "streamflow-telemetry-store", ("telemetry.scored", "telemetry.dlq")),
    ]


def test_metrics_urls_take_host_port_and_ask_a_wildcard_bind_on_loopback() -> None:
    assert metrics_url("w1:9108") == "http://w1:9108/metrics"
    assert metrics_url("https://w1/custom") == "https://w1/custom"
    assert metrics_url("http://w1:9108/") == "http://w1:9108/metrics"
    assert default_metrics_url(settings()) == "http://127.0.0.1:9108/metrics"
    assert default_metrics_url(settings(**{"metrics.host": "0.0.0.0"})) == URL
    assert default_metrics_url(settings(**{"metrics.host": "::"})) == "http://[::1]:9108/metrics"


def test_an_endpoint_reports_the_model_in_use_and_the_stages_up_for_this_pipeline() -> None:
    w = read_endpoint(URL, exposition(), "telemetry")
    assert w.reachable and w.version == "0.1.0"
    assert w.stages_up == ("inference", "clean", "normalize")  # not the other pipeline's
    assert [(m.name, m.version, m.provider, m.device) for m in w.models] == [
        ("anomaly", "1.0.0", "CPUExecutionProvider", "auto")  # the swapped-out one (0) is not
    ]


def test_an_endpoint_that_does_not_answer_is_reported_with_the_reason() -> None:
    w = scrape("http://127.0.0.1:1/metrics", "telemetry", timeout_s=2)
    assert not w.reachable and "refused" in w.error.lower()


def test_json_has_every_stage_partition_model_and_endpoint() -> None:
    s = settings()
    workers = [
        read_endpoint(URL, exposition(), "telemetry"),
        WorkerEndpoint("http://x/m", False, "refused"),
    ]
    doc = json.loads(json.dumps(to_json(assemble(s, "k:9092", groups_of(s, clean=7), workers))))
    assert list(doc) == ["pipeline", "topology", "bootstrap", "stages", "models", "workers"]
    clean = doc["stages"][0]
    assert list(clean) == [
        "stage", "group", "topics", "state", "up", "lag", "error", "missing_topics", "members",
        "partitions",
    ]  # fmt: skip
    assert (clean["stage"], clean["group"], clean["up"], clean["lag"]) == (
        "clean", "streamflow-telemetry-clean", True, 7,
    )  # fmt: skip
    assert clean["partitions"][0] == {
        "topic": "telemetry.raw", "partition": 0, "committed": 100, "end": 107, "log_start": 0,
        "high_watermark": 1, "lag": 7,
    }  # fmt: skip
    assert clean["partitions"][1]["committed"] is None
    assert doc["models"] == [
        {"name": "anomaly", "version": "1.0.0", "sha256": "ab" * 32,
         "provider": "CPUExecutionProvider", "device": "auto"},
    ]  # fmt: skip
    assert doc["workers"][0]["stages_up"] == ["clean", "normalize", "inference"]  # pipeline order
    assert doc["workers"][1] == {
        "url": "http://x/m", "reachable": False, "error": "refused", "version": "",
        "stages_up": [],
    }  # fmt: skip


def test_members_show_with_their_assignment_or_as_not_reported() -> None:
    s = settings()
    member = Member(
        "c-1-uuid", "faust-0.15.3", "/10.0.0.5", (("telemetry.raw", 0), ("telemetry.raw", 1))
    )
    groups = groups_of(s)
    groups[0] = group("streamflow-telemetry-clean", "telemetry.raw", members=(member,))
    groups[1] = group("streamflow-telemetry-normalize", "telemetry.internal.cleaned", members=None)
    status = assemble(s, "k:9092", groups, [])
    doc = to_json(status)
    assert doc["stages"][0]["members"] == [
        {"member_id": "c-1-uuid", "client_id": "faust-0.15.3", "host": "/10.0.0.5",
         "assignment": {"telemetry.raw": [0, 1]}},
    ]  # fmt: skip
    assert doc["stages"][1]["members"] is None
    assert doc["stages"][0]["up"] is None  # no endpoint answered: not known
    out = io.StringIO()
    render(status, out)
    text = out.getvalue()
    assert "faust-0.15.3 at /10.0.0.5: telemetry.raw 0,1" in text
    assert "members    not reported by this broker" in text
    assert "worker not known" in text


def test_the_report_reads_as_a_table_and_names_an_unreachable_endpoint() -> None:
    s = settings()
    workers = [
        read_endpoint(URL, exposition(), "telemetry"),
        WorkerEndpoint("http://x/m", False, "refused"),
    ]
    out = io.StringIO()
    render(assemble(s, "k:9092", groups_of(s, normalize=3), workers), out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "pipeline telemetry (stages topology) at k:9092"
    assert "normalize  group streamflow-telemetry-normalize  stable  worker up  lag 3" in lines
    row = next(line for line in lines if line.startswith("  telemetry.internal.cleaned/0"))
    assert row.split() == ["telemetry.internal.cleaned/0", "100", "103", "3"]
    row = next(line for line in lines if line.startswith("  telemetry.raw/1"))
    assert row.split() == ["telemetry.raw/1", "-", "0", "0"]  # never committed
    assert any(
        line.startswith("model      anomaly 1.0.0 on CPUExecutionProvider") for line in lines
    )
    assert f"metrics    {URL}: streamflow 0.1.0, up: clean, normalize, inference" in lines
    assert "metrics    http://x/m: unreachable (refused)" in lines


def test_without_an_endpoint_the_model_is_not_reported() -> None:
    s = settings()
    out = io.StringIO()
    render(assemble(s, "k:9092", groups_of(s), [WorkerEndpoint(URL, False, "refused")]), out)
    assert "model      not reported (no worker endpoint reports one)" in out.getvalue()

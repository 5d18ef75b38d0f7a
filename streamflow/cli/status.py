"""``streamflow status``: each step's consumer group, its members and lag, and the model in use.

Read from Kafka (``kafka/groups.py``: the group's state and members, its committed offsets, each
partition's end offset) and from the workers' metrics endpoints (``streamflow_model_info``,
``streamflow_worker_up``, ``streamflow_build_info``, for this pipeline's ``name``). A metrics
endpoint that does not answer is reported in the output; only a broker that does not answer
fails the command (exit 2, the error every command gives).

Lag counts messages: one record each on the raw, scored and dead-letter topics, one batch of
records each on the internal topics the normalize and inference steps read (SFB2 batches).

``--json`` prints one document; its keys are stable (keys may be added, none renamed):

- ``pipeline``, ``topology``, ``bootstrap``
- ``stages``: one per agent the pipeline runs (``worker --stage all``), in order:
  ``stage``, ``group``, ``topics`` (what it reads), ``state`` (stable, empty, dead,
  preparing_rebalance, completing_rebalance, unknown), ``up`` (a worker endpoint reports it
  running; null when no endpoint answered), ``lag`` (total of the known lags), ``error`` (why the
  group could not be read, or null), ``missing_topics``,
  ``members`` (null: the broker does not report them) with ``member_id``, ``client_id``,
  ``host``, ``assignment`` ({topic: [partition, ...]}),
  ``partitions`` with ``topic``, ``partition``, ``committed`` (null: never committed), ``end``
  (the offset after the last record), ``log_start``, ``high_watermark`` (ListOffsets' answer:
  equal to ``end`` on Kafka, lower on the embedded broker) and ``lag`` (null: unknown).
- ``models``: the models the workers report in use: ``name``, ``version``, ``sha256``,
  ``provider``, ``device`` (``runtime.device``).
- ``workers``: each metrics endpoint read: ``url``, ``reachable``, ``error`` (or null),
  ``version`` (streamflow's), ``stages_up``.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from typing import Any, TextIO
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from streamflow.cli import connect, settings_args
from streamflow.kafka.groups import GroupStatus, Member, PartitionLag, describe_groups
from streamflow.settings import Settings
from streamflow.steps import STORE, process_stages, source_topic, step_named


@dataclass(frozen=True)
class ModelInUse:
    """A model a worker reports scoring with (``streamflow_model_info`` = 1)."""

    name: str
    version: str
    sha256: str
    provider: str
    device: str


@dataclass(frozen=True)
class WorkerEndpoint:
    """What one metrics endpoint says about the pipeline's workers."""

    url: str
    reachable: bool
    error: str = ""
    version: str = ""  # streamflow's, from streamflow_build_info
    stages_up: tuple[str, ...] = ()
    models: tuple[ModelInUse, ...] = ()


@dataclass(frozen=True)
class StageStatus:
    stage: str
    group: GroupStatus
    up: bool | None  # None: no metrics endpoint answered


@dataclass(frozen=True)
class PipelineStatus:
    pipeline: str
    topology: str
    bootstrap: str
    stages: tuple[StageStatus, ...]
    workers: tuple[WorkerEndpoint, ...]

    @property
    def models(self) -> tuple[ModelInUse, ...]:
        """Every model the endpoints report, each once, in the order first seen."""
        return tuple(dict.fromkeys(m for w in self.workers for m in w.models))


def stage_groups(settings: Settings) -> list[tuple[str, str, tuple[str, ...]]]:
    """(stage, consumer group, topics it reads) of each agent the pipeline runs."""
    out = []
    for stage in process_stages(settings):
        if stage == STORE.name:  # agents/store.py: StoreHandler.source_topics
            topics: tuple[str, ...] = (settings.topics.scored, settings.topics.dlq)
        else:
            topics = (source_topic(settings, step_named(stage)),)
        out.append((stage, settings.group_id(stage), topics))
    return out


def metrics_url(given: str) -> str:
    """``--metrics``: a URL, or host:port (http and /metrics are implied)."""
    url = given if "://" in given else f"http://{given}"
    return url if urlsplit(url).path not in ("", "/") else url.rstrip("/") + "/metrics"


def default_metrics_url(settings: Settings) -> str:
    """The pipeline's own endpoint (metrics.host, metrics.port); a wildcard bind is asked on
    loopback."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(
        settings.metrics.host, settings.metrics.host
    )
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.metrics.port}/metrics"


def read_endpoint(url: str, text: str, pipeline: str) -> WorkerEndpoint:
    """The endpoint's exposition ``text``, for ``pipeline``'s workers."""
    version, up, models = "", [], []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "streamflow_build_info" and s.value == 1:
                version = s.labels.get("version", "")
            elif s.labels.get("pipeline") != pipeline or s.value != 1:
                continue
            elif s.name == "streamflow_worker_up":
                up.append(s.labels.get("stage", ""))
            elif s.name == "streamflow_model_info":
                lab = s.labels
                models.append(
                    ModelInUse(
                        lab.get("model", ""),
                        lab.get("version", ""),
                        lab.get("sha256", ""),
                        lab.get("provider", ""),
                        lab.get("device", ""),
                    )
                )
    return WorkerEndpoint(url, True, "", version, tuple(dict.fromkeys(up)), tuple(models))


def scrape(url: str, pipeline: str, timeout_s: float) -> WorkerEndpoint:
    """Read one metrics endpoint; one that does not answer (or not in Prometheus' format) is
    reported unreachable with the reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8", "replace")
        return read_endpoint(url, text, pipeline)
    except urllib.error.HTTPError as exc:  # "HTTP Error 404: Not Found"
        return WorkerEndpoint(url, False, str(exc))
    except urllib.error.URLError as exc:  # refused, unknown host
        return WorkerEndpoint(url, False, str(exc.reason))
    except (OSError, ValueError) as exc:  # timed out, connection dropped, not Prometheus text
        return WorkerEndpoint(url, False, str(exc) or type(exc).__name__)


def assemble(
    settings: Settings,
    bootstrap: str,
    groups: list[GroupStatus],
    workers: list[WorkerEndpoint],
) -> PipelineStatus:
    """The status from what Kafka said of each stage's group and what the endpoints said."""
    answered = [w for w in workers if w.reachable]
    by_group = {g.group: g for g in groups}
    listed = stage_groups(settings)
    stages = tuple(
        StageStatus(
            stage,
            by_group[group],
            any(stage in w.stages_up for w in answered) if answered else None,
        )
        for stage, group, _ in listed
    )
    # each endpoint's stages in the pipeline's order (a multiprocess endpoint's is arbitrary)
    rank = {stage: i for i, (stage, _, _) in enumerate(listed)}
    workers = [
        replace(w, stages_up=tuple(sorted(w.stages_up, key=lambda s: (rank.get(s, len(rank)), s))))
        for w in workers
    ]
    return PipelineStatus(
        settings.name, settings.runtime.topology, bootstrap, stages, tuple(workers)
    )


def collect(
    settings: Settings, bootstrap: str, urls: list[str], *, timeout_s: float = 5.0
) -> PipelineStatus:
    """Read the pipeline's groups from Kafka and its workers' endpoints."""
    wanted = [(group, topics) for _, group, topics in stage_groups(settings)]
    groups = describe_groups(settings, bootstrap, wanted, timeout_s=timeout_s)
    workers = [scrape(url, settings.name, timeout_s) for url in urls]
    return assemble(settings, bootstrap, groups, workers)


def _member_json(m: Member) -> dict[str, Any]:
    assignment: dict[str, list[int]] = {}
    for topic, partition in m.assignment:
        assignment.setdefault(topic, []).append(partition)
    return {
        "member_id": m.member_id,
        "client_id": m.client_id,
        "host": m.host,
        "assignment": assignment,
    }


def _partition_json(p: PartitionLag) -> dict[str, Any]:
    return {
        "topic": p.topic,
        "partition": p.partition,
        "committed": p.committed,
        "end": p.end,
        "log_start": p.log_start,
        "high_watermark": p.high_watermark,
        "lag": p.lag,
    }


def to_json(status: PipelineStatus) -> dict[str, Any]:
    """The ``--json`` document (keys in the module docstring)."""
    return {
        "pipeline": status.pipeline,
        "topology": status.topology,
        "bootstrap": status.bootstrap,
        "stages": [
            {
                "stage": s.stage,
                "group": s.group.group,
                "topics": list(s.group.topics),
                "state": s.group.state,
                "up": s.up,
                "lag": s.group.lag,
                "error": s.group.error or None,
                "missing_topics": list(s.group.missing_topics),
                "members": (
                    None if s.group.members is None else [_member_json(m) for m in s.group.members]
                ),
                "partitions": [_partition_json(p) for p in s.group.partitions],
            }
            for s in status.stages
        ],
        "models": [
            {
                "name": m.name,
                "version": m.version,
                "sha256": m.sha256,
                "provider": m.provider,
                "device": m.device,
            }
            for m in status.models
        ],
        "workers": [
            {
                "url": w.url,
                "reachable": w.reachable,
                "error": w.error or None,
                "version": w.version,
                "stages_up": list(w.stages_up),
            }
            for w in status.workers
        ],
    }


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def _members_text(members: tuple[Member, ...] | None) -> list[str]:
    if members is None:
        return ["  members    not reported by this broker"]
    lines = [f"  members    {len(members)}"]
    for m in members:
        parts: dict[str, list[str]] = {}
        for topic, partition in m.assignment:
            parts.setdefault(topic, []).append(str(partition))
        assigned = "; ".join(f"{t} {','.join(ps)}" for t, ps in parts.items()) or "nothing"
        lines.append(f"    {m.client_id or m.member_id} at {m.host or '?'}: {assigned}")
    return lines


def render(status: PipelineStatus, out: TextIO) -> None:
    """The readable report."""
    print(
        f"pipeline {status.pipeline} ({status.topology} topology) at {status.bootstrap}", file=out
    )
    running = {True: "worker up", False: "no worker up", None: "worker not known"}
    for s in status.stages:
        g = s.group
        print(f"\n{s.stage:<10} group {g.group}  {g.state}  {running[s.up]}  lag {g.lag}", file=out)
        if g.error:
            print(f"  error      {g.error}", file=out)
        for line in _members_text(g.members):
            print(line, file=out)
        if g.missing_topics:
            print(f"  missing    {', '.join(g.missing_topics)} (no such topic)", file=out)
        if g.partitions:
            width = max(len(f"{p.topic}/{p.partition}") for p in g.partitions)
            print(
                f"  {'partition':<{width}}  {'committed':>12}  {'end':>12}  {'lag':>10}", file=out
            )
            for p in g.partitions:
                print(
                    f"  {f'{p.topic}/{p.partition}':<{width}}  {_num(p.committed):>12}  "
                    f"{p.end:>12}  {_num(p.lag):>10}",
                    file=out,
                )
    print(file=out)
    if status.models:
        for m in status.models:
            print(
                f"model      {m.name} {m.version} on {m.provider} "
                f"(runtime.device {m.device}, sha256 {m.sha256[:12]})",
                file=out,
            )
    else:
        print("model      not reported (no worker endpoint reports one)", file=out)
    for w in status.workers:
        if not w.reachable:
            print(f"metrics    {w.url}: unreachable ({w.error})", file=out)
            continue
        up = ", ".join(w.stages_up) or "none"
        print(f"metrics    {w.url}: streamflow {w.version or '?'}, up: {up}", file=out)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow status`` and its options."""
    p = sub.add_parser(
        "status",
        help="each stage's consumer group, members and lag, and the model the workers run",
    )
    p.add_argument(
        "--metrics",
        action="append",
        default=None,
        metavar="URL",
        help="a worker's metrics endpoint, URL or host:port (repeatable; default: the "
        "pipeline's metrics.host and metrics.port)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds to wait for each broker request and each endpoint (default 5)",
    )
    p.add_argument("--json", action="store_true", help="one JSON document instead of text")
    settings_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the pipeline's status; 0 when its broker answered."""
    settings, bootstrap = connect(args, "streamflow status")
    urls = [metrics_url(u) for u in args.metrics] if args.metrics else []
    status = collect(
        settings, bootstrap, urls or [default_metrics_url(settings)], timeout_s=args.timeout
    )
    if args.json:
        print(json.dumps(to_json(status)), file=sys.stdout)
    else:
        render(status, sys.stdout)
    return 0

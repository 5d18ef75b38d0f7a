"""The dashboards and alerts of deploy/, checked by a real Prometheus against a live pipeline.

promtool checks the compose scrape config and the rules and runs the rules' unit tests.
Then the embedded pipeline runs with synthetic records (faults included, so there are dead
letters) and its store step (Parquet files in a temporary folder) while a real ``prometheus``
server (Debian's package) scrapes its metrics endpoint every second with the real alerts.yml
loaded. Every PromQL expression of every dashboard panel (template variables substituted as
Grafana would) and every alert rule expression (as the server loaded it) is evaluated through
the HTTP API and its values judged. Run with ``-s`` to see the table of what was checked.
(The dashboard's import-readiness and its variables are checked without a server in
tests/unit/test_deploy.py.)
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamflow.broker import die_with_parent, free_port, stop_process
from streamflow.cli import report
from streamflow.collectors.produce import ProduceStats, RawProducer, run_synthetic
from streamflow.metrics import Metrics, ProcessMetrics
from streamflow.settings import Settings
from streamflow.steps import SINKS, STEPS
from streamflow.supervisor import LocalPipeline
from tests.conftest import ROOT
from tests.integration.helpers import running_pipeline, wait_for
from tests.integration.tls import require_tool

pytestmark = pytest.mark.integration

PROM_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "streamflow.json"
RATE = 1000  # synthetic records per second
RECORDS = 20_000
# The test's objectives: dead letters (~2 % of synthetic records) are above 0.5 %, so that
# alert must fire for real; 10 s for p99 keeps a loaded 2-core machine from firing the other.
# The synthetic inlet temperature follows the time of day, and the run covers 20 s of one day's
# cycle against a training set of whole days: its PSI reads up to about 0.7 by the hour of the
# run, so the drift threshold is 1 here (tests/integration/test_drift.py tests the alert).
SLO = {
    "slo.max_dead_letter_ratio": "0.005",
    "slo.p99_latency_ms": "10000",
    "slo.max_lag_seconds": "60",
    "monitoring.max_input_psi": "1.0",
}
SHOULD_FIRE = {"StreamflowDeadLetterRatioHigh"}
# The store step runs (it runs where store.path is set), publishing its open files every second
# rather than every 10 s, so that its rates and delay quantiles have files in a 10 s window.
STORE = {"store.rotate_schedule_interval_ms": "1000"}
# Series that only exist once something went wrong: no delivery was retried, no store write
# failed in this run.
ABSENT_HERE = {"streamflow_delivery_retries_total", "streamflow_store_write_errors_total"}
# Every `worker --stage X` the pipeline runs here, and that compose runs (and Prometheus scrapes).
WORKERS = {s.name for s in (*STEPS, *SINKS)}
# Grafana's values for the variables: one pipeline; every job ("All": the jobs listed, as a
# regex); every namespace and every worker ("All" is the regex .*: there is no namespace label
# here, as with compose); $__rate_interval as for a 1 s scrape interval, $__range as for a short
# time range.
RATE_INTERVAL = "10s"
JOB = "streamflow-local"  # the test's scrape job


# ------------------------------------------------------------------ promtool


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("promtool", "prometheus")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)


def test_promtool_check_config() -> None:
    """The compose scrape config is valid, and its rule_files (relative to it) resolve to
    alerts.yml."""
    r = promtool("check", "config", str(PROM_DIR / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout + r.stderr
    text = (PROM_DIR / "prometheus.yml").read_text()
    for service in sorted(WORKERS):  # every replica by Docker's DNS, port 9108
        block = text.split(f"job_name: streamflow-{service}\n", 1)[1].split("job_name:", 1)[0]
        assert f"names: [{service}]" in block and "type: A" in block and "port: 9108" in block, (
            block
        )


def test_promtool_check_rules() -> None:
    r = promtool("check", "rules", str(PROM_DIR / "alerts.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_rule_unit_tests() -> None:
    """deploy/prometheus/alerts.test.yml: each alert firing, and silent on its look-alikes."""
    r = promtool("test", "rules", str(PROM_DIR / "alerts.test.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    tested = set(re.findall(r'alertname="(\w+)"', (PROM_DIR / "alerts.test.yml").read_text()))
    assert set(alert_names()) <= tested, (
        f"alerts without a unit test: {set(alert_names()) - tested}"
    )


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)", (PROM_DIR / "alerts.yml").read_text(), flags=re.M)


# ------------------------------------------------------------------ static checks of the dashboard


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def known_series() -> set[str]:
    """Every series name streamflow exports, from a fresh set of its instruments and the
    process metrics, plus `up`."""
    names = {"up"}
    for fam in [*Metrics.create().registry.collect(), *ProcessMetrics().collect()]:
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(
            fam.type, ("",)
        )
        names |= {fam.name + s for s in suffixes}
    return names


def test_dashboard_is_complete_and_consistent() -> None:
    """Units and thresholds on every panel, the data source variable, no overlapping panels,
    only defined variables, only metrics streamflow exports (alerts too); the compose
    provisioning in place."""
    dash = json.loads(DASHBOARD.read_text())
    ds = {"type": "prometheus", "uid": "${datasource}"}
    assert (
        "url: http://prometheus:9090"
        in (GRAFANA_DIR / "provisioning/datasources/prometheus.yml").read_text()
    )
    assert (
        "path: /var/lib/grafana/dashboards"
        in (GRAFANA_DIR / "provisioning/dashboards/streamflow.yml").read_text()
    )
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "job", "namespace", "pipeline", "instance"} <= variables
    ids: set[int] = set()
    cells: set[tuple[int, int]] = set()
    series = known_series()
    for p in dashboard_panels():
        title = p["title"]
        defaults = p["fieldConfig"]["defaults"]
        assert defaults.get("unit"), f"{title}: no unit"
        assert defaults.get("thresholds", {}).get("steps"), f"{title}: no thresholds"
        assert p["datasource"] == ds, title
        assert p["id"] not in ids, f"{title}: duplicate id"
        ids.add(p["id"])
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, title
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"{title} overlaps another panel"
        cells |= mine
        assert p["targets"], f"{title}: no query"
        for t in p["targets"]:
            assert t["datasource"] == ds, title
            used = set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval", "__range"}
            assert used <= variables, f"{title}: undefined variables {used - variables}"
            unknown = set(re.findall(r"\b(streamflow_\w+|process_\w+|up)\b", t["expr"])) - series
            assert not unknown, f"{title}: metrics streamflow does not export: {unknown}"
    unknown = (
        set(re.findall(r"\b(streamflow_\w+)\b", (PROM_DIR / "alerts.yml").read_text())) - series
    )
    assert not unknown, f"alerts.yml uses metrics streamflow does not export: {unknown}"


# ------------------------------------------------------------------ a real Prometheus


class Prometheus:
    """A prometheus server on a free port, scraping ``target`` every second, with ``rules``
    loaded."""

    def __init__(self, binary: str, d: Path, target: str, rules: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = d / "prometheus.log"
        config = {  # JSON is YAML
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": "streamflow-local",
                    "static_configs": [{"targets": [target]}],
                    "relabel_configs": [{"target_label": "service", "replacement": "all"}],
                }
            ],
        }
        (d / "prometheus.yml").write_text(json.dumps(config, indent=2))
        self.args = [
            self.binary,
            f"--config.file={d / 'prometheus.yml'}",
            f"--storage.tsdb.path={d / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        if not wait_for(self.ready, timeout_s=30, interval_s=0.2):
            pytest.fail(f"prometheus did not become ready: {self.log.read_text()[-2000:]}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        stop_process(self.proc, timeout_s=10)

    def ready(self) -> bool:
        try:
            return urllib.request.urlopen(f"{self.url}/-/ready", timeout=1).status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str | list[str]) -> Any:
        qs = urllib.parse.urlencode(params, doseq=True)
        try:
            reply = json.loads(
                urllib.request.urlopen(f"{self.url}/api/v1/{path}?{qs}", timeout=10).read()
            )
        except urllib.error.HTTPError as exc:  # a bad query: 400 with the parser's message
            reply = json.loads(exc.read())
        assert reply["status"] == "success", f"{path} {params}: {reply}"
        return reply["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]


# ------------------------------------------------------------------ judging values

Result = list[tuple[dict[str, str], float]]


@dataclass(frozen=True)
class Expect:
    """What a query's values must look like, in words (for the table) and as a check."""

    words: str
    check: Callable[[Result], bool]


def _all(pred: Callable[[float], bool], nonempty: bool = True) -> Callable[[Result], bool]:
    return lambda r: (bool(r) or not nonempty) and all(pred(v) for _, v in r)


POSITIVE = Expect(
    "rates >= 0, sum > 0",
    lambda r: bool(r) and all(v >= 0 for _, v in r) and sum(v for _, v in r) > 0,
)
LATENCY = Expect("every value in (0, 10) s", _all(lambda v: 0 < v < 10))
BYTES = Expect("every value in (1 MB, 4 GB)", _all(lambda v: 1e6 < v < 4e9))
AGE = Expect("every value in [0, 1 day) s", _all(lambda v: 0 <= v < 86400))
FRACTION = Expect("every value in (0, 1]", _all(lambda v: 0 < v <= 1))
DL_RATIO = Expect("in (0.005, 0.1): faults are ~2 %", _all(lambda v: 0.005 < v < 0.1))
AT_LEAST_1 = Expect("every value >= 1 record", _all(lambda v: v >= 1))
NONNEG = Expect("series present, >= 0", _all(lambda v: v >= 0))
ZERO = Expect("series present, all 0", _all(lambda v: v == 0))
UP = Expect("series present, all 1", _all(lambda v: v == 1))
EMPTY = Expect("no series", lambda r: r == [])
NO_GPU = Expect("all 0 (streamflow_gpus: no GPU here)", _all(lambda v: v == 0))
SCORES = Expect("every value in [0, 1] (scores)", _all(lambda v: 0 <= v <= 1))
NO_DRIFT = Expect("every feature in [0, 1): the test's threshold", _all(lambda v: 0 <= v < 1))
MODEL = Expect(
    "1, provider CPUExecutionProvider",
    lambda r: (
        bool(r)
        and all(
            v == 1 and m.get("provider") == "CPUExecutionProvider" and m.get("model") for m, v in r
        )
    ),
)


def equals(x: float) -> Expect:
    return Expect(f"= {x:g} (the test's objective)", _all(lambda v: math.isclose(v, x)))


def inputs(names: list[str]) -> Expect:
    """Series of each name are there, but for those that only exist once something went wrong."""
    want = set(names) - ABSENT_HERE
    words = ", ".join(
        [f"{len(want)} present"] + [f"{n} absent" for n in sorted(set(names) & ABSENT_HERE)]
    )
    return Expect(
        words, lambda r: {m["__name__"] for m, v in r if v > 0} == want and len(r) == len(want)
    )


# Every query of every panel, by (panel title, refId): what it must return while records flow.
WHILE_FLOWING: dict[tuple[str, str], Expect] = {
    ("Input records/s", "A"): POSITIVE,
    ("End-to-end p99 (5m)", "A"): LATENCY,
    ("Dead-letter ratio (5m)", "A"): DL_RATIO,
    ("Max lag", "A"): NONNEG,
    ("Targets down", "A"): ZERO,
    ("Delivery retries (range)", "A"): ZERO,
    ("Records/s by stage and outcome", "A"): POSITIVE,
    ("Messages delivered/s by topic", "A"): POSITIVE,
    ("Messages delivered/s by topic", "B"): EMPTY,  # no delivery failed
    ("End-to-end latency", "A"): LATENCY,
    ("End-to-end latency", "B"): LATENCY,
    ("End-to-end latency", "C"): LATENCY,
    ("End-to-end latency", "D"): equals(10.0),
    ("Stage time per batch", "A"): LATENCY,
    ("Stage time per batch", "B"): LATENCY,
    ("Inference latency per model", "A"): LATENCY,
    ("Inference latency per model", "B"): LATENCY,
    ("Lag (records) by stage and partition", "A"): NONNEG,
    ("Lag (seconds) by stage and partition", "A"): NONNEG,
    ("Lag (seconds) by stage and partition", "B"): equals(60.0),
    ("Batch size by stage", "A"): AT_LEAST_1,
    ("Batch size by stage", "B"): AT_LEAST_1,
    ("Batch fill ratio by stage", "A"): FRACTION,
    ("Batch fill ratio by stage", "B"): FRACTION,
    ("Queue delay and batch wait", "A"): NONNEG,
    ("Queue delay and batch wait", "B"): NONNEG,
    ("SLO headroom", "A"): Expect(
        "in (0, 10] s: the test's objective is 10 s", _all(lambda v: 0 < v <= 10)
    ),
    ("Dead letters/s by stage and reason", "A"): POSITIVE,
    ("Dead-letter ratio", "A"): DL_RATIO,
    ("Dead-letter ratio", "B"): equals(0.005),
    ("Workers up", "A"): UP,
    ("Workers up", "B"): UP,
    ("Model in use", "A"): MODEL,
    ("Delivery retries/s by topic and error", "A"): EMPTY,  # no broker trouble
    ("GPUs per inference worker", "A"): NO_GPU,
    ("GPU utilisation", "A"): EMPTY,  # no GPU: nothing to sample
    ("GPU memory", "A"): EMPTY,
    ("GPU memory", "B"): EMPTY,
    ("Model output distribution", "A"): POSITIVE,
    ("Model output quantiles", "A"): SCORES,
    ("Model output quantiles", "B"): SCORES,
    ("Model output quantiles", "C"): SCORES,
    ("Predictions/s by label", "A"): POSITIVE,
    ("Input drift (PSI) per feature", "A"): NO_DRIFT,
    ("Input drift (PSI) per feature", "B"): equals(1.0),
    ("Rows/s stored by table", "A"): POSITIVE,
    ("Bytes/s stored by table", "A"): POSITIVE,
    ("Files/s published by table", "A"): POSITIVE,
    ("Storage lag (records)", "A"): NONNEG,
    ("Storage lag (seconds)", "A"): NONNEG,
    ("Storage lag (seconds)", "B"): equals(60.0),
    ("Store delay (produced to stored)", "A"): LATENCY,
    ("Store delay (produced to stored)", "B"): LATENCY,
    ("Open files", "A"): NONNEG,
    ("Store write errors/s", "A"): EMPTY,  # no write failed
    ("CPU per process", "A"): POSITIVE,
    ("CPU per process", "B"): NONNEG,  # time in the garbage collector, per stage process
    ("Memory per process", "A"): BYTES,
    ("Open file descriptors (of the limit)", "A"): FRACTION,
    ("Process age", "A"): AGE,
    ("Build per worker", "A"): Expect(
        "1, with streamflow's version",
        lambda r: bool(r) and all(v == 1 and m.get("version") for m, v in r),
    ),
}
# After the input stops: the backlog drains and the workers stay up.
AFTER_DRAIN: dict[tuple[str, str], Expect] = {
    ("Max lag", "A"): ZERO,
    ("Lag (records) by stage and partition", "A"): ZERO,
    ("Lag (seconds) by stage and partition", "A"): ZERO,
    ("Workers up", "A"): UP,
    ("Workers up", "B"): UP,
    ("Targets down", "A"): ZERO,
    ("Storage lag (records)", "A"): ZERO,  # every open file published, its offsets committed
    ("Storage lag (seconds)", "A"): ZERO,
    ("Open files", "A"): ZERO,
}


def promql_regex_escape(value: str) -> str:
    """A value's regex metacharacters escaped inside a PromQL string, as Grafana's Prometheus
    data source does for multi-value variables (``-`` is left alone: ``\\-`` is no escape in a
    PromQL string)."""
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)


def substitute(expr: str, pipeline: str, jobs: tuple[str, ...] = (JOB,)) -> str:
    """The query Grafana sends: multi-value "All" without a custom value is the values listed,
    escaped and joined as a regex (job); with one (.*), that (namespace, worker)."""
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__range", "5m")
        .replace("$pipeline", re.escape(pipeline))
        .replace("$job", "(" + "|".join(promql_regex_escape(j) for j in jobs) + ")")
        .replace("$namespace", ".*")
        .replace("$instance", ".*")
    )


def show(result: Result) -> str:
    if not result:
        return "(none)"
    skip = {"pipeline", "instance", "job", "service", "sha256"}
    parts = []
    for m, v in sorted(result, key=lambda mv: sorted(mv[0].items()))[:8]:
        name = " ".join(val for k, val in sorted(m.items()) if k not in skip)
        parts.append(f"{name + ' ' if name else ''}{v:.4g}")
    return "; ".join(parts) + (f"; ... {len(result) - 8} more" if len(result) > 8 else "")


class Table:
    """The expressions checked and what they returned; printed at the end, failures collected."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.failures: list[str] = []

    def check(self, phase: str, what: str, expr: str, result: Result, expect: Expect) -> None:
        ok = expect.check(result)
        self.rows.append(
            (phase, what, f"{'ok' if ok else 'FAIL'}: {expect.words}", show(result), expr)
        )
        if not ok:
            self.failures.append(
                f"[{phase}] {what}: expected {expect.words}, got {show(result)}\n    {expr}"
            )

    def print(self) -> None:
        print("\nphase   | query | expected | values\n        expression")
        for phase, what, ok, values, expr in self.rows:
            print(f"{phase:<7} | {what} | {ok} | {values}\n        {' '.join(expr.split())}")


# ------------------------------------------------------------------ the live test


@pytest.fixture()
def prometheus_binary() -> str:
    """Before the pipeline starts: without prometheus there is nothing to run it for."""
    return require_tool("prometheus", "prometheus")


@pytest.fixture()
def pipeline(
    pipeline_overrides: dict[str, str], tmp_path: Path
) -> Iterator[tuple[Settings, LocalPipeline]]:
    store = {"store.path": str(tmp_path / "store"), **STORE}
    with running_pipeline({**pipeline_overrides, **SLO, **store}) as running:
        yield running


def test_dashboard_and_alert_queries_on_a_live_pipeline(
    prometheus_binary: str, pipeline: tuple[Settings, LocalPipeline], bootstrap: str, tmp_path: Path
) -> None:
    settings, pipe = pipeline
    name = settings.name
    panels = dashboard_panels()
    queries = [
        (p["title"], t["refId"], substitute(t["expr"], name)) for p in panels for t in p["targets"]
    ]
    assert {(title, ref) for title, ref, _ in queries} == set(WHILE_FLOWING), (
        "every panel query needs an expectation here (and only those)"
    )
    table = Table()
    target = f"{settings.metrics.host}:{settings.metrics.port}"

    with Prometheus(prometheus_binary, tmp_path, target, PROM_DIR / "alerts.yml") as prom:

        def stages_up() -> bool:
            up = prom.query(f'streamflow_worker_up{{pipeline="{name}"}} == 1')
            return {m["stage"] for m, _ in up} >= WORKERS

        assert wait_for(stages_up, timeout_s=30), (
            f"prometheus never scraped the stages up: {prom.log.read_text()[-2000:]}"
        )

        # The variables, as Grafana's label_values() asks for them: job, then namespace (none
        # here, as with compose: "All" is .*, which matches series without the label), then
        # pipeline and worker.
        jobs = prom.api("label/job/values", **{"match[]": "streamflow_worker_up"})
        assert jobs == [JOB], jobs
        namespaces = prom.api(
            "label/namespace/values", **{"match[]": f'streamflow_worker_up{{job=~"{JOB}"}}'}
        )
        assert namespaces == [], namespaces
        scope = f'job=~"({JOB})", namespace=~".*"'
        pipelines = prom.api(
            "label/pipeline/values", **{"match[]": f"streamflow_worker_up{{{scope}}}"}
        )
        instances = prom.api(
            "label/instance/values",
            **{"match[]": f'streamflow_worker_up{{{scope}, pipeline=~"{name}"}}'},
        )
        assert name in pipelines and instances == [target], (pipelines, instances)

        # The standard process metrics of every stage process (read from /proc by the
        # supervisor: multiprocess mode has none of its own), beside the supervisor's own.
        for series in (
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ):
            per_stage = prom.query(f'{series}{{pipeline="{name}"}}')
            assert {m["stage"] for m, _ in per_stage} == WORKERS, (series, per_stage)
            assert all(v > 0 for _, v in per_stage) or series == "process_cpu_seconds_total"
            assert prom.query(f'{series}{{job="{JOB}", stage=""}}'), f"{series}: the supervisor's"
        build = prom.query("streamflow_build_info")
        assert len(build) == 1 and build[0][0]["version"] and build[0][1] == 1, build

        raw = RawProducer(settings, bootstrap)
        stats: list[ProduceStats] = []
        producer = threading.Thread(
            target=lambda: stats.append(run_synthetic(raw, rate=RATE, records=RECORDS, seed=5)),
            name="synthetic",
            daemon=True,
        )
        started = time.monotonic()
        producer.start()

        # While records flow: every panel query, with a rate window well inside the flow.
        def flowing() -> bool:
            done = prom.query(
                f'sum(streamflow_records_total{{pipeline="{name}", stage="inference"}})'
            )
            return time.monotonic() - started > 12 and bool(done) and done[0][1] > 0

        assert wait_for(flowing, timeout_s=40, interval_s=0.5), (
            f"no records reached inference; logs in {pipe.log_dir}"
        )
        assert producer.is_alive(), "the input stopped before the queries: raise RECORDS"
        for title, ref, expr in queries:
            table.check(
                "flowing", f"{title} [{ref}]", expr, prom.query(expr), WHILE_FLOWING[(title, ref)]
            )
        gpus = prom.query(f'streamflow_gpus{{pipeline="{name}"}}')
        table.check(
            "flowing",
            "GPU panels empty because no GPU is seen",
            f'streamflow_gpus{{pipeline="{name}"}}',
            gpus,
            NO_GPU,
        )

        # The input stops: lag drains to 0 (the workers report it every 2 s).
        producer.join(timeout=60)
        assert stats and stats[0].produced == RECORDS and stats[0].failed == 0
        assert (
            sum(stats[0].faults.values()) > 0.01 * RECORDS
        )  # faults were injected: dead letters exist
        lag = (
            f'max(streamflow_consumer_lag_records{{pipeline="{name}"}}) + '
            f'max(streamflow_consumer_lag_seconds{{pipeline="{name}"}})'
        )
        drained = wait_for(
            lambda: (r := prom.query(lag)) and r[0][1] == 0, timeout_s=60, interval_s=0.5
        )
        assert drained, f"lag did not drain to 0: {prom.query(lag)}; logs in {pipe.log_dir}"
        time.sleep(2)  # a couple more scrapes at 0
        for title, ref, expr in queries:
            if (title, ref) in AFTER_DRAIN:
                table.check(
                    "drained", f"{title} [{ref}]", expr, prom.query(expr), AFTER_DRAIN[(title, ref)]
                )
        # What the store panels counted is on disk: Parquet files of both tables.
        folder = tmp_path / "store"
        tables = {f.relative_to(folder).parts[0] for f in folder.rglob("*.parquet")}
        assert tables == {"results", "dead_letters"}, f"stored tables {tables}"

        # Every alert rule, as the server loaded it from deploy/prometheus/alerts.yml.
        rules = [
            r for g in prom.api("rules")["groups"] for r in g["rules"] if r["type"] == "alerting"
        ]
        assert sorted(r["name"] for r in rules) == sorted(alert_names())
        for r in rules:
            assert r["health"] == "ok", f"{r['name']}: {r.get('lastError')}"
            fires = r["name"] in SHOULD_FIRE
            expect = DL_RATIO if fires else EMPTY
            table.check(
                "drained",
                f"alert {r['name']} ({'fires' if fires else 'silent'})",
                r["query"],
                prom.query(r["query"]),
                expect,
            )
            # ... and silent with its inputs there, not for want of series to compare.
            names = sorted(set(re.findall(r"\b(streamflow_\w+|up)\b", r["query"])))
            counts = [({"__name__": n}, v) for n in names for _, v in prom.query(f"count({n})")]
            table.check(
                "drained",
                f"alert {r['name']} inputs",
                ", ".join(f"count({n})" for n in names),
                counts,
                inputs(names),
            )

        # The server evaluates them too: the dead-letter alert is pending (for: 10m), its
        # annotations rendered; nothing else is active.
        def active() -> list[dict[str, Any]]:
            return [
                a
                for a in prom.api("alerts")["alerts"]
                if a["labels"].get("pipeline") in (name, None)
            ]

        alerts = wait_for(active, timeout_s=10)
        assert {a["labels"]["alertname"] for a in alerts} == SHOULD_FIRE, alerts
        for a in alerts:
            assert a["state"] == "pending" and a["labels"]["pipeline"] == name
            notes = a["annotations"]
            assert set(notes) == {"summary", "description", "runbook_url"}, notes
            assert (
                "error" not in notes["summary"] + notes["description"] and "%" in notes["summary"]
            ), notes
            assert notes["runbook_url"].endswith("docs/runbooks.md#streamflowdeadletterratiohigh")

        # `streamflow report --prometheus` draws the run from this same server.
        panels = report.from_prometheus(prom.url, name, minutes=3, window="10s")
        assert {"clean", "normalize", "inference"} <= set(panels.throughput)
        assert max(v for _, v in panels.throughput["inference"]) > 0
        assert panels.latency_ms and all(
            0 < v < 10_000 for pts in panels.latency_ms.values() for _, v in pts
        )
        assert panels.dead_letters and panels.lag
        png = report.render(panels, tmp_path / "report.png", "test")
        assert png.read_bytes()[:4] == b"\x89PNG"

    table.print()
    ratio = sum(stats[0].faults.values()) / RECORDS
    print(
        f"\n{RECORDS} records at {RATE}/s, "
        f"{sum(stats[0].faults.values())} injected faults ({ratio:.2%})"
    )
    assert not table.failures, "\n".join(table.failures)

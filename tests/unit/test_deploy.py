"""The deployment files (docker-compose.yml, deploy/docker, deploy/k8s) against the code.

Docker and Kubernetes are not available where these are developed, so nothing here starts a
container: the files are parsed and checked against what streamflow itself computes (setting
names, consumer groups, topics, partitions) and against each other (ports, paths, images).
Every step of ``streamflow.steps.STEPS`` and every sink of ``SINKS`` needs, by its name, a
compose service running ``worker --stage NAME``, a Prometheus job, and a k8s Deployment with a
KEDA ScaledObject on its consumer group (docs/architecture.md, "Add a step", "Add a sink").
"""

from __future__ import annotations

import base64
import fnmatch
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from streamflow.settings import Settings
from streamflow.settings.loading import ENV_PREFIX, env_overrides, load_settings
from streamflow.steps import SINKS, STEPS, step_named
from streamflow.steps import source_topic as step_source_topic

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKER_DIR = ROOT / "deploy" / "docker"
K8S_DIR = ROOT / "deploy" / "k8s"
PIPELINE = ROOT / "pipelines" / "telemetry.toml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

STAGES = tuple(step.name for step in STEPS)  # the pipeline's steps
SINK_STAGES = tuple(step.name for step in SINKS)  # the sinks beside them (the store)
WORKERS = (*STAGES, *SINK_STAGES)  # what the deploy files must name: each `worker --stage X`
# compose service -> the stage it runs; all of them scale with --scale
AGENT_SERVICES = {
    "clean": "clean",
    "normalize": "normalize",
    "inference": "inference",
    "inference-cpu": "inference",
    "store": "store",
}
STORE_MOUNT = "/var/lib/streamflow/store"  # where compose (and store-pvc) keep the store's files
STORE_PVC = K8S_DIR / "store-pvc"  # the kustomize Component: the store on a volume, not S3
SCALABLE = (*AGENT_SERVICES, "collector")
PIPELINE_VAR = f"{ENV_PREFIX}PIPELINE"  # the pipeline file itself, not a setting


# --- helpers ------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def settings() -> Settings:
    return load_settings(PIPELINE, environ={})


def interpolate(value: Any) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR-default}`` / ``${VAR}`` with nothing set in the
    shell."""
    return re.sub(
        r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value)
    )


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: interpolate(v) for k, v in env.items()}


def active(profiles: set[str]) -> dict[str, dict[str, Any]]:
    """The services ``docker compose --profile P ... up`` starts."""
    return {
        name: svc
        for name, svc in services().items()
        if not svc.get("profiles") or profiles & set(svc["profiles"])
    }


def command(args: list[str]) -> list[str]:
    """A ``streamflow`` command line without the global options before the command
    (``--log-format json``, ``--log-level``, ``-v``)."""
    args = list(args)
    while args and args[0].startswith("-"):
        takes_value = args[0] in ("--log-format", "--log-level")
        args = args[2:] if takes_value else args[1:]
    return args


def runs_stage(svc: dict[str, Any]) -> str | None:
    cmd = svc.get("command") or []
    cmd = command(shlex.split(cmd) if isinstance(cmd, str) else cmd)
    if cmd[:2] == ["worker", "--stage"] and len(cmd) >= 3:
        return str(cmd[2])
    return None


def gpu_reservations(svc: dict[str, Any]) -> list[dict[str, Any]]:
    devices = (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get(
        "devices"
    ) or []
    return [
        d for d in devices if d.get("driver") == "nvidia" or "gpu" in (d.get("capabilities") or [])
    ]


def host_ports(svc: dict[str, Any]) -> list[str]:
    """Host ports a service publishes (short syntax 'HOST:CONTAINER', 'IP:HOST:CONTAINER', or
    long)."""
    out = []
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            if p.get("published"):
                out.append(str(p["published"]))
            continue
        parts = str(p).rsplit(":", 2)
        if len(parts) >= 2 and parts[-2]:
            out.append(parts[-2])
    return out


def worker_healthcheck_port(svc: dict[str, Any]) -> int:
    text = " ".join(str(t) for t in svc["healthcheck"]["test"])
    m = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)/metrics", text)
    assert m, f"the healthcheck does not query the metrics endpoint: {text}"
    return int(m.group(1))


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        out.extend((path, d) for d in yaml.safe_load_all(path.read_text()) if d)
    return out


def k8s(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] == kind}


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())


def env_configmap() -> dict[str, str]:
    return {k: str(v) for k, v in k8s("ConfigMap")["streamflow-env"]["data"].items()}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    return containers[0]


def deployment_for(stage: str) -> dict[str, Any]:
    found = [
        d
        for d in k8s("Deployment").values()
        if command(container(d).get("args", []))[:3] == ["worker", "--stage", stage]
    ]
    assert len(found) == 1, (
        f"expected one Deployment running `worker --stage {stage}`, found {len(found)}"
    )
    return found[0]


def pod_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The environment a stage's container gets: envFrom ConfigMaps and (example) Secrets, then
    env."""
    c = container(deployment)
    secrets = {d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] == "Secret"}
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            env.update(
                {
                    k: str(v)
                    for k, v in k8s("ConfigMap")[src["configMapRef"]["name"]]["data"].items()
                }
            )
        if "secretRef" in src:
            secret = secrets.get(src["secretRef"]["name"])
            if secret is not None:
                env.update({k: str(v) for k, v in secret.get("stringData", {}).items()})
    env.update({e["name"]: str(e["value"]) for e in c.get("env", []) if "value" in e})
    return env


def source_topic(s: Settings, stage: str) -> str:
    return step_source_topic(s, step_named(stage))


def source_topics(s: Settings, stage: str) -> tuple[str, ...]:
    """What the stage's consumer group reads: a step its one source topic, a sink the sink
    topic and the dead-letter topic (steps.py, ``SINKS``)."""
    if stage in SINK_STAGES:
        return (s.topics.scored, s.topics.dlq)
    return (source_topic(s, stage),)


def topic_partitions(s: Settings, topic: str) -> int:
    return (
        s.topics.partitions
        if topic in (s.topics.raw, s.topics.scored, s.topics.dlq)
        else s.internal_partitions
    )


def port_of(c: dict[str, Any], ref: int | str) -> int:
    """A container port referenced by number or by name."""
    for p in c.get("ports", []):
        if ref in (p["containerPort"], p.get("name")):
            return int(p["containerPort"])
    raise AssertionError(f"container {c['name']} has no port {ref!r}")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        if buf.strip():
            instr, _, args = buf.strip().partition(" ")
            out.append((instr.upper(), args.strip()))
        buf = ""
    return out


def dockerignored(rel: str) -> bool:
    """Whether .dockerignore keeps ``rel`` (or a folder above it) out of the build context."""
    ignore = ROOT / ".dockerignore"
    patterns = [
        p.strip() for p in ignore.read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    parts = Path(rel).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        hit = any(
            fnmatch.fnmatchcase(c, pat)
            or (pat.startswith("**/") and fnmatch.fnmatchcase(c.split("/")[-1], pat[3:]))
            for c in candidates
        )
        if hit:
            excluded = not negate
    return excluded


def images_built_here() -> dict[str, str]:
    """image tag -> Dockerfile (relative to the repo) of the compose services built from
    deploy/docker/."""
    out = {}
    for svc in services().values():
        build = svc.get("build")
        if build and "image" in svc:
            dockerfile = (ROOT / build["context"] / build["dockerfile"]).resolve()
            if dockerfile.parent == DOCKER_DIR:
                out[svc["image"]] = str(dockerfile.relative_to(ROOT))
    return out


def is_setting_var(name: str) -> bool:
    return name == PIPELINE_VAR or len(env_overrides({name: "x"})) == 1


# --- docker-compose.yml -------------------------------------------------------------------


def test_each_agent_service_runs_its_stage() -> None:
    svcs = services()
    for name, stage in AGENT_SERVICES.items():
        assert name in svcs, f"docker-compose.yml has no service {name!r}"
        assert runs_stage(svcs[name]) == stage, f"{name}: command {svcs[name].get('command')}"
    assert {runs_stage(s) for s in svcs.values()} - {None} == set(WORKERS)


def test_scalable_services_publish_no_fixed_host_port_and_have_no_container_name() -> None:
    svcs = services()
    for name in SCALABLE:
        assert host_ports(svcs[name]) == [], (
            f"{name} publishes a host port: `--scale {name}=3` would clash"
        )
        assert "container_name" not in svcs[name], f"{name}: a container_name cannot be scaled"


def test_workers_serve_metrics_where_their_healthcheck_and_env_say() -> None:
    for name in AGENT_SERVICES:
        svc = services()[name]
        env = environment(svc)
        assert env["STREAMFLOW_METRICS_HOST"] == "0.0.0.0", (
            f"{name}: metrics must listen beyond the container"
        )
        port = int(env["STREAMFLOW_METRICS_PORT"])
        assert worker_healthcheck_port(svc) == port
        assert str(port) in [str(p) for p in svc.get("expose", [])]


def test_every_service_has_a_healthcheck() -> None:
    for name, svc in services().items():
        hc = svc.get("healthcheck")
        assert hc and not hc.get("disable") and hc.get("test") and hc["test"][0] != "NONE", (
            f"{name}: no healthcheck"
        )


def test_workers_wait_for_a_healthy_kafka_at_their_bootstrap_address() -> None:
    svcs = services()
    kafka_env = environment(svcs["kafka"])
    advertised = {a.split("://", 1)[1] for a in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name in (*AGENT_SERVICES, "collector"):
        svc = svcs[name]
        env = environment(svc)
        deps = svc["depends_on"]
        assert deps.get("kafka", {}).get("condition") == "service_healthy" or all(
            svcs[d].get("depends_on", {}).get("kafka", {}).get("condition") == "service_healthy"
            for d in deps
        ), name
        assert env["STREAMFLOW_KAFKA_BOOTSTRAP"] in advertised, (
            f"{name}: {env['STREAMFLOW_KAFKA_BOOTSTRAP']} is not advertised"
        )
        # wait_ready gets a few health-check intervals' worth, not the 10 s default
        assert float(env["STREAMFLOW_KAFKA_CONNECT_TIMEOUT_S"]) >= 20
    # The collector produces only once clean has created the topics with their partition counts.
    assert svcs["collector"]["depends_on"]["clean"]["condition"] == "service_healthy"


def test_kafka_is_kraft_with_an_internal_and_a_host_listener() -> None:
    kafka = services()["kafka"]
    env = environment(kafka)
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    host = [a for a in env["KAFKA_ADVERTISED_LISTENERS"].split(",") if "localhost" in a]
    assert host, "no listener advertised for clients on the host"
    assert host[0].rsplit(":", 1)[1] in host_ports(kafka)
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, (
        "CLUSTER_ID must be a base64 UUID"
    )
    assert int(env["KAFKA_NUM_PARTITIONS"]) == settings().topics.partitions


def test_drain_fits_in_the_stop_grace_period() -> None:
    drain = settings().runtime.drain_timeout_s
    for name in AGENT_SERVICES:
        grace = services()[name]["stop_grace_period"]
        m = re.fullmatch(r"(\d+)s", grace)
        assert m and int(m.group(1)) > drain, (
            f"{name}: stop_grace_period {grace} <= runtime.drain_timeout_s {drain}"
        )


@pytest.mark.parametrize(
    "profiles", [set(), {"cpu"}, {"gpu"}, {"cpu", "registry", "http"}, {"gpu", "registry", "http"}]
)
def test_profiles_are_consistent(profiles: set[str]) -> None:
    on = active(profiles)
    for name, svc in on.items():
        for dep in svc.get("depends_on") or {}:
            assert dep in on, (
                f"with profiles {sorted(profiles)}, {name} depends on {dep}, which does not start"
            )
    inference = [n for n, s in on.items() if runs_stage(s) == "inference"]
    if profiles & {"cpu", "gpu"}:
        assert len(inference) == 1, f"profiles {sorted(profiles)}: inference services {inference}"
        svc = on[inference[0]]
        dockerfile = images_built_here()[svc["image"]]
        if "gpu" in profiles:
            assert gpu_reservations(svc), f"{inference[0]} reserves no GPU"
            assert dockerfile.endswith("Dockerfile.gpu")
            assert environment(svc)["STREAMFLOW_RUNTIME_DEVICE"] == "cuda"
        else:
            assert not gpu_reservations(svc), f"{inference[0]} reserves a GPU on a CPU-only host"
            assert dockerfile.endswith("Dockerfile.cpu")
    else:
        assert inference == []  # documented: pick --profile cpu or gpu
    assert "clean" in on and "normalize" in on and "kafka" in on


def test_only_the_gpu_inference_reserves_a_gpu() -> None:
    assert [n for n, s in services().items() if gpu_reservations(s)] == ["inference"]
    assert gpu_reservations(services()["inference"])[0]["count"] == 1


def test_compose_paths_exist() -> None:
    for name, svc in services().items():
        build = svc.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']}"
        for vol in svc.get("volumes") or []:
            source = vol["source"] if isinstance(vol, dict) else str(vol).split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: volume source {source} does not exist"
            else:
                assert source in (compose().get("volumes") or {}), (
                    f"{name}: named volume {source} not declared"
                )


def test_environment_variable_names_are_settings() -> None:
    names: set[str] = set()
    for svc in services().values():
        names |= {k for k in environment(svc) if k.startswith(ENV_PREFIX)}
    for _, doc in k8s_docs():
        if doc["kind"] in ("ConfigMap", "Secret"):
            names |= {
                k
                for k in {**doc.get("data", {}), **doc.get("stringData", {})}
                if k.startswith(ENV_PREFIX)
            }
        if doc["kind"] == "Deployment":
            names |= {
                e["name"] for e in container(doc).get("env", []) if e["name"].startswith(ENV_PREFIX)
            }
    for path in DOCKER_DIR.glob("Dockerfile.*"):
        for instr, args in dockerfile_instructions(path):
            if instr == "ENV":
                names |= set(re.findall(rf"\b({ENV_PREFIX}[A-Z0-9_]+)=", args))
    assert len(names) > 5
    unknown = sorted(n for n in names if not is_setting_var(n))
    assert unknown == [], f"not streamflow settings: {unknown}"
    assert not is_setting_var("STREAMFLOW_KAFKA_BOOTSTRAPS")  # the check does catch a typo


def test_compose_worker_environments_load() -> None:
    for name in (*AGENT_SERVICES, "collector", "collector-http"):
        env = environment(services()[name])
        assert env.pop(PIPELINE_VAR) == "/app/pipelines/telemetry.toml"
        s = load_settings(PIPELINE, environ=env)
        assert s.kafka.bootstrap == "kafka:9092"


def dns_names(profiles: set[str]) -> dict[str, list[str]]:
    """Name on the compose network -> the services it resolves to (service names and aliases)."""
    out: dict[str, list[str]] = {}
    for name, svc in active(profiles).items():
        out.setdefault(name, []).append(name)
        networks = svc.get("networks") or {}
        for net in networks.values() if isinstance(networks, dict) else ():
            for alias in (net or {}).get("aliases", []):
                out.setdefault(alias, []).append(name)
    return out


@pytest.mark.parametrize("profiles", [{"cpu"}, {"gpu"}])
def test_metrics_port_matches_the_prometheus_scrape_config(profiles: set[str]) -> None:
    if not PROMETHEUS_CONFIG.exists():
        pytest.skip(f"{PROMETHEUS_CONFIG.relative_to(ROOT)} not written yet")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    scraped: dict[str, set[int]] = {}
    for job in config.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                host, _, port = str(target).rpartition(":")
                scraped.setdefault(host, set()).add(int(port))
        for dns in job.get("dns_sd_configs", []):
            for host in dns.get("names", []):
                scraped.setdefault(host, set()).add(int(dns["port"]))
    names = dns_names(profiles)
    stages_scraped = set()
    for host, ports in scraped.items():
        for service in names.get(host, []):
            stage = AGENT_SERVICES.get(service)
            if stage is None:
                continue
            stages_scraped.add(stage)
            want = int(environment(services()[service])["STREAMFLOW_METRICS_PORT"])
            assert ports == {want}, (
                f"Prometheus scrapes {host} on {ports}, {service} serves metrics on {want}"
            )
    assert stages_scraped == set(WORKERS), (
        f"profiles {sorted(profiles)}: Prometheus scrapes stages {stages_scraped}"
    )
    mounted = {
        str(v).split(":")[1] for v in services()["prometheus"]["volumes"] if str(v).startswith("./")
    }
    for rule_file in config.get("rule_files", []):
        assert str(Path("/etc/prometheus") / rule_file) in mounted, (
            f"rule file {rule_file} is not mounted"
        )


def test_grafana_provisioning_points_at_the_compose_services() -> None:
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    if not provisioning.is_dir():
        pytest.skip("deploy/grafana/provisioning not written yet")
    mounts = {
        str(v).split(":")[1] for v in services()["grafana"]["volumes"] if str(v).startswith("./")
    }
    prometheus_port = services()["prometheus"]["ports"][0].split(":")[-1]
    for path in provisioning.rglob("*.y*ml"):
        doc = yaml.safe_load(path.read_text()) or {}
        for ds in doc.get("datasources", []):
            if ds.get("type") == "prometheus":
                assert ds["url"] == f"http://prometheus:{prometheus_port}", path
        for provider in doc.get("providers", []):
            assert provider["options"]["path"] in mounts, f"{path}: dashboards folder not mounted"


# --- deploy/docker ------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_dockerfile(flavour: str) -> None:
    path = DOCKER_DIR / f"Dockerfile.{flavour}"
    instructions = dockerfile_instructions(path)
    copies = [args.split() for instr, args in instructions if instr == "COPY"]
    sources = [
        src
        for parts in copies
        if not any(p.startswith("--from") for p in parts)
        for src in [p for p in parts if not p.startswith("--")][:-1]
    ]
    assert {"pyproject.toml", "README.md", "streamflow", "pipelines", "schemas", "models"} <= set(
        sources
    )
    for src in sources:
        assert (ROOT / src).exists(), f"{path.name}: COPY {src}: not in the repository"
        assert not dockerignored(src), f"{path.name}: COPY {src}: excluded by .dockerignore"
    # what the pipeline file refers to is inside the copied folders, at the same relative place
    s = settings()
    for f in (s.input.schema, s.output.schema, s.model.path, s.model.stats):
        rel = Path(f).relative_to(ROOT)
        assert rel.parts[0] in sources and not dockerignored(str(rel)), rel
    pip = " ".join(args for instr, args in instructions if instr == "RUN" and "pip install" in args)
    extras = re.findall(r'"\.\[([\w,-]+)\]"', pip)
    assert len(extras) == 1, pip
    # exactly one onnxruntime flavour (both provide the module), and the store's Parquet and S3
    assert set(extras[0].split(",")) & {"cpu", "gpu"} == {flavour}
    assert "store" in extras[0].split(","), f"{path.name}: the store step needs the `store` extra"
    entrypoint = [args for instr, args in instructions if instr == "ENTRYPOINT"]
    assert entrypoint[-1] == '["streamflow"]'
    user = [args for instr, args in instructions if instr == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0"), (
        "the image must run as a non-root user"
    )
    bases = [args.split()[0] for instr, args in instructions if instr == "FROM"]
    if flavour == "gpu":
        text = path.read_text()
        base = re.search(r"ARG BASE_IMAGE=(\S+)", text)
        assert (
            base
            and base.group(1).startswith("nvidia/cuda:")
            and "cudnn" in base.group(1)
            and "runtime" in base.group(1)
        )
        assert re.search(r"ARG ORT_GPU_VERSION=\d+\.\d+\.\d+", text), (
            "pin onnxruntime-gpu to the CUDA of the base image"
        )
        assert '"onnxruntime-gpu==${ORT_GPU_VERSION}"' in pip
    else:
        assert any("python:3.11" in b or b == "${PYTHON_IMAGE}" for b in bases)
        assert re.search(r"ARG PYTHON_IMAGE=python:3\.1[1-9]", path.read_text())


def test_dockerignore_keeps_the_build_context_small() -> None:
    for heavy in (".venv", ".git", "bench-results", "tests"):
        assert dockerignored(heavy), heavy


# --- deploy/k8s ---------------------------------------------------------------------------


def test_manifests_parse_and_kustomization_lists_them() -> None:
    docs = k8s_docs()
    for path, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), path.name
        if doc["kind"] != "Kustomization":
            assert doc["metadata"].get("name"), path.name
    resources = kustomization()["resources"]
    for res in resources:
        assert (K8S_DIR / res).is_file(), res
    listed = set(resources) | {"kustomization.yaml"}
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")}
    assert on_disk - listed == {"secret-kafka.example.yaml", "secret-store.example.yaml"}, (
        "every manifest but the Secret examples is applied"
    )
    namespaces = k8s("Namespace")
    assert kustomization()["namespace"] in namespaces


def test_one_deployment_service_and_scaledobject_per_stage() -> None:
    assert len(k8s("Deployment")) == len(WORKERS)
    for stage in WORKERS:
        deployment_for(stage)


@pytest.mark.parametrize("stage", WORKERS)
def test_scaledobjects_follow_the_consumer_groups_and_topics_streamflow_computes(
    stage: str,
) -> None:
    """One kafka trigger per topic the stage's group reads (a sink: the sink and dead-letter
    topics), each on that group."""
    s = settings()
    scaled = k8s("ScaledObject")
    assert len(scaled) == len(WORKERS)
    bootstrap = env_configmap()["STREAMFLOW_KAFKA_BOOTSTRAP"]
    name = deployment_for(stage)["metadata"]["name"]
    [so] = [o for o in scaled.values() if o["spec"]["scaleTargetRef"]["name"] == name]
    triggers = so["spec"]["triggers"]
    assert [t["metadata"]["topic"] for t in triggers] == list(source_topics(s, stage))
    for trigger in triggers:
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert all(isinstance(v, str) for v in meta.values()), (
            "KEDA trigger metadata values are strings"
        )
        assert meta["consumerGroup"] == s.group_id(stage)
        assert meta["bootstrapServers"] == bootstrap
        assert int(meta["lagThreshold"]) > 0
        assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
        assert so["spec"]["maxReplicaCount"] <= topic_partitions(s, meta["topic"]), (
            f"{stage}: replicas beyond the partition count of {meta['topic']} would sit idle"
        )


def test_pipeline_configmap_is_the_pipeline_file() -> None:
    cm = k8s("ConfigMap")["streamflow-pipeline"]
    assert cm["data"]["telemetry.toml"] == PIPELINE.read_text(), (
        "deploy/k8s/configmap-pipeline.yaml is stale: "
        "run python deploy/k8s/render_pipeline_configmap.py"
    )


def test_pods_mount_the_pipeline_where_streamflow_looks_for_it() -> None:
    pipeline_var = env_configmap()[PIPELINE_VAR]
    for stage in WORKERS:
        d = deployment_for(stage)
        c = container(d)
        volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        mounts = [m for m in c["volumeMounts"] if "configMap" in volumes[m["name"]]]
        assert len(mounts) == 1
        cm = k8s("ConfigMap")[volumes[mounts[0]["name"]]["configMap"]["name"]]
        assert pipeline_var in {f"{mounts[0]['mountPath']}/{key}" for key in cm["data"]}
        # the pipeline's relative paths (../schemas, ../models) must land in the image's /app
        assert Path(pipeline_var).parent.parent == Path("/app")


def test_pod_environments_load() -> None:
    s = settings()
    for stage in WORKERS:
        env = pod_env(deployment_for(stage))
        env.pop(PIPELINE_VAR)
        loaded = load_settings(
            PIPELINE, environ={k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
        )
        assert loaded.metrics.host == "0.0.0.0"
        assert loaded.group_id(stage) == s.group_id(stage)


def test_envfrom_refers_to_objects_that_exist() -> None:
    configmaps = k8s("ConfigMap")
    secrets = {d["metadata"]["name"] for _, d in k8s_docs() if d["kind"] == "Secret"}
    for stage in WORKERS:
        for src in container(deployment_for(stage))["envFrom"]:
            if "configMapRef" in src:
                assert src["configMapRef"]["name"] in configmaps
            if "secretRef" in src:
                assert src["secretRef"]["name"] in secrets
                assert src["secretRef"].get("optional") is True, "the example Secret is not applied"


def test_ports_probes_and_services_agree() -> None:
    metrics_port = int(env_configmap()["STREAMFLOW_METRICS_PORT"])
    svcs = k8s("Service")
    for stage in WORKERS:
        d = deployment_for(stage)
        c = container(d)
        assert port_of(c, "metrics") == metrics_port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = c[probe]["httpGet"]
            assert port_of(c, get["port"]) == metrics_port and get["path"] == "/metrics", (
                f"{stage} {probe}"
            )
        pod_labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        [svc] = [v for v in svcs.values() if v["spec"]["selector"].items() <= pod_labels.items()]
        [port] = svc["spec"]["ports"]
        assert port_of(c, port["targetPort"]) == metrics_port
        monitor = k8s("ServiceMonitor")["streamflow"]
        assert (
            monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        )
        assert {e["port"] for e in monitor["spec"]["endpoints"]} == {port["name"]}
        assert kustomization()["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]


def test_images_are_built_from_deploy_docker() -> None:
    built = images_built_here()
    for stage in WORKERS:
        image = container(deployment_for(stage))["image"]
        assert image in built, (
            f"{stage}: image {image} is not one built from deploy/docker/ ({sorted(built)})"
        )
        assert built[image].endswith("Dockerfile.gpu" if stage == "inference" else "Dockerfile.cpu")


def test_resources_gpu_and_graceful_stop() -> None:
    drain = settings().runtime.drain_timeout_s
    for stage in WORKERS:
        d = deployment_for(stage)
        res = container(d)["resources"]
        assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(
            res["limits"]
        ), stage
        assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain
        assert "replicas" not in d["spec"], f"{stage}: KEDA owns the replica count"
        gpus = res["limits"].get("nvidia.com/gpu")
        assert gpus == (1 if stage == "inference" else None), stage
    inference = deployment_for("inference")
    assert pod_env(inference)["STREAMFLOW_RUNTIME_DEVICE"] == "cuda"
    assert any(
        t.get("key") == "nvidia.com/gpu"
        for t in inference["spec"]["template"]["spec"]["tolerations"]
    )


def test_secret_examples_hold_placeholders_only() -> None:
    secrets = {d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] == "Secret"}
    for name, secret in secrets.items():
        values = secret["stringData"]
        assert values and all(re.fullmatch(r"<[^>]+>", v) for v in values.values()), (
            f"{name}: placeholders, never real values"
        )
    assert (
        f"{ENV_PREFIX}KAFKA_SASL_PASSWORD" in secrets["streamflow-kafka-credentials"]["stringData"]
    )
    assert (
        f"{ENV_PREFIX}STORE_S3_SECRET_ACCESS_KEY"
        in (secrets["streamflow-store-credentials"]["stringData"])
    )


# --- the store: its files on a volume (compose, store-pvc) or S3 (k8s) ---------------------

S3_SECRETS = (f"{ENV_PREFIX}STORE_S3_ACCESS_KEY_ID", f"{ENV_PREFIX}STORE_S3_SECRET_ACCESS_KEY")


def test_compose_store_keeps_its_files_on_a_named_volume_the_image_lets_it_write() -> None:
    store = services()["store"]
    s = load_settings(PIPELINE, environ={**environment(store), PIPELINE_VAR: ""})
    assert s.store.path == STORE_MOUNT
    mounts = {
        str(v).split(":")[1]: str(v).split(":")[0]
        for v in store["volumes"]
        if not str(v).startswith((".", "/"))
    }
    assert mounts.get(STORE_MOUNT) in (compose().get("volumes") or {}), (
        f"no named volume at store.path {STORE_MOUNT}"
    )
    assert any(str(v).startswith("./pipelines:/app/pipelines") for v in store["volumes"]), (
        "the store's volumes replace x-worker's: the pipeline mount must be repeated"
    )
    # A named volume starts as a copy of the image's folder, with its owner: the folder must
    # exist in the image and belong to the user the image runs as, or the store cannot write.
    for flavour in ("cpu", "gpu"):
        instructions = dockerfile_instructions(DOCKER_DIR / f"Dockerfile.{flavour}")
        user = [args for instr, args in instructions if instr == "USER"][-1]
        runs = " ".join(args for instr, args in instructions if instr == "RUN")
        assert f"mkdir -p {STORE_MOUNT}" in runs and f"chown {user} {STORE_MOUNT}" in runs, flavour


def test_k8s_store_writes_to_s3_with_credentials_from_a_secret_only() -> None:
    store = deployment_for("store")
    env = pod_env(store)
    s = load_settings(PIPELINE, environ={k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})
    assert s.store.path.startswith("s3://"), "the default on a cluster: S3 (see stage-store.yaml)"
    assert s.store.s3_secret_access_key.reveal(), "the example Secret's key reaches the pod"
    refs = {
        src["secretRef"]["name"]: src["secretRef"]
        for src in container(store)["envFrom"]
        if "secretRef" in src
    }
    assert refs["streamflow-store-credentials"].get("optional") is True, (
        "without the Secret the AWS chain (an IAM role) applies"
    )
    for _, doc in k8s_docs():  # the keys only in a Secret: never a ConfigMap or a pod's env
        if doc["kind"] == "ConfigMap":
            assert not set(S3_SECRETS) & set(doc["data"]), doc["metadata"]["name"]
        if doc["kind"] == "Deployment":
            assert not set(S3_SECRETS) & {e["name"] for e in container(doc).get("env", [])}
    for name in S3_SECRETS:
        assert environment(services()["store"])[name] == "", (
            f"compose: {name} from the shell or .env, no default in the file"
        )


def test_store_pvc_component_mounts_a_shared_volume_at_the_store_path() -> None:
    """deploy/k8s/store-pvc: a kustomize Component (offered, commented, in kustomization.yaml)
    that puts the store on a ReadWriteMany volume instead of S3."""
    comp = yaml.safe_load((STORE_PVC / "kustomization.yaml").read_text())
    assert comp["kind"] == "Component"
    assert "#   - store-pvc" in (K8S_DIR / "kustomization.yaml").read_text()
    [pvc] = [yaml.safe_load((STORE_PVC / r).read_text()) for r in comp["resources"]]
    assert pvc["kind"] == "PersistentVolumeClaim"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "replicas on several nodes share it"
    [patch] = [yaml.safe_load((STORE_PVC / p["path"]).read_text()) for p in comp["patches"]]
    assert patch["metadata"]["name"] == deployment_for("store")["metadata"]["name"]
    pod = patch["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["name"] == container(deployment_for("store"))["name"]  # merged by name
    path = {e["name"]: e["value"] for e in c["env"]}[f"{ENV_PREFIX}STORE_PATH"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == path]
    assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert (
        pod["securityContext"]["fsGroup"]
        == (deployment_for("store")["spec"]["template"]["spec"]["securityContext"]["runAsGroup"])
    ), "the volume must be writable by the image's user"


def test_store_pvc_component_renders(tmp_path: Path) -> None:
    """With kubectl at hand: the Component switched on renders the store Deployment with the
    volume, and the base alone without it."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    shutil.copytree(K8S_DIR, tmp_path / "k8s")
    base = tmp_path / "k8s" / "kustomization.yaml"
    text = base.read_text()
    assert "# components:\n#   - store-pvc\n" in text
    rendered = {}
    for variant, body in (
        ("s3", text),
        ("pvc", text.replace("# components:\n#   - store-pvc\n", "components:\n  - store-pvc\n")),
    ):
        base.write_text(body)
        out = subprocess.run(
            [kubectl, "kustomize", str(base.parent)], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        [dep] = [
            d
            for d in docs
            if d["kind"] == "Deployment" and d["metadata"]["name"] == "streamflow-store"
        ]
        env = {e["name"]: e.get("value") for e in container(dep)["env"]}
        mounts = {m["mountPath"] for m in container(dep)["volumeMounts"]}
        pvcs = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
        rendered[variant] = (env[f"{ENV_PREFIX}STORE_PATH"], STORE_MOUNT in mounts, len(pvcs))
    assert rendered["s3"][0].startswith("s3://") and rendered["s3"][1:] == (False, 0)
    assert rendered["pvc"] == (STORE_MOUNT, True, 1)


# --- monitoring: deploy/prometheus, deploy/grafana, their k8s copies, docs/runbooks.md -------

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "streamflow.json"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
DS_REF = {"type": "prometheus", "uid": "${datasource}"}  # what every panel and query names
# Grafana's built-in annotation query ("Annotations & Alerts") is the one other data source.
BUILTIN_DS = {"type": "grafana", "uid": "-- Grafana --"}
# Every metric a panel may select: streamflow's, Prometheus' `up`, the standard process_*.
SELECTOR = re.compile(r"\b((?:streamflow|process)_\w+|up)\b(\{[^}]*\})?")
NO_PIPELINE_LABEL = {"streamflow_build_info"}  # one per process: the build, not a pipeline's


def render_monitoring() -> ModuleType:
    """deploy/k8s/render_monitoring.py, the script that writes the k8s copies."""
    spec = importlib.util.spec_from_file_location(
        "render_monitoring", K8S_DIR / "render_monitoring.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard()["templating"]["list"]}


def targets() -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in dashboard()["panels"] for t in p.get("targets", [])]


def datasource_refs(node: Any) -> list[Any]:
    """Every value of a ``datasource`` key anywhere in the dashboard."""
    if isinstance(node, dict):
        found = [node["datasource"]] if "datasource" in node else []
        return found + [r for v in node.values() for r in datasource_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in datasource_refs(v)]
    return []


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_dashboard_imports_into_any_grafana() -> None:
    """No data source uid of ours: the import dialog asks for a Prometheus (``__inputs``), the
    ``datasource`` variable defaults to it, and every panel and query follows the variable."""
    d = dashboard()
    [ds_input] = d["__inputs"]
    assert ds_input["name"] == "DS_PROMETHEUS"
    assert (ds_input["type"], ds_input["pluginId"]) == ("datasource", "prometheus")
    requires = {(r["type"], r["id"]) for r in d["__requires"]}
    assert {("grafana", "grafana"), ("datasource", "prometheus")} <= requires
    assert {("panel", p["type"]) for p in d["panels"] if p["type"] != "row"} <= requires
    ds = variables()["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    assert ds["current"]["value"] == "${DS_PROMETHEUS}", "import sets it to the data source chosen"
    refs = datasource_refs(d)
    assert len(refs) > len(targets())
    assert [r for r in refs if r not in (DS_REF, BUILTIN_DS)] == []
    assert "streamflow-prometheus" not in DASHBOARD.read_text()  # the compose data source's uid


def test_dashboard_variables_and_every_query_filter_by_them() -> None:
    """job and namespace beside pipeline and worker, chained in that order; every series a panel
    selects is filtered by job and namespace (and by pipeline where it has that label)."""
    v = variables()
    assert list(v) == ["datasource", "job", "namespace", "pipeline", "instance"]
    assert v["instance"]["label"] == "worker"
    for name in ("job", "namespace", "pipeline", "instance"):
        assert v[name]["type"] == "query" and v[name]["datasource"] == DS_REF, name
        assert f", {name})" in v[name]["query"]["query"], name
    # All on job is the jobs listed (series of streamflow's workers), not .*: `up{job=~"$job"}`
    # must not count every target of a shared Prometheus.
    assert v["job"]["includeAll"] and "allValue" not in v["job"]
    # All on namespace matches series without one too (compose's targets have no namespace).
    assert v["namespace"]["includeAll"] and v["namespace"]["allValue"] == ".*"
    assert 'job=~"$job"' in v["namespace"]["query"]["query"]
    for name in ("pipeline", "instance"):
        query = v[name]["query"]["query"]
        assert 'job=~"$job"' in query and 'namespace=~"$namespace"' in query, name
    assert 'pipeline=~"$pipeline"' in v["instance"]["query"]["query"]
    for title, t in targets():
        selectors = SELECTOR.findall(t["expr"])
        assert selectors, f"{title}: no series"
        for series, matchers in selectors:
            assert matchers, f"{title}: {series} without label matchers"
            assert 'job=~"$job"' in matchers and 'namespace=~"$namespace"' in matchers, (
                f"{title}: {series}{matchers}"
            )
            if series.startswith("streamflow_") and series not in NO_PIPELINE_LABEL:
                assert 'pipeline=~"$pipeline"' in matchers, f"{title}: {series}{matchers}"


def test_dashboard_configmap_is_the_dashboard_for_grafanas_sidecar() -> None:
    rm = render_monitoring()
    cm = k8s("ConfigMap")["streamflow-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert (K8S_DIR / "configmap-dashboard.yaml").read_text() == rm.dashboard_configmap(
        DASHBOARD.read_text()
    ), "deploy/k8s/configmap-dashboard.yaml is stale: run python deploy/k8s/render_monitoring.py"
    shipped = json.loads(cm["data"]["streamflow.json"])
    # The same dashboard, but for the data source the sidecar's Grafana has as its default.
    [ds] = [v for v in shipped["templating"]["list"] if v["type"] == "datasource"]
    assert ds["current"]["value"] == "default"
    ds["current"] = variables()["datasource"]["current"]
    assert shipped == dashboard()


def test_prometheusrule_is_alerts_yml() -> None:
    rm = render_monitoring()
    assert (K8S_DIR / "prometheusrule.yaml").read_text() == rm.prometheus_rule(
        ALERTS.read_text()
    ), "deploy/k8s/prometheusrule.yaml is stale: run python deploy/k8s/render_monitoring.py"
    rule = k8s("PrometheusRule")["streamflow"]
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    # Rendered for another address, only the runbook links change.
    other = yaml.safe_load(rm.prometheus_rule(ALERTS.read_text(), "https://git.example.org/sf/"))
    urls = [r["annotations"]["runbook_url"] for g in other["spec"]["groups"] for r in g["rules"]]
    assert urls and all(u.startswith("https://git.example.org/sf/docs/runbooks.md#") for u in urls)


def test_every_alert_has_a_summary_a_description_and_a_runbook_for_compose_and_k8s() -> None:
    rm = render_monitoring()
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    text = RUNBOOKS.read_text()
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    assert sorted(sections) == sorted(r["alert"] for r in rules), "one runbook per alert, no more"
    for r in rules:
        name, notes = r["alert"], r["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        assert notes["summary"].strip() and notes["description"].strip(), name
        assert notes["runbook_url"] == f"{rm.RUNBOOK_BASE}{rm.RUNBOOKS}#{github_anchor(name)}"
        body = sections[name]
        assert "**Means**" in body and "**Check**" in body and "**Do**" in body, name
        # compose and Kubernetes: their commands, or the table of them at the top
        assert re.search(r"[Cc]ompose", body) and re.search(r"[Kk]ubernetes", body), name

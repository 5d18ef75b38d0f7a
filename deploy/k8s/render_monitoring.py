"""Write the Kubernetes copies of the monitoring files in deploy/:

- deploy/k8s/prometheusrule.yaml: deploy/prometheus/alerts.yml as a PrometheusRule (the
  Prometheus Operator's), its rules unchanged;
- deploy/k8s/configmap-dashboard.yaml: deploy/grafana/dashboards/streamflow.json in a ConfigMap
  that Grafana's dashboard sidecar loads (label grafana_dashboard: "1").

Run from the repository root after editing either source:

    python deploy/k8s/render_monitoring.py

tests/unit/test_deploy.py fails while the files differ from what this writes. The alerts'
runbook links start with RUNBOOK_BASE, a placeholder (this repository has no public address):
``--runbook-base URL`` renders the PrometheusRule with yours instead, e.g.
https://github.com/ORG/streamflow/blob/main/ (docs/runbooks.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "streamflow.json"
RULE_TARGET = HERE / "prometheusrule.yaml"
DASHBOARD_TARGET = HERE / "configmap-dashboard.yaml"
# Where the repository is browsable; alerts.yml's runbook_url annotations start with it.
RUNBOOK_BASE = "https://example.com/streamflow/"
RUNBOOKS = "docs/runbooks.md"

RULE_HEADER = """\
# The alert rules for the Prometheus Operator: deploy/prometheus/alerts.yml as a PrometheusRule.
# GENERATED from deploy/prometheus/alerts.yml by deploy/k8s/render_monitoring.py: edit that file
# and run the script; tests/unit/test_deploy.py checks that the two are equal.
# kube-prometheus-stack loads PrometheusRules carrying its release label by default: add it, e.g.
#   release: kube-prometheus-stack
# (or set its ruleSelectorNilUsesHelmValues=false).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: streamflow
  labels:
    app.kubernetes.io/name: streamflow
spec:
"""

DASHBOARD_HEADER = """\
# The streamflow dashboard for Grafana's dashboard sidecar (kube-prometheus-stack, the grafana
# chart: sidecar.dashboards.enabled), which loads every ConfigMap labelled grafana_dashboard: "1".
# The sidecar looks in Grafana's own namespace unless told otherwise: set
# sidecar.dashboards.searchNamespace to ALL (or to streamflow). With
# sidecar.dashboards.folderAnnotation=grafana_folder it lands in the folder "streamflow".
# The dashboard uses the default Prometheus data source; its variables pick another.
# GENERATED from deploy/grafana/dashboards/streamflow.json by deploy/k8s/render_monitoring.py:
# edit that file and run the script; tests/unit/test_deploy.py checks that the two are equal.
apiVersion: v1
kind: ConfigMap
metadata:
  name: streamflow-dashboard
  labels:
    app.kubernetes.io/name: streamflow
    grafana_dashboard: "1"
  annotations:
    grafana_folder: streamflow
data:
  streamflow.json: |
"""


def indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(f"{pad}{line}" if line.strip() else "\n" for line in text.splitlines(True))


def prometheus_rule(alerts: str, runbook_base: str = RUNBOOK_BASE) -> str:
    """The PrometheusRule: alerts.yml from ``groups:`` on (its header comment is about the
    compose files) under ``spec``, the runbook links moved to ``runbook_base``."""
    body = alerts[alerts.index("\ngroups:\n") + 1 :]
    body = body.replace(f"runbook_url: {RUNBOOK_BASE}", f"runbook_url: {runbook_base}")
    return RULE_HEADER + indent(body, 2)


def sidecar_dashboard(dashboard: str) -> dict[str, object]:
    """The dashboard as the sidecar provisions it: its data source variable on Grafana's default
    data source. (The file's default is ``${DS_PROMETHEUS}``, which Grafana's import replaces with
    the data source chosen there; provisioning replaces nothing, and Grafana would fall back on the
    first Prometheus data source by name rather than on the default.)"""
    d: dict[str, object] = json.loads(dashboard)
    templating = d["templating"]
    assert isinstance(templating, dict)
    for variable in templating["list"]:
        if variable["type"] == "datasource":
            variable["current"] = {"selected": False, "text": "default", "value": "default"}
    return d


def dashboard_configmap(dashboard: str) -> str:
    text = json.dumps(sidecar_dashboard(dashboard), indent=2, ensure_ascii=False) + "\n"
    return DASHBOARD_HEADER + indent(text, 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--runbook-base",
        default=RUNBOOK_BASE,
        help=f"where {RUNBOOKS} is reached, up to the repository (default {RUNBOOK_BASE})",
    )
    args = p.parse_args()
    RULE_TARGET.write_text(prometheus_rule(ALERTS.read_text(), args.runbook_base))
    DASHBOARD_TARGET.write_text(dashboard_configmap(DASHBOARD.read_text()))
    for target in (RULE_TARGET, DASHBOARD_TARGET):
        print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

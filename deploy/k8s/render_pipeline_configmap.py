"""Write deploy/k8s/configmap-pipeline.yaml from pipelines/telemetry.toml (its text, unchanged).

Run from the repository root after editing the pipeline file:

    python deploy/k8s/render_pipeline_configmap.py

tests/unit/test_deploy.py fails while the two differ.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "pipelines" / "telemetry.toml"
TARGET = Path(__file__).resolve().parent / "configmap-pipeline.yaml"

HEADER = """\
# The pipeline file, mounted at /app/pipelines/telemetry.toml in every stage's pod (its relative
# paths, ../schemas and ../models, resolve to the copies baked into the image).
# GENERATED from pipelines/telemetry.toml by deploy/k8s/render_pipeline_configmap.py: edit that
# file and run the script; tests/unit/test_deploy.py checks that the two are equal.
apiVersion: v1
kind: ConfigMap
metadata:
  name: streamflow-pipeline
  labels:
    app.kubernetes.io/name: streamflow
data:
  telemetry.toml: |
"""


def render(text: str) -> str:
    body = "".join(f"    {line}" if line.strip() else "\n" for line in text.splitlines(keepends=True))
    return HEADER + body


if __name__ == "__main__":
    TARGET.write_text(render(SOURCE.read_text()))
    print(f"wrote {TARGET.relative_to(ROOT)}")

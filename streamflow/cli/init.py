"""``streamflow init DIR``: a pipeline project to fill in, which ``streamflow validate`` checks.

It writes a pipeline file modelled on ``pipelines/telemetry.toml`` but minimal, example input
and result schemas, where the model goes and how to export one, and a compose file (Kafka and
one worker).
Until the model is there, ``streamflow validate DIR/pipeline.toml`` says so by its key.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from streamflow.errors import ConfigError

PIPELINE = """\
# The __NAME__ pipeline: records in on __NAME__.raw, one scored result each out on __NAME__.scored,
# records that cannot be scored (with the reason) on __NAME__.dlq.
# Paths are relative to this file. Any key can be overridden by STREAMFLOW_<SECTION>_<KEY>
# (e.g. STREAMFLOW_KAFKA_BOOTSTRAP=kafka:9092) or on the command line (--set kafka.bootstrap=...).
# `streamflow validate pipeline.toml` checks this file against the schema and the model, and
# lists every problem by its key.
name = "__NAME__"

[topics]
raw = "__NAME__.raw"
scored = "__NAME__.scored"
dlq = "__NAME__.dlq"
partitions = 4

[input]
schema = "schemas/input.avsc"   # what one record holds: edit it to match yours
format = "auto"            # avro | json | auto (JSON when a value starts with '{')
key_field = "id"           # the Kafka key of each result
timestamp_field = "timestamp"

[output]
# What one result holds: the key and timestamp, the [[outputs]] below and the metadata. Change
# the outputs and `streamflow validate` says where this schema disagrees; `streamflow schema
# result --pipeline pipeline.toml` prints the one they give.
schema = "schemas/result.avsc"
format = "avro"            # avro | json

[model]
path = "models/model.onnx" # not there yet: models/README.md says how to export one
name = "__NAME__"
version = "0.1.0"
input = "features"         # the model's input: float32 [batch, one column per feature below]
outputs = ["score"]        # the model's output the results read

# The result's fields from the model's outputs: the score, and a label from comparing it with
# the threshold.
[[outputs]]
field = "score"
tensor = "score"

[[outputs]]
field = "label"
tensor = "score"
post = "threshold"
threshold = 0.5
labels = ["normal", "anomaly"]

[kafka]
bootstrap = ""             # empty: `streamflow up` / `demo` start an embedded broker

[metrics]
port = 9108                # Prometheus metrics of the stages

# Features, in the model's input order.
# required: a record without it is dead-lettered; otherwise `default` fills it in.
# out_of_range: clip to [min, max] or reject the record (dead-lettered, reason out_of_range).
# normalize: zscore (mean and std here, or from a model.stats file) | minmax | log1p | none.

[[features]]
name = "temperature_c"
required = true
min = -40.0
max = 150.0
out_of_range = "reject"
mean = 45.0
std = 12.0

[[features]]
name = "load_pct"
default = 0.0
min = 0.0
max = 100.0
out_of_range = "clip"
normalize = "minmax"
scale_min = 0.0
scale_max = 100.0

[[features]]
name = "power_w"
required = true
min = 0.0
max = 5000.0
out_of_range = "reject"
mean = 400.0
std = 150.0
"""

INPUT_SCHEMA = """\
{
  "type": "record",
  "name": "Reading",
  "namespace": "example",
  "doc": "One record in. Measurements are nullable: a sensor that did not report is null.",
  "fields": [
    {"name": "id", "type": "string", "doc": "What the record is about; the Kafka key."},
    {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "temperature_c", "type": ["null", "double"], "default": null},
    {"name": "load_pct", "type": ["null", "double"], "default": null},
    {"name": "power_w", "type": ["null", "double"], "default": null}
  ]
}
"""

RESULT_SCHEMA = """\
{
  "type": "record",
  "name": "Result",
  "namespace": "example",
  "doc": "One result per input record; the Kafka key is the input record's key.",
  "fields": [
    {"name": "id", "type": "string"},
    {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"},
     "doc": "The input record's timestamp."},
    {"name": "score", "type": "double", "doc": "The model's score."},
    {"name": "label", "type": "string", "doc": "anomaly when score >= 0.5, else normal."},
    {"name": "model_name", "type": "string"},
    {"name": "model_version", "type": "string"},
    {"name": "latency_ms", "type": "double",
     "doc": "From the input record's Kafka timestamp to the result."}
  ]
}
"""

MODELS_README = """\
# The model

Put the ONNX model here as `model.onnx` (`model.path` in `../pipeline.toml`). It takes one
float32 input named `features`, shape `[batch, 3]`: the pipeline's `[[features]]` in their
order (temperature_c, load_pct, power_w), already cleaned and normalized by the pipeline; and
gives an output named `score`, shape `[batch]` or `[batch, 1]`, which the results carry with a
label (`[[outputs]]`). Another shape, more outputs, a classifier's labels and probabilities:
change `[model]` and `[[outputs]]` to match, `streamflow validate` says what disagrees.

From a scikit-learn regressor, with skl2onnx (`pip install skl2onnx`):

    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(fitted_model, initial_types=[("features", FloatTensorType([None, 3]))],
                  final_types=[("score", FloatTensorType([None, 1]))], target_opset=17)
    open("models/model.onnx", "wb").write(onx.SerializeToString())

(A classifier gives `output_label` and `output_probability` instead: name them in
`model.outputs` and `[[outputs]]`, as `pipelines/fleet-health.toml` in streamflow does.)

From PyTorch:

    torch.onnx.export(net, torch.zeros(1, 3), "models/model.onnx",
                      input_names=["features"], output_names=["score"],
                      dynamic_axes={"features": {0: "batch"}, "score": {0: "batch"}})

Optional: `model.stats`, a JSON file of the training data's per-feature statistics, turns on
the input-drift gauge (`[monitoring]`); without it the mean and std in the pipeline file are
used. Then check everything at once:

    streamflow validate pipeline.toml
"""

COMPOSE = """\
# __NAME__ on one host: Kafka (KRaft, one node) and one streamflow worker running every stage
# of ../pipeline.toml (this folder is mounted at /project).
#
#   docker compose up -d
#   docker compose logs -f worker
#
# The worker's image has streamflow in it: build it from a streamflow checkout,
#   docker build -f deploy/docker/Dockerfile.cpu -t streamflow:cpu .
# or from any Python image with `pip install streamflow-inference[cpu]` and ENTRYPOINT
# ["streamflow"]; set STREAMFLOW_IMAGE to use another name.
# From the host: Kafka on localhost:9094, the worker's metrics on localhost:9108/metrics.

services:
  kafka:
    image: apache/kafka:4.0.0
    hostname: kafka
    restart: unless-stopped
    ports:
      - "9094:9094" # from the host: localhost:9094 (containers use kafka:9092)
    environment:
      CLUSTER_ID: vmj4yPOuQfSauV9kTRe7Pw # any 16 bytes, base64 (kafka-storage.sh random-uuid)
      KAFKA_NODE_ID: 1
      KAFKA_PROCESS_ROLES: broker,controller
      KAFKA_LISTENERS: PLAINTEXT://:9092,CONTROLLER://:9093,EXTERNAL://:9094
      KAFKA_ADVERTISED_LISTENERS: PLAINTEXT://kafka:9092,EXTERNAL://localhost:9094
      KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: >-
        PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT
      KAFKA_CONTROLLER_LISTENER_NAMES: CONTROLLER
      KAFKA_INTER_BROKER_LISTENER_NAME: PLAINTEXT
      KAFKA_CONTROLLER_QUORUM_VOTERS: 1@kafka:9093
      KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: 1
      KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: 1
      KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: 1
    volumes:
      - kafka-data:/var/lib/kafka/data
    healthcheck:
      test:
        - CMD-SHELL
        - >-
          /opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:9092
          > /dev/null 2>&1
      interval: 10s
      timeout: 15s
      retries: 12
      start_period: 20s

  worker:
    image: ${STREAMFLOW_IMAGE:-streamflow:cpu}
    restart: unless-stopped
    command: ["worker", "--stage", "all"]
    # Longer than runtime.drain_timeout_s (30 s): on SIGTERM the stages finish and commit their
    # in-flight batches before they stop.
    stop_grace_period: 45s
    depends_on:
      kafka:
        condition: service_healthy
    volumes:
      - .:/project:ro
    environment:
      STREAMFLOW_PIPELINE: /project/pipeline.toml
      STREAMFLOW_KAFKA_BOOTSTRAP: kafka:9092
      STREAMFLOW_KAFKA_CONNECT_TIMEOUT_S: "30"
      STREAMFLOW_METRICS_HOST: 0.0.0.0
      STREAMFLOW_METRICS_PORT: "9108"
      STREAMFLOW_RUNTIME_DEVICE: cpu
    ports:
      - "127.0.0.1:9108:9108"

volumes:
  kafka-data:
"""

FILES = {
    "pipeline.toml": PIPELINE,
    "schemas/input.avsc": INPUT_SCHEMA,
    "schemas/result.avsc": RESULT_SCHEMA,
    "models/README.md": MODELS_README,
    "docker-compose.yml": COMPOSE,
}


def project_name(folder: Path) -> str:
    """The pipeline's name from the folder's: lower case, letters, digits and dashes."""
    name = re.sub(r"[^a-z0-9]+", "-", folder.resolve().name.lower()).strip("-")
    return name or "my-pipeline"


def init(folder: Path) -> list[Path]:
    """Write the project's files into ``folder`` (created if needed); the files written.

    Writes nothing, and raises ConfigError naming them, when any of them exists already."""
    there = [folder / rel for rel in FILES if (folder / rel).exists()]
    if there:
        raise ConfigError(
            [f"{p}: exists already (streamflow init overwrites nothing)" for p in there],
            source=str(folder),
        )
    name = project_name(folder)
    written = []
    for rel, text in FILES.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("__NAME__", name))
        written.append(path)
    return written


def next_steps(folder: Path) -> str:
    """What to do after ``init``, as commands to type."""
    name = project_name(folder)
    pipeline = folder / "pipeline.toml"
    record = (
        '{"id": "sensor-1", "timestamp": 1764000000000, '
        '"temperature_c": 61.5, "load_pct": 55.0, "power_w": 420.0}'
    )
    return "\n".join(
        [
            "next:",
            f"  1. put your ONNX model at {folder / 'models' / 'model.onnx'}"
            f" ({folder / 'models' / 'README.md'} says how to export one)",
            f"  2. make {folder / 'schemas' / 'input.avsc'} and the [[features]] of {pipeline}"
            " match your records",
            f"  3. streamflow validate {pipeline}    # lists what is missing or disagrees, by key",
            f"  4. streamflow up --pipeline {pipeline}    # embedded broker + the stages"
            f" (or: cd {folder} && docker compose up -d)",
            f"  5. streamflow produce {name}.raw --bootstrap HOST:PORT --pipeline {pipeline}"
            f" --json '{record}'",
            f"     streamflow consume {name}.scored --bootstrap HOST:PORT --limit 1"
            f" --pipeline {pipeline}",
        ]
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow init DIR``."""
    i = sub.add_parser(
        "init",
        help="start a pipeline project: pipeline file, schema, model folder, compose file",
    )
    i.add_argument("dir", type=Path, help="the project's folder (created if needed)")
    i.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the project and print what was written and what comes next."""
    written = init(args.dir)
    print(f"streamflow init: wrote {', '.join(str(p) for p in written)}")
    print(next_steps(args.dir))
    return 0

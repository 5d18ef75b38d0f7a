"""Model kinds: everything that differs between a tabular model and a text encoder, in one object.

A kind says which inputs it takes from a record (the clean step's decoding and checks), how a
cleaned batch becomes model-ready (normalize), how the model is fed and what comes out of it,
how its outputs become result fields, how ``streamflow validate`` checks the pipeline's files
against it, and which metrics it adds. The steps call these methods and never branch on the
kind: adding a kind is one module here plus one line in ``KINDS`` (docs/architecture.md,
"Add a model kind").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from streamflow.codecs import ResultEncoder, SchemaRegistry, schema_registry
from streamflow.errors import ConfigError
from streamflow.inference.outputs import (
    ResultField,
    input_types,
    record_fields,
    result_schema,
    schema_problems,
)
from streamflow.metrics import Metrics
from streamflow.records import BytesColumn, Reason, RecordBatch
from streamflow.settings import Settings

if TYPE_CHECKING:
    from streamflow.inference.session import LoadedModel


class StageMetrics(Protocol):
    """What a kind needs to add its own metrics: the instruments and the stage's labels."""

    @property
    def metrics(self) -> Metrics: ...

    @property
    def pipeline(self) -> str: ...

    @property
    def stage(self) -> str: ...


@dataclass(frozen=True)
class Cleaned:
    """One partition's raw messages decoded and checked by the kind: one entry per message."""

    ok: np.ndarray  # bool[n]: the row goes on
    errors: list[Reason | None]  # why a message did not decode (a DecodeError; None: it did)
    reasons: list[Reason | None]  # why a decoded record was rejected (a ValidationError; None: not)
    ids: list[str]  # the key field, utf-8
    event_ms: np.ndarray  # int64[n]: the record's own timestamp
    features: np.ndarray  # float32[n, F]; F = 0 when the kind carries its input in ``texts``
    texts: BytesColumn | None = None
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # pass-through fields, by name


@dataclass(frozen=True)
class Prepared:
    """A cleaned batch made model-ready: the batches to score, and the rows refused on the way."""

    batches: list[RecordBatch]
    bad_rows: np.ndarray  # int positions in the cleaned batch
    reasons: list[Reason]  # one per bad row: a ValidationError


# A model's outputs for a batch, by name, one row per record (first dimension n): numbers as
# float arrays, a string label tensor as an object array. Tabular: each ONNX output it reads, by
# its name; text-embedding: "embedding". after_model transforms see them by these names.
Outputs = dict[str, np.ndarray]


def take_outputs(outputs: Outputs, index: np.ndarray) -> Outputs:
    """The rows at ``index`` (integer positions or a boolean mask) of every output."""
    return {k: v[index] for k, v in outputs.items()}


def concat_outputs(parts: Sequence[Outputs]) -> Outputs:
    """Outputs of consecutive row ranges as one (every part has the same names)."""
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class InputDecoder(Protocol):
    """What the clean step asks of a kind's input decoder."""

    @property
    def registry(self) -> SchemaRegistry | None:
        """The schema registry it reads through; None: it reads no schema ids from headers."""
        ...


class ModelKind(Protocol):
    """One kind of model; ``KINDS`` maps ``model.kind`` names to implementations."""

    name: ClassVar[str]
    synthetic: ClassVar[str]  # which synthetic records feed it (collectors/: "telemetry", "texts")
    input_names: tuple[str, ...]  # the ONNX inputs it feeds
    output_names: tuple[str, ...]  # the ONNX outputs it reads

    def __init__(self, settings: Settings) -> None: ...

    @property
    def decoder(self) -> InputDecoder:
        """The input decoder, built on first use: the clean step builds it at start-up, so a bad
        schema or registry fails there, and no other step builds one."""
        ...

    @property
    def encoder(self) -> ResultEncoder:
        """The result encoder, built on first use: only the inference step registers a schema."""
        ...

    def clean(
        self,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None],
        headers: Sequence[Any] | None = None,
    ) -> Cleaned:
        """The clean step: decode a partition's messages and check what the model needs
        (``headers``: each message's, where a registry reads schema ids from them)."""
        ...

    def prepare(self, batch: RecordBatch, stage: StageMetrics) -> Prepared:
        """The normalize step: a cleaned batch as model-ready batches."""
        ...

    def start(self, model: LoadedModel) -> None:
        """Once a model file is loaded (at start-up and on hot swap): set its head, if any."""
        ...

    def feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The ONNX inputs for the model-ready features ``x``."""
        ...

    def outputs(self, raws: Sequence[Any], x: np.ndarray) -> Outputs:
        """The ONNX outputs ``raws`` (one per ``output_names``) for the inputs ``x``, by name,
        one row per record. A model output that does not fit (a shape, an unknown class) raises
        ModelError."""
        ...

    def output_fields(self) -> list[ResultField]:
        """The result fields its outputs fill (once started: they may depend on the model)."""
        ...

    def monitored(self, outputs: Outputs) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(scores, labels) by result field for the model monitor: each score's or per-class
        probability's values, each label field's predicted labels."""
        ...

    def observe(self, xs: Sequence[np.ndarray], stage: StageMetrics) -> None:
        """Kind-specific metrics for one scoring call (``xs``: the inputs, one per width)."""
        ...

    def results(
        self, batch: RecordBatch, outputs: Outputs, model: LoadedModel, latency_ms: np.ndarray
    ) -> list[bytes]:
        """One encoded result per row of ``batch``, from the model's outputs."""
        ...

    def describe(self) -> str:
        """What it takes from a record, for ``streamflow validate``'s summary."""
        ...

    def sample_inputs(self, records: int, n_features: int) -> np.ndarray:
        """Model-ready rows for benchmarks (``bench inference``, ``doctor``), the same every run."""
        ...

    def check_files(self) -> list[str]:
        """``streamflow validate``: the input and result schemas and the model file against the
        settings, every problem naming its key."""
        ...


def _kinds() -> dict[str, type[ModelKind]]:
    from streamflow.inference.kinds.tabular import TabularKind
    from streamflow.inference.kinds.text import TextEmbeddingKind

    return {TabularKind.name: TabularKind, TextEmbeddingKind.name: TextEmbeddingKind}


def kind_class(name: str) -> type[ModelKind]:
    kinds = _kinds()
    if name not in kinds:
        raise ConfigError(f"model.kind: must be one of {', '.join(kinds)}, got {name!r}")
    return kinds[name]


def kind_for(settings: Settings) -> ModelKind:
    """The pipeline's model kind, built for its settings."""
    return kind_class(settings.model.kind)(settings)


def settings_problems(settings: Settings) -> list[str]:
    """The kind's own rules on the settings (``collect_settings`` runs them)."""
    kinds = _kinds()
    check = getattr(kinds.get(settings.model.kind), "check_settings", None)
    return check(settings) if check is not None else []


def file_problems(settings: Settings) -> list[str]:
    """Every cross-file problem of the pipeline (``streamflow validate``, and each worker at
    start)."""
    return kind_for(settings).check_files()


def require_valid(settings: Settings) -> None:
    """Raise ConfigError naming every cross-file problem (used at worker start-up)."""
    problems = file_problems(settings)
    if problems:
        raise ConfigError(problems, source=settings.source)


# ---- shared by the kinds ----------------------------------------------------------------------


def decoder_options(s: Settings) -> dict[str, Any]:
    """What every kind's input decoder takes from ``[input]`` and ``[limits]``."""
    i = s.input
    return {"format": i.format, "key_field": i.key_field, "timestamp_field": i.timestamp_field,
            "registry": schema_registry(s), "limits": s.limits,
            "columns": s.result.pass_through}  # fmt: skip


NUMERIC = {"double", "float", "int", "long"}


def avro_types(avro_type: Any) -> set[str]:
    if isinstance(avro_type, list):
        return set().union(*(avro_types(t) for t in avro_type))
    if isinstance(avro_type, dict):
        return {avro_type.get("type", "")}
    return {str(avro_type)}


def input_fields(s: Settings) -> tuple[dict[str, set[str]], list[str]]:
    """(the input schema's fields and their Avro types, problems with the key and time fields)."""
    if not Path(s.input.schema).is_file():
        return {}, []
    try:
        schema = json.loads(Path(s.input.schema).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return {}, [f"input.schema: cannot read {s.input.schema}: {exc}"]
    fields = {f["name"]: avro_types(f["type"]) for f in schema.get("fields", [])}
    p = []
    for key in ("key_field", "timestamp_field"):
        name = getattr(s.input, key)
        if name not in fields:
            p.append(f"input.{key}: {name!r} is not a field of {s.input.schema}")
    if s.input.timestamp_field in fields and not fields[s.input.timestamp_field] & {"long", "int"}:
        p.append(
            f"input.timestamp_field: {s.input.timestamp_field!r} must be a long (epoch ms) "
            f"in {s.input.schema}"
        )
    return fields, p


def _input_schema(s: Settings) -> dict[str, Any]:
    try:
        return dict(json.loads(Path(s.input.schema).read_text()))
    except (OSError, json.JSONDecodeError):
        return {}


def declared_record(s: Settings, output_fields: Sequence[ResultField]) -> list[ResultField]:
    """The pipeline's result record (``inference/outputs.py``): key, timestamp, outputs,
    pass-through, metadata."""
    return record_fields(s, output_fields, input_types(_input_schema(s)))


def result_schema_for(s: Settings, output_fields: Sequence[ResultField]) -> dict[str, Any]:
    """The schema results are written with: ``output.schema`` when given, else generated."""
    if s.output.schema:
        return dict(json.loads(Path(s.output.schema).read_text()))
    return result_schema(s, declared_record(s, output_fields))


def build_encoder(s: Settings, output_fields: Sequence[ResultField]) -> ResultEncoder:
    """The result encoder for the pipeline's schema, format, registry and sink topic."""
    return ResultEncoder(
        result_schema_for(s, output_fields),
        format=s.output.format,
        registry=schema_registry(s),
        topic=s.topics.scored,
    )


def check_result_schema(
    s: Settings, output_fields: Sequence[ResultField], *, outputs_known: bool = True
) -> list[str]:
    """``streamflow validate``: the user's result schema against the declared record, and every
    pass-through field against the input schema. ``outputs_known=False`` (the model does not
    load, which is reported already): the schema is compared once the outputs are known."""
    p: list[str] = []
    inputs = input_types(_input_schema(s))
    for name in s.result.pass_through:
        if inputs and name not in inputs:
            p.append(f"result.pass_through: {name!r} is not a field of {s.input.schema}")
    fields = declared_record(s, output_fields)
    seen: set[str] = set()
    for f in fields:
        if f.name in seen:
            p.append(f"result: two result fields are named {f.name!r}")
        seen.add(f.name)
    if not outputs_known or not s.output.schema or not Path(s.output.schema).is_file():
        return p
    try:
        given = json.loads(Path(s.output.schema).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [*p, f"output.schema: cannot read {s.output.schema}: {exc}"]
    return p + schema_problems(s.output.schema, given, fields)


def record_columns(
    s: Settings, batch: RecordBatch, model: LoadedModel, latency_ms: np.ndarray
) -> dict[str, list[Any]]:
    """Every result column that is not a model output: key, timestamp, pass-through, metadata."""
    n = len(batch)
    named: dict[str, list[Any]] = {
        s.input.key_field: batch.device_id_list(),
        s.input.timestamp_field: batch.event_ms.tolist(),
    }
    for name in s.result.pass_through:
        col = batch.columns.get(name)
        named[name] = col.tolist() if col is not None else [None] * n
    for m in s.result.metadata:
        if m == "model_name":
            named[m] = [model.name] * n
        elif m == "model_version":
            named[m] = [model.version] * n
        elif m == "latency_ms":
            named[m] = np.asarray(latency_ms, dtype=np.float64).tolist()
        elif m == "source_topic":
            named[m] = [batch.source_topic] * n
        elif m == "source_partition":
            named[m] = [batch.source_partition] * n
        elif m == "source_offset":
            named[m] = batch.offsets.tolist()
        elif m == "ingest_ms":
            named[m] = batch.ingest_ms.tolist()
    return named


def model_signature(s: Settings) -> tuple[dict[str, Any], dict[str, Any], Any, list[str]]:
    """(inputs, outputs, the session) of the model file, loaded on the CPU, or the problem."""
    if not Path(s.model.path).is_file():
        return {}, {}, None, []
    try:
        import onnxruntime as ort
    except ImportError:
        return (
            {},
            {},
            None,
            ["model: ONNX Runtime is not installed (pip install 'streamflow-inference[cpu]')"],
        )
    try:
        sess = ort.InferenceSession(s.model.path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's own exception types
        return {}, {}, None, [f"model.path: cannot load {s.model.path}: {exc}"]
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = {o.name: o for o in sess.get_outputs()}
    return inputs, outputs, sess, []

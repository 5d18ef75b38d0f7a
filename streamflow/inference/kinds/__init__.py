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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from streamflow.errors import ConfigError
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


@dataclass(frozen=True)
class Prepared:
    """A cleaned batch made model-ready: the batches to score, and the rows refused on the way."""

    batches: list[RecordBatch]
    bad_rows: np.ndarray  # int positions in the cleaned batch
    reasons: list[Reason]  # one per bad row: a ValidationError


class ModelKind(Protocol):
    """One kind of model; ``KINDS`` maps ``model.kind`` names to implementations."""

    name: ClassVar[str]
    synthetic: ClassVar[str]  # which synthetic records feed it (collectors/: "telemetry", "texts")
    output_field: ClassVar[str]  # the model output's column name for after_model transforms
    input_names: tuple[str, ...]  # the ONNX inputs it feeds

    def __init__(self, settings: Settings) -> None: ...

    @property
    def decoder(self) -> object:
        """The input decoder, built on first use: the clean step builds it at start-up, so a bad
        schema or registry fails there, and no other step builds one."""
        ...

    @property
    def encoder(self) -> object:
        """The result encoder, built on first use: only the inference step registers a schema."""
        ...

    def clean(self, values: Sequence[bytes | None], keys: Sequence[bytes | None]) -> Cleaned:
        """The clean step: decode a partition's messages and check what the model needs."""
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

    def output(self, raw: np.ndarray, n: int) -> np.ndarray:
        """The model's first output as one row per record (a score, or an embedding row)."""
        ...

    def observe(self, xs: Sequence[np.ndarray], stage: StageMetrics) -> None:
        """Kind-specific metrics for one scoring call (``xs``: the inputs, one per width)."""
        ...

    def results(
        self, batch: RecordBatch, outputs: np.ndarray, model: LoadedModel, latency_ms: np.ndarray
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
            "schema_registry_url": i.schema_registry_url, "limits": s.limits}  # fmt: skip


def encoder_options(s: Settings) -> dict[str, Any]:
    """What every kind's result encoder takes: the output format, the registry, the sink topic."""
    return {"format": s.output.format, "schema_registry_url": s.input.schema_registry_url,
            "topic": s.topics.scored}  # fmt: skip


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


def check_result_schema(s: Settings, result_fields: Sequence[str]) -> list[str]:
    """The result schema has every field the kind's results carry."""
    if not Path(s.output.schema).is_file():
        return []
    try:
        schema = json.loads(Path(s.output.schema).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [f"output.schema: cannot read {s.output.schema}: {exc}"]
    names = {f["name"] for f in schema.get("fields", [])}
    return [
        f"output.schema: {s.output.schema} lacks field {n!r}, which every result carries"
        for n in sorted(set(result_fields) - names)
    ]


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
            ["model: ONNX Runtime is not installed (pip install 'streamflow[cpu]')"],
        )
    try:
        sess = ort.InferenceSession(s.model.path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's own exception types
        return {}, {}, None, [f"model.path: cannot load {s.model.path}: {exc}"]
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = {o.name: o for o in sess.get_outputs()}
    return inputs, outputs, sess, []

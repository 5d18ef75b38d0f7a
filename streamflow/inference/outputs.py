"""Model outputs -> result fields, and the result record they make (``[[outputs]]``, ``[result]``).

A model output (an ONNX output of the graph) is one of three shapes, read from the model's
signature:

- ``label``: one class per row, a string or int64 tensor [batch] (a skl2onnx classifier's
  ``output_label``); identity gives a string field (an int64 label is mapped through ``labels``
  by index; a class outside them fails that record);
- ``scalar``: one number per row, a float tensor [batch] or [batch, 1] (a regressor, a binary
  score); identity gives a double, threshold a label;
- ``vector``: C numbers per row, a float tensor [batch, C] or a ZipMap (a sequence of maps from
  class to probability, the ``output_probability`` skl2onnx writes by default, its classes
  taken from the map's keys, learnt from one run: int64 keys 0..C-1 take the declared labels by
  index, like an int64 label); identity and softmax give one double field per class
  (``<field>_<label>``) when the classes are named, else an array of floats; argmax gives the
  label of the largest, top_k the k largest labels; ``score_field`` adds their values;
  threshold compares one column with ``threshold`` and gives one of its two labels (below, at
  or above; not class names).

The result record is the key field and the timestamp field of the input, the outputs' fields in
``[[outputs]]`` order, the pass-through input fields, then the metadata (``[result]``). Its Avro
schema is generated from this declaration (``streamflow schema result``) or checked against the
user's ``output.schema`` by ``streamflow validate``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamflow.errors import ModelError
from streamflow.settings import OutputSpec, Settings

AVRO_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BINARY_LABELS = ("normal", "anomaly")  # a threshold's labels when none are declared
TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}
METADATA_TYPES: dict[str, Any] = {
    "model_name": "string",
    "model_version": "string",
    "latency_ms": "double",
    "source_topic": "string",
    "source_partition": "int",
    "source_offset": "long",
    "ingest_ms": TIMESTAMP,
}
METADATA_DOCS = {
    "latency_ms": "From the raw message's Kafka timestamp to the moment the result was produced.",
    "source_topic": "The raw topic the input record was read from.",
    "source_partition": "Its partition.",
    "source_offset": "Its offset.",
    "ingest_ms": "The raw message's Kafka timestamp.",
}


@dataclass(frozen=True)
class ResultField:
    """One field of the result record: its name, Avro type and doc."""

    name: str
    avro: Any
    doc: str = ""

    def as_avro(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.avro, **({"doc": self.doc} if self.doc else {})}


@dataclass(frozen=True)
class TensorInfo:
    """What the model's signature says of one output."""

    shape: str  # "label" | "scalar" | "vector"
    width: int | None = None  # a vector's C, when the signature fixes it
    integer: bool = False  # an int64 label tensor
    zipmap: bool = False  # a vector as a sequence of maps: its classes are known once it has run

    @classmethod
    def of(cls, onnx_type: str, dims: Sequence[Any]) -> TensorInfo:
        if onnx_type.startswith("seq(map("):
            return cls("vector", zipmap=True)
        if onnx_type in ("tensor(string)", "tensor(int64)", "tensor(int32)"):
            return cls("label", integer=onnx_type != "tensor(string)")
        last = dims[-1] if len(dims) > 1 else 1
        if len(dims) <= 1 or last == 1:
            return cls("scalar")
        return cls("vector", last if isinstance(last, int) else None)


def default_outputs(s: Settings) -> tuple[OutputSpec, ...]:
    """``[[outputs]]`` as declared, or the tabular default: the first output as ``score`` and
    ``label`` against ``model.threshold`` (the shipped telemetry result)."""
    if s.outputs:
        return tuple(o if o.tensor else _with_tensor(o, s) for o in s.outputs)
    tensor = s.model.outputs[0] if s.model.outputs else "score"
    return (
        OutputSpec("score", tensor, "identity"),
        OutputSpec("label", tensor, "threshold", BINARY_LABELS, s.model.threshold),
    )


def _with_tensor(o: OutputSpec, s: Settings) -> OutputSpec:
    from dataclasses import replace

    return replace(o, tensor=s.model.outputs[0] if s.model.outputs else "score")


def tensors_of(specs: Sequence[OutputSpec]) -> tuple[str, ...]:
    """The model outputs the specs read, each once, in order."""
    return tuple(dict.fromkeys(o.tensor for o in specs))


class OutputMap:
    """The ``[[outputs]]`` of a pipeline against one model's signature: the model's raw outputs
    as arrays, then as result fields."""

    def __init__(self, specs: Sequence[OutputSpec], info: Mapping[str, TensorInfo]) -> None:
        self.specs = tuple(specs)
        self.info = dict(info)
        self.tensors = tensors_of(self.specs)
        self.classes: dict[str, tuple[str, ...]] = {}  # a ZipMap's classes, from its keys

    # ---- the model's raw outputs -> arrays --------------------------------------------------

    def arrays(self, raws: Sequence[Any], n: int) -> dict[str, np.ndarray]:
        """One array per tensor read, first dimension ``n``: labels as they come (object or
        int64 [n]), scalars float64 [n], vectors float64 [n, C] (a ZipMap's maps in the order
        of its keys)."""
        out: dict[str, np.ndarray] = {}
        for name, raw in zip(self.tensors, raws, strict=True):
            info = self.info[name]
            if isinstance(raw, list):  # a ZipMap: [{class: probability, ...}, ...]
                if not raw:  # no rows: the columns learnt before
                    out[name] = np.zeros((0, len(self.classes.get(name, ()))), np.float64)
                    continue
                keys = self._zipmap_order(name, tuple(raw[0]))
                self.classes[name] = tuple(str(k) for k in keys)  # the columns' order
                arr = np.array([[d[k] for k in keys] for d in raw], dtype=np.float64)
                out[name] = arr.reshape(n, len(keys))
            elif info.shape == "label":
                arr = np.asarray(raw)
                if arr.dtype.kind in "iu":
                    out[name] = self._indices(name, arr.reshape(n))
                else:
                    out[name] = arr.astype(object).reshape(n)
            elif info.shape == "scalar":
                out[name] = np.asarray(raw, dtype=np.float64).reshape(n)
            else:
                out[name] = np.asarray(raw, dtype=np.float64).reshape(n, -1)
        return out

    def _zipmap_order(self, name: str, keys: tuple[Any, ...]) -> tuple[Any, ...]:
        """A ZipMap's keys in the order its declared labels name them, when they name the same
        classes (``labels = ["healthy", "thermal", ...]`` over skl2onnx's sorted classes)."""
        for spec in self.specs:
            if spec.tensor == name and spec.labels:
                by_name = {str(k): k for k in keys}
                if sorted(by_name) == sorted(spec.labels) and list(by_name) != list(spec.labels):
                    return tuple(by_name[lb] for lb in spec.labels)
        return keys

    def _indices(self, name: str, a: np.ndarray) -> np.ndarray:
        """An int64 label tensor's classes, each an index into the labels that name it: a class
        outside them raises ModelError (scoring dead-letters that record alone)."""
        for i, spec in enumerate(self.specs):
            if spec.tensor == name and spec.labels:
                bad = a[(a < 0) | (a >= len(spec.labels))]
                if bad.size:
                    raise ModelError(
                        f"outputs[{i}] ({spec.field}).labels: {name} gave class {bad[0]}; "
                        f"the {len(spec.labels)} labels name classes 0..{len(spec.labels) - 1}"
                    )
        return a

    # ---- arrays -> result fields ------------------------------------------------------------

    def labels_of(self, spec: OutputSpec) -> tuple[str, ...]:
        """The class names of ``spec``'s tensor: declared, else a ZipMap's keys. A threshold's
        are its two labels (below, at or above): declared, else ``BINARY_LABELS``."""
        if spec.post == "threshold":
            return spec.labels or BINARY_LABELS
        return spec.labels or self.classes.get(spec.tensor, ())

    def fields(self) -> list[ResultField]:
        """The result fields the outputs make, in order (``ModelError`` if one cannot be made:
        ``problems`` says which)."""
        problems = self.problems()
        if problems:
            raise ModelError("; ".join(problems))
        out: list[ResultField] = []
        for spec in self.specs:
            out += self._fields_of(spec)
        return out

    def _fields_of(self, spec: OutputSpec) -> list[ResultField]:
        info = self.info[spec.tensor]
        doc = f"{spec.post} of the model output {spec.tensor}"
        labels = self.labels_of(spec)
        if spec.post in ("identity", "softmax"):
            if info.shape == "label":
                kind = "string" if not info.integer or labels else "long"
                return [ResultField(spec.field, kind, doc)]
            if info.shape == "scalar":
                return [ResultField(spec.field, "double", doc)]
            if labels:
                return [ResultField(f"{spec.field}_{lb}", "double", doc) for lb in labels]
            return [ResultField(spec.field, {"type": "array", "items": "float"}, doc)]
        if spec.post == "threshold":
            return [ResultField(spec.field, "string", doc + f" against {spec.threshold}")]
        if spec.post == "argmax":
            extra = [ResultField(spec.score_field, "double", doc)] if spec.score_field else []
            return [ResultField(spec.field, "string", doc), *extra]
        # top_k
        extra = (
            [ResultField(spec.score_field, {"type": "array", "items": "double"}, doc)]
            if spec.score_field
            else []
        )
        return [ResultField(spec.field, {"type": "array", "items": "string"}, doc), *extra]

    def problems(self) -> list[str]:
        """What in ``[[outputs]]`` does not fit the model's outputs, each naming its key."""
        p: list[str] = []
        for i, spec in enumerate(self.specs):
            where = f"outputs[{i}] ({spec.field})"
            if not AVRO_NAME.match(spec.field):
                p.append(f"{where}.field: {spec.field!r} is no Avro name ([A-Za-z_][A-Za-z0-9_]*)")
            if spec.score_field and not AVRO_NAME.match(spec.score_field):
                p.append(f"{where}.score_field: {spec.score_field!r} is no Avro name")
            info = self.info.get(spec.tensor)
            if info is None:
                p.append(
                    f"{where}.tensor: {spec.tensor!r} is not an output of the model "
                    f"(outputs: {', '.join(self.info)})"
                )
                continue
            labels = self.labels_of(spec)
            if spec.post in ("threshold",) and info.shape == "label":
                p.append(f"{where}.post: threshold needs a score, {spec.tensor} holds labels")
            if spec.post in ("argmax", "top_k", "softmax") and info.shape != "vector":
                p.append(
                    f"{where}.post: {spec.post} needs one value per class ([batch, C]); "
                    f"{spec.tensor} is a {info.shape} output"
                )
            known = self.classes.get(spec.tensor)  # a ZipMap's, once it has run
            width = info.width or len(known or ())
            unprobed = info.zipmap and known is None  # its classes are unknown until it runs
            if (
                spec.post in ("argmax", "top_k")
                and info.shape == "vector"
                and not (labels or unprobed)
            ):
                p.append(f"{where}.labels: {spec.post} needs the class names ({spec.tensor})")
            if spec.post == "threshold":
                if len(labels) != 2:
                    p.append(f"{where}.labels: threshold takes two labels (below, at or above)")
                if info.shape == "vector" and width and not -width <= spec.column < width:
                    p.append(
                        f"{where}.column: {spec.column} is not a column of {spec.tensor} "
                        f"({width} columns)"
                    )
            elif info.shape == "vector" and spec.labels:
                # int64 keys 0..C-1 are named by index, like an int64 label; others by themselves
                by_index = known == tuple(str(i) for i in range(width))
                # string keys: the declared labels name them in any order (the fields' order)
                if known and not by_index and sorted(spec.labels) != sorted(known):
                    p.append(
                        f"{where}.labels: {list(spec.labels)} differ from the classes of "
                        f"{spec.tensor}: {list(known)}"
                    )
                elif width and len(spec.labels) != width:
                    p.append(
                        f"{where}.labels: {len(spec.labels)} labels for {width} columns "
                        f"of {spec.tensor}"
                    )
            if spec.post in ("identity", "softmax") and info.shape == "vector":
                bad = [lb for lb in labels if not AVRO_NAME.match(f"{spec.field}_{lb}")]
                if bad:
                    p.append(f"{where}.labels: {bad} make no Avro field names with {spec.field}_")
            if spec.post == "top_k" and spec.k < 1:
                p.append(f"{where}.k: must be >= 1, got {spec.k}")
        return p

    def columns(self, outputs: Mapping[str, np.ndarray]) -> list[list[Any]]:
        """The outputs' result columns (Python values), in ``fields()`` order."""
        cols: list[list[Any]] = []
        for spec in self.specs:
            cols += self._columns_of(spec, outputs[spec.tensor])
        return cols

    def _columns_of(self, spec: OutputSpec, a: np.ndarray) -> list[list[Any]]:
        info, labels = self.info[spec.tensor], self.labels_of(spec)
        if spec.post in ("identity", "softmax"):
            if info.shape == "label":
                if a.dtype.kind in "iu" and labels:
                    names = np.asarray(labels, dtype=object)
                    return [names[np.clip(a, 0, len(labels) - 1)].tolist()]
                return [a.tolist() if a.dtype.kind in "iu" else [str(v) for v in a.tolist()]]
            if info.shape == "scalar":
                return [a.tolist()]
            v = _softmax(a) if spec.post == "softmax" else a
            if labels:
                return [col.tolist() for col in v.T]
            return [v.astype(np.float32).tolist()]
        if spec.post == "threshold":
            v = a if a.ndim == 1 else a[:, spec.column]
            lo, hi = labels or BINARY_LABELS
            return [np.where(v >= spec.threshold, hi, lo).tolist()]
        names = np.asarray(labels, dtype=object)
        if spec.post == "argmax":
            best = a.argmax(axis=1)
            out = [names[best].tolist()]
            if spec.score_field:
                out.append(a[np.arange(len(a)), best].tolist())
            return out
        k = min(spec.k, a.shape[1])
        top = np.argsort(-a, axis=1, kind="stable")[:, :k]
        out = [names[top].tolist()]
        if spec.score_field:
            out.append(np.take_along_axis(a, top, axis=1).tolist())
        return out

    def monitored(
        self, outputs: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """What the model monitor watches (``inference/monitoring.py:OutputMonitor``), by result
        field, vectorised: each score or per-class probability's values, and each label field's
        predicted labels."""
        scores: dict[str, np.ndarray] = {}
        labels: dict[str, np.ndarray] = {}
        for spec in self.specs:
            a, info = outputs[spec.tensor], self.info[spec.tensor]
            names = np.asarray(self.labels_of(spec), dtype=object)
            if spec.post in ("identity", "softmax"):
                if info.shape == "scalar":
                    scores[spec.field] = a
                elif info.shape == "label":
                    labels[spec.field] = names[a] if a.dtype.kind in "iu" and len(names) else a
                elif len(names):
                    v = _softmax(a) if spec.post == "softmax" else a
                    for i, lb in enumerate(names.tolist()):
                        scores[f"{spec.field}_{lb}"] = v[:, i]
            elif spec.post == "threshold":
                v = a if a.ndim == 1 else a[:, spec.column]
                labels[spec.field] = np.where(v >= spec.threshold, names[1], names[0])
            elif spec.post == "argmax":
                best = a.argmax(axis=1)
                labels[spec.field] = names[best]
                if spec.score_field:
                    scores[spec.score_field] = a[np.arange(len(a)), best]
        return scores, labels


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def signature_info(outputs: Mapping[str, Any]) -> dict[str, TensorInfo]:
    """``TensorInfo`` of ONNX Runtime's ``NodeArg`` outputs, by name."""
    return {name: TensorInfo.of(o.type, list(o.shape or [])) for name, o in outputs.items()}


# ---- the result record ------------------------------------------------------------------------


def input_types(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The input schema's fields and their Avro types."""
    return {f["name"]: f["type"] for f in schema.get("fields", [])}


def record_fields(
    s: Settings, output_fields: Sequence[ResultField], inputs: Mapping[str, Any]
) -> list[ResultField]:
    """The result record: key, timestamp, the outputs' fields, pass-through, metadata."""
    key = ResultField(s.input.key_field, "string")
    ts = ResultField(s.input.timestamp_field, TIMESTAMP, "The input record's timestamp.")
    passed = [
        ResultField(name, inputs.get(name, ["null", "string"]), "Passed through from the input.")
        for name in s.result.pass_through
    ]
    meta = [ResultField(m, METADATA_TYPES[m], METADATA_DOCS.get(m, "")) for m in s.result.metadata]
    return [key, ts, *output_fields, *passed, *meta]


def result_schema(s: Settings, fields: Sequence[ResultField]) -> dict[str, Any]:
    """The Avro schema of ``fields``, named after the pipeline."""
    words = re.split(r"[^A-Za-z0-9]+", s.name)
    return {
        "type": "record",
        "name": "".join(w[:1].upper() + w[1:] for w in words if w) + "Result",
        "namespace": "io.streamflow." + re.sub(r"[^A-Za-z0-9_]", "_", s.name),
        "doc": f"One result of the {s.name} pipeline per input record; the Kafka key is the "
        "input record's key. Generated by `streamflow schema result`.",
        "fields": [f.as_avro() for f in fields],
    }


def _plain(t: Any) -> Any:
    """An Avro type without docs and logical types, for comparison."""
    if isinstance(t, dict):
        out = {k: _plain(v) for k, v in t.items() if k not in ("doc", "logicalType", "default")}
        return out["type"] if set(out) == {"type"} else out
    if isinstance(t, list):
        return [_plain(x) for x in t]
    return t


def schema_problems(
    path: str, given: Mapping[str, Any], fields: Sequence[ResultField]
) -> list[str]:
    """How the user's result schema ``given`` differs from the declared record: a field missing
    or of another type; a field the declaration does not fill needs a default. (The order is the
    user's: results are written in their schema's order.)"""
    p: list[str] = []
    theirs = {f["name"]: f for f in given.get("fields", [])}
    names = [f["name"] for f in given.get("fields", [])]
    for f in fields:
        if f.name not in theirs:
            p.append(f"output.schema: {path} lacks field {f.name!r}, which every result carries")
        elif _plain(theirs[f.name]["type"]) != _plain(f.avro):
            p.append(
                f"output.schema: field {f.name!r} is {_plain(theirs[f.name]['type'])} in {path}; "
                f"the pipeline writes {_plain(f.avro)}"
            )
    for name in names:
        if name not in {f.name for f in fields} and "default" not in theirs[name]:
            p.append(
                f"output.schema: field {name!r} of {path} is filled by nothing the pipeline "
                "declares (pass it through in [result], map an output to it, or give it a default)"
            )
    return p

"""The tabular kind: numeric features in, one score out, labelled against ``model.threshold``.

Clean decodes the ``[[features]]`` fields and applies their ranges and defaults
(``stages/clean.py``); normalize scales them (``stages/normalize.py``); the model takes one
float tensor ``model.input`` [batch, features] and its first output is the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from streamflow.codecs import ReadingDecoder, ResultEncoder
from streamflow.errors import ModelError
from streamflow.inference.kinds import (
    NUMERIC,
    Cleaned,
    Outputs,
    Prepared,
    StageMetrics,
    build_encoder,
    check_result_schema,
    decoder_options,
    input_fields,
    model_signature,
    record_columns,
)
from streamflow.inference.monitoring import DriftMonitor
from streamflow.inference.outputs import (
    OutputMap,
    ResultField,
    default_outputs,
    signature_info,
    tensors_of,
)
from streamflow.records import RecordBatch, paired
from streamflow.settings import FeatureSpec, Settings
from streamflow.stages.clean import CleanRules, clean
from streamflow.stages.normalize import Normalizer, normalize

if TYPE_CHECKING:
    from streamflow.inference.session import LoadedModel


# the input field types each feature type reads (numbers: NUMERIC)
FIELD_TYPES = {
    "bool": {"boolean"},
    "category": {"string"},
    "hour_of_day": {"long", "int"},
    "day_of_week": {"long", "int"},
}


class TabularKind:
    name: ClassVar[str] = "tabular"
    synthetic: ClassVar[str] = "telemetry"

    def __init__(self, settings: Settings) -> None:
        s = self.settings = settings
        self.input_names: tuple[str, ...] = (s.model.input,)
        self.specs = default_outputs(s)  # [[outputs]], or score and label
        self.output_names: tuple[str, ...] = tensors_of(self.specs)
        self.map: OutputMap | None = None  # set by start(): the outputs against the model's
        self._fields: list[ResultField] = []
        self.rules = CleanRules.from_features(s.features)
        self.norm = Normalizer.from_features(s.features)
        self.threshold = s.model.threshold
        self.drift = DriftMonitor(s)  # the training bins from model.stats; inert without them

    @cached_property
    def decoder(self) -> ReadingDecoder:  # built on first use: only the clean step decodes
        s = self.settings
        kinds, vocab = {}, {}
        for f in s.features:
            field = self._field_of(f)
            if f.type == "bool":
                kinds[field] = "bool"
            elif f.type == "category":
                kinds[field], vocab[field] = "category", f.vocabulary
            elif f.type in ("hour_of_day", "day_of_week"):
                kinds[field] = "long"
        return ReadingDecoder(
            s.input.schema, self.fields, kinds=kinds, vocabularies=vocab, **decoder_options(s)
        )

    def _field_of(self, f: FeatureSpec) -> str:
        """The record field a feature is read from (a time part's: the timestamp by default)."""
        if f.derived:
            return ""
        if f.type in ("hour_of_day", "day_of_week"):
            return f.source or self.settings.input.timestamp_field
        return f.name

    @cached_property
    def fields(self) -> list[str]:
        """The record fields the features read, each once."""
        return list(dict.fromkeys(n for n in map(self._field_of, self.settings.features) if n))

    @cached_property
    def _columns(self) -> np.ndarray:
        """For each feature, its decoded field's column (-1: derived, not in the record)."""
        at = {name: i for i, name in enumerate(self.fields)}
        return np.array([at.get(self._field_of(f), -1) for f in self.settings.features])

    @cached_property
    def encoder(self) -> ResultEncoder:  # only the inference step encodes (and registers a schema)
        return build_encoder(self.settings, self.output_fields())

    @staticmethod
    def check_settings(s: Settings) -> list[str]:
        """[[features]] are checked by the settings themselves; [labels] would go unused."""
        return ["labels: only used with model.kind = text-embedding"] if s.labels else []

    def clean(
        self,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None],
        headers: Sequence[Any] | None = None,
    ) -> Cleaned:
        dec = self.decoder.decode_batch(values, keys, headers)
        x, missing, unknown = dec.values, dec.missing, dec.unknown
        cols = self._columns
        if len(cols) != x.shape[1] or (cols != np.arange(len(cols))).any():
            # features read from one field (time parts), or set by a transform (derived)
            x = np.where(cols >= 0, x[:, np.maximum(cols, 0)], 0.0)
            missing = np.where(cols >= 0, missing[:, np.maximum(cols, 0)], False)
            where = {c: j for j, c in enumerate(cols.tolist())}
            unknown = {(r, where[c]): v for (r, c), v in unknown.items()}
        res = clean(x, missing, self.rules, unknown)
        ok = res.ok & np.fromiter((e is None for e in dec.errors), dtype=bool, count=len(values))
        return Cleaned(
            ok,
            paired(dec.errors, dec.codes),
            paired(res.reasons, res.codes),
            dec.device_ids,
            np.asarray(dec.event_ms, np.int64),
            res.values,
            columns=dec.columns,
        )

    def prepare(self, batch: RecordBatch, stage: StageMetrics) -> Prepared:
        self.drift.observe(batch.features, stage.metrics)  # cleaned values, as in training
        res = normalize(batch.features, self.norm)
        out = replace(batch, features=res.values, stage="normalize")
        if res.ok.all():
            return Prepared([out], np.zeros(0, np.int64), [])
        bad = np.flatnonzero(~res.ok)  # normalize gives a reason to exactly these rows, in order
        reasons = [r for r in paired(res.reasons, res.codes) if r is not None]
        return Prepared([out.select(res.ok)], bad, reasons)

    def start(self, model: LoadedModel) -> None:
        """The ``[[outputs]]`` against this model's outputs; a ZipMap's classes are learnt from
        one run on a row of zeros. Raises ModelError naming what does not fit."""
        self.map = OutputMap(self.specs, signature_info(_outputs_of(model.session)))
        if _zipmaps(self.map):  # load_model has checked that every tensor read exists
            model.run_all(np.zeros((1, model.n_features), dtype=np.float32))
        problems = self.map.problems()
        if problems:
            raise ModelError(f"{model.path}: " + "; ".join(problems))
        self._fields = self.map.fields()

    def feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {self.input_names[0]: x}

    def outputs(self, raws: Sequence[Any], x: np.ndarray) -> Outputs:
        assert self.map is not None, "a tabular model is started before it runs"
        return self.map.arrays(raws, len(x))

    def monitored(self, outputs: Outputs) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        assert self.map is not None
        return self.map.monitored(outputs)

    def output_fields(self) -> list[ResultField]:
        assert self.map is not None, "a tabular model is started before its fields are known"
        return self._fields

    def observe(self, xs: Sequence[np.ndarray], stage: StageMetrics) -> None:
        pass

    def results(
        self, batch: RecordBatch, outputs: Outputs, model: LoadedModel, latency_ms: np.ndarray
    ) -> list[bytes]:
        named = record_columns(self.settings, batch, model, latency_ms)
        assert self.map is not None
        for f, col in zip(self._fields, self.map.columns(outputs), strict=True):
            named[f.name] = col
        return self.encoder.encode(named, len(batch))

    def describe(self) -> str:
        return f"{len(self.settings.features)} features"

    def sample_inputs(self, records: int, n_features: int) -> np.ndarray:
        """Random normalized features."""
        return np.random.default_rng(0).normal(size=(records, n_features)).astype(np.float32)

    def check_files(self) -> list[str]:
        s = self.settings
        fields, p = input_fields(s)
        for i, f in enumerate(s.features if fields else ()):
            name = self._field_of(f)
            if not name:
                continue  # derived: set by a transform
            if name not in fields:
                what = "" if name == f.name else f"its source field {name!r} is "
                p.append(
                    f"features[{i}] ({f.name}): {what}not a field of the input schema "
                    f"{s.input.schema}"
                )
                continue
            want = FIELD_TYPES.get(f.type, NUMERIC)
            if not fields[name] & want:
                p.append(
                    f"features[{i}] ({f.name}): field {name!r} is {sorted(fields[name])} in "
                    f"{s.input.schema}; a {f.type} feature reads {' or '.join(sorted(want))}"
                )
        inputs, outputs, sess, problems = model_signature(s)
        p += problems
        if sess is None:
            return p + check_result_schema(s, [], outputs_known=False)
        before = len(p)
        if s.model.input not in inputs:
            p.append(
                f"model.input: {s.model.input!r} is not an input of {s.model.path} "
                f"(inputs: {', '.join(inputs)})"
            )
        else:
            inp = inputs[s.model.input]
            if inp.type != "tensor(float)":
                p.append(
                    f"model.input: {s.model.input!r} has type {inp.type}; "
                    "the pipeline feeds tensor(float)"
                )
            shape = inp.shape
            if len(shape) != 2:
                p.append(
                    f"model.input: {s.model.input!r} has shape {shape}; "
                    f"expected [batch, {s.model_width}]"
                )
            elif isinstance(shape[1], int) and shape[1] != s.model_width:
                wide = [f"{f.name} ({f.width})" for f in s.features if f.width != 1]
                p.append(
                    f"features: {len(s.features)} features configured take {s.model_width} "
                    f"columns{' (' + ', '.join(wide) + ')' if wide else ''} "
                    f"but model input {s.model.input!r} takes {shape[1]} ({s.model.path})"
                )
        if not s.outputs:  # the default record reads model.outputs[0]: name that key
            missing = [n for n in s.model.outputs if n not in outputs]
            for name in missing:
                p.append(
                    f"model.outputs: {name!r} is not an output of {s.model.path} "
                    f"(outputs: {', '.join(outputs)})"
                )
            if missing:
                return p
        omap = OutputMap(self.specs, signature_info(outputs))
        if len(p) == before and all(t in omap.info for t in omap.tensors) and _zipmaps(omap):
            try:  # a ZipMap's classes: from one run on a row of zeros (the input fits)
                raws = sess.run(
                    list(omap.tensors), {s.model.input: np.zeros((1, s.model_width), np.float32)}
                )
                omap.arrays(raws, 1)
            except ModelError as exc:  # a class the declared labels do not name
                p.append(str(exc))
            except Exception as exc:  # ORT's own exception types
                p.append(f"model.path: {s.model.path} fails on a row of zeros: {exc}")
        out_problems = omap.problems()
        p += out_problems
        unused = [name for name in outputs if name not in omap.tensors]
        for name in unused:
            p.append(
                f"outputs: the model output {name!r} ({outputs[name].type}) is mapped to no "
                "result field: add an [[outputs]] entry with tensor = "
                f"{name!r} (post = identity keeps it as it is)"
            )
        if not out_problems:
            p += check_result_schema(s, omap.fields())
        order = sess.get_modelmeta().custom_metadata_map.get("features")
        if order and order.split(",") != s.feature_names:
            p.append(
                f"features: the order differs from the one the model was trained with "
                f"({s.model.path} metadata: {order})"
            )
        return p


def _outputs_of(session: Any) -> dict[str, Any]:
    return {o.name: o for o in session.get_outputs()}


def _zipmaps(omap: OutputMap) -> bool:
    """Whether the outputs read include a ZipMap, whose classes are learnt from one run."""
    return any(omap.info[t].zipmap for t in omap.tensors if t in omap.info)

"""The tabular kind: numeric features in, one score out, labelled against ``model.threshold``.

Clean decodes the ``[[features]]`` fields and applies their ranges and defaults
(``stages/clean.py``); normalize scales them (``stages/normalize.py``); the model takes one
float tensor ``model.input`` [batch, features] and its first output is the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from streamflow.codecs import RESULT_FIELDS, ReadingDecoder, ResultEncoder
from streamflow.inference.kinds import (
    NUMERIC,
    Cleaned,
    Prepared,
    StageMetrics,
    check_result_schema,
    decoder_options,
    encoder_options,
    input_fields,
    model_signature,
)
from streamflow.records import RecordBatch, paired
from streamflow.settings import Settings
from streamflow.stages.clean import CleanRules, clean
from streamflow.stages.normalize import Normalizer, normalize

if TYPE_CHECKING:
    from streamflow.inference.session import LoadedModel


class TabularKind:
    name: ClassVar[str] = "tabular"
    synthetic: ClassVar[str] = "telemetry"
    output_field: ClassVar[str] = "score"  # the model output's name for after_model transforms

    def __init__(self, settings: Settings) -> None:
        s = self.settings = settings
        self.input_names: tuple[str, ...] = (s.model.input,)
        self.rules = CleanRules.from_features(s.features)
        self.norm = Normalizer.from_features(s.features)
        self.threshold = s.model.threshold

    @cached_property
    def decoder(self) -> ReadingDecoder:  # built on first use: only the clean step decodes
        s = self.settings
        return ReadingDecoder(s.input.schema, s.feature_names, **decoder_options(s))

    @cached_property
    def encoder(self) -> ResultEncoder:  # only the inference step encodes (and registers a schema)
        return ResultEncoder(self.settings.output.schema, **encoder_options(self.settings))

    @staticmethod
    def check_settings(s: Settings) -> list[str]:
        """[[features]] are checked by the settings themselves; [labels] would go unused."""
        return ["labels: only used with model.kind = text-embedding"] if s.labels else []

    def clean(self, values: Sequence[bytes | None], keys: Sequence[bytes | None]) -> Cleaned:
        dec = self.decoder.decode_batch(values, keys)
        res = clean(dec.values, dec.missing, self.rules)
        ok = res.ok & np.fromiter((e is None for e in dec.errors), dtype=bool, count=len(values))
        return Cleaned(
            ok,
            paired(dec.errors, dec.codes),
            paired(res.reasons, res.codes),
            dec.device_ids,
            np.asarray(dec.event_ms, np.int64),
            res.values,
        )

    def prepare(self, batch: RecordBatch, stage: StageMetrics) -> Prepared:
        res = normalize(batch.features, self.norm)
        out = replace(batch, features=res.values, stage="normalize")
        if res.ok.all():
            return Prepared([out], np.zeros(0, np.int64), [])
        bad = np.flatnonzero(~res.ok)  # normalize gives a reason to exactly these rows, in order
        reasons = [r for r in paired(res.reasons, res.codes) if r is not None]
        return Prepared([out.select(res.ok)], bad, reasons)

    def start(self, model: LoadedModel) -> None:
        pass

    def feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {self.input_names[0]: x}

    def output(self, raw: np.ndarray, n: int) -> np.ndarray:
        return np.asarray(raw, dtype=np.float64).reshape(n, -1)[:, 0]

    def observe(self, xs: Sequence[np.ndarray], stage: StageMetrics) -> None:
        pass

    def results(
        self, batch: RecordBatch, outputs: np.ndarray, model: LoadedModel, latency_ms: np.ndarray
    ) -> list[bytes]:
        labels = np.where(outputs >= self.threshold, "anomaly", "normal").tolist()
        return self.encoder.encode_batch(
            batch.device_id_list(),
            batch.event_ms,
            outputs,
            labels,
            model.name,
            model.version,
            latency_ms,
        )

    def describe(self) -> str:
        return f"{len(self.settings.features)} features"

    def sample_inputs(self, records: int, n_features: int) -> np.ndarray:
        """Random normalized features."""
        return np.random.default_rng(0).normal(size=(records, n_features)).astype(np.float32)

    def check_files(self) -> list[str]:
        s = self.settings
        fields, p = input_fields(s)
        for i, f in enumerate(s.features if fields else ()):
            if f.name not in fields:
                p.append(
                    f"features[{i}] ({f.name}): not a field of the input schema {s.input.schema}"
                )
            elif not fields[f.name] & NUMERIC:
                p.append(
                    f"features[{i}] ({f.name}): field type {sorted(fields[f.name])} is not numeric "
                    f"in {s.input.schema}"
                )
        p += check_result_schema(s, RESULT_FIELDS)
        inputs, outputs, sess, problems = model_signature(s)
        p += problems
        if sess is None:
            return p
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
                    f"expected [batch, {len(s.features)}]"
                )
            elif isinstance(shape[1], int) and shape[1] != len(s.features):
                p.append(
                    f"features: {len(s.features)} features configured "
                    f"but model input {s.model.input!r} "
                    f"takes {shape[1]} ({s.model.path})"
                )
        for name in s.model.outputs:
            if name not in outputs:
                p.append(
                    f"model.outputs: {name!r} is not an output of {s.model.path} "
                    f"(outputs: {', '.join(outputs)})"
                )
        order = sess.get_modelmeta().custom_metadata_map.get("features")
        if order and order.split(",") != s.feature_names:
            p.append(
                f"features: the order differs from the one the model was trained with "
                f"({s.model.path} metadata: {order})"
            )
        return p

"""``streamflow validate``: the pipeline file against its schemas and model, every problem at once."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamflow.codecs.results import RESULT_FIELDS, TEXT_RESULT_FIELDS
from streamflow.errors import ConfigError
from streamflow.settings import TEXT_INPUTS, Settings
from streamflow.settings.loading import collect_settings

NUMERIC = {"double", "float", "int", "long"}


def _types(avro_type: Any) -> set[str]:
    if isinstance(avro_type, list):
        return set().union(*(_types(t) for t in avro_type))
    if isinstance(avro_type, dict):
        return {avro_type.get("type", "")}
    return {str(avro_type)}


def check_input_schema(s: Settings) -> list[str]:
    try:
        schema = json.loads(Path(s.input.schema).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [f"input.schema: cannot read {s.input.schema}: {exc}"]
    fields = {f["name"]: _types(f["type"]) for f in schema.get("fields", [])}
    p = []
    for key in ("key_field", "timestamp_field"):
        name = getattr(s.input, key)
        if name not in fields:
            p.append(f"input.{key}: {name!r} is not a field of {s.input.schema}")
    if s.input.timestamp_field in fields and not fields[s.input.timestamp_field] & {"long", "int"}:
        p.append(f"input.timestamp_field: {s.input.timestamp_field!r} must be a long (epoch ms) in {s.input.schema}")
    if s.is_text:
        t = s.input.text_field
        if t not in fields:
            p.append(f"input.text_field: {t!r} is not a field of {s.input.schema}")
        elif not fields[t] & {"string"} or fields[t] - {"string", "null"}:
            p.append(f"input.text_field: {t!r} must be a string (or null) in {s.input.schema}, "
                     f"not {sorted(fields[t])}")
    for i, f in enumerate(s.features):
        if f.name not in fields:
            p.append(f"features[{i}] ({f.name}): not a field of the input schema {s.input.schema}")
        elif not fields[f.name] & NUMERIC:
            p.append(f"features[{i}] ({f.name}): field type {sorted(fields[f.name])} is not numeric in {s.input.schema}")
        elif f.required is False and "null" not in fields[f.name]:
            pass  # a non-nullable field is always present: the default is simply never used
    return p


def check_output_schema(s: Settings) -> list[str]:
    try:
        schema = json.loads(Path(s.output.schema).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [f"output.schema: cannot read {s.output.schema}: {exc}"]
    names = {f["name"] for f in schema.get("fields", [])}
    need = set(TEXT_RESULT_FIELDS if s.is_text else RESULT_FIELDS)
    return [f"output.schema: {s.output.schema} lacks field {n!r}, which every result carries" for n in sorted(need - names)]


def check_model(s: Settings) -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return ["model: ONNX Runtime is not installed (pip install 'streamflow[cpu]')"]
    try:
        sess = ort.InferenceSession(s.model.path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's own exception types
        return [f"model.path: cannot load {s.model.path}: {exc}"]
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = {o.name: o for o in sess.get_outputs()}
    if s.is_text:
        return check_text_model(s, inputs, outputs)
    p = []
    if s.model.input not in inputs:
        p.append(f"model.input: {s.model.input!r} is not an input of {s.model.path} (inputs: {', '.join(inputs)})")
    else:
        inp = inputs[s.model.input]
        if inp.type != "tensor(float)":
            p.append(f"model.input: {s.model.input!r} has type {inp.type}; the pipeline feeds tensor(float)")
        shape = inp.shape
        if len(shape) != 2:
            p.append(f"model.input: {s.model.input!r} has shape {shape}; expected [batch, {len(s.features)}]")
        elif isinstance(shape[1], int) and shape[1] != len(s.features):
            p.append(f"features: {len(s.features)} features configured but model input {s.model.input!r} "
                     f"takes {shape[1]} ({s.model.path})")
    for name in s.model.outputs:
        if name not in outputs:
            p.append(f"model.outputs: {name!r} is not an output of {s.model.path} (outputs: {', '.join(outputs)})")
    order = sess.get_modelmeta().custom_metadata_map.get("features")
    if order and order.split(",") != s.feature_names:
        p.append(f"features: the order differs from the one the model was trained with ({s.model.path} metadata: {order})")
    return p


def check_text_model(s: Settings, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> list[str]:
    """A text-embedding model takes int64 input_ids and attention_mask [batch, tokens] and gives
    a float embedding [batch, dim]; its tokenizer loads."""
    p = []
    for name in TEXT_INPUTS:
        if name not in inputs:
            p.append(f"model.kind: a text-embedding model takes input {name!r}; {s.model.path} has "
                     f"{', '.join(inputs)}")
        elif inputs[name].type != "tensor(int64)" or len(inputs[name].shape) != 2:
            p.append(f"model.kind: input {name!r} of {s.model.path} is {inputs[name].type} {inputs[name].shape}; "
                     "the pipeline feeds tensor(int64) [batch, tokens]")
    for name in s.model.outputs[:1]:
        if name not in outputs:
            p.append(f"model.outputs: {name!r} is not an output of {s.model.path} (outputs: {', '.join(outputs)})")
        elif outputs[name].type != "tensor(float)" or len(outputs[name].shape) != 2:
            p.append(f"model.outputs: {name!r} of {s.model.path} is {outputs[name].type} {outputs[name].shape}; "
                     "expected an embedding, tensor(float) [batch, dim]")
    if Path(s.model.tokenizer).is_file():
        try:
            from streamflow.stages.tokenizer import TextTokenizer

            TextTokenizer(s.model.tokenizer, s.model.max_tokens)
        except Exception as exc:  # ConfigError (no tokenizers), ModelError (bad file)
            p.append(f"model.tokenizer: {exc}")
    return p


def validate(path: str, overrides: Mapping[str, str] | None = None) -> list[str]:
    """Every problem found, each naming its key; empty when the pipeline is valid.

    The cross-file checks run even when the file itself has problems, wherever the files
    they need exist, so one run lists everything to fix.
    """
    s, problems = collect_settings(path, overrides)
    if s is None:
        return problems
    if Path(s.input.schema).is_file():
        problems += check_input_schema(s)
    if Path(s.output.schema).is_file():
        problems += check_output_schema(s)
    if Path(s.model.path).is_file():
        problems += check_model(s)
    return problems


def require_valid(s: Settings) -> None:
    """Raise ConfigError naming every cross-file problem (used at worker start-up)."""
    problems = check_input_schema(s) + check_output_schema(s) + check_model(s)
    if problems:
        raise ConfigError(problems, source=s.source)


# The `streamflow validate` command: its arguments and body, beside the checks it runs.
import argparse  # noqa: E402
import sys  # noqa: E402


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow validate [FILE]``."""
    from streamflow.cli import settings_args

    v = sub.add_parser("validate", help="check a pipeline file: schema <-> features <-> model")
    v.add_argument("file", nargs="?")
    settings_args(v)
    v.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """List every problem of the pipeline file (exit 1), or summarise the valid pipeline."""
    from streamflow.cli import overrides, pipeline_path
    from streamflow.settings.loading import load_settings

    path = args.file or pipeline_path(args)
    problems = validate(path, overrides(args))
    if problems:
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    s = load_settings(path, overrides(args))
    inputs = (f"text field {s.input.text_field}, {len(s.labels)} labels" if s.is_text
              else f"{len(s.features)} features")
    print(f"{path}: ok (pipeline {s.name}: {inputs}, model {s.model.name} {s.model.version}, "
          f"topics {s.topics.raw} -> {s.topics.scored}, dead letters {s.topics.dlq})")
    return 0

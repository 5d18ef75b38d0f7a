"""Loading the settings: the pipeline file, then the environment, then the command line.

Sources, highest first: CLI overrides (``section.key=value``), ``STREAMFLOW_<SECTION>_<KEY>``
environment variables, the pipeline file (TOML). Each value is coerced to its field's type in
``schema``; a ``Literal`` field accepts only its choices, whatever the field (one generic
check, so a choice is written once, in the schema). Then the cross-field rules of ``checks``
run. Every problem found is reported at once, each naming its key and the file or variable it
came from; nothing is checked lazily on the first record. This is the only module that reads
the environment.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from streamflow.errors import ConfigError
from streamflow.resources import find_pipeline
from streamflow.settings.checks import check
from streamflow.settings.schema import (
    PATH_KEYS,
    SECTIONS,
    FeatureSpec,
    OutputSpec,
    RuntimeSettings,
    Secret,
    Settings,
    TransformSpec,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ENV_PREFIX = "STREAMFLOW_"

T = TypeVar("T", bound="DataclassInstance")

# How a value outside a Literal's choices is reported. {got}: the value (repr); {listed}:
# "a, b, c"; {either}: "a, b or c"; {quoted}: "'a', 'b' or 'c'". Fields not named here get
# _ONE_OF (a single value) or _EACH_ONE_OF (an item of a list). These few keep the wording
# they had before the generic check, which users and tests quote.
_ONE_OF = "must be one of {listed}, got {got}"
_EACH_ONE_OF = "each must be one of {listed}, got {got}"
_WORDING: dict[tuple[type, str], str] = {
    (RuntimeSettings, "topology"): "must be {quoted}, got {got}",
    (FeatureSpec, "out_of_range"): "must be {either}, got {got}",
    (FeatureSpec, "normalize"): "unknown step {got} (one of {listed}, joined with +)",
}


def _either(words: list[str]) -> str:
    """["a", "b", "c"] -> "a, b or c"."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _not_a_choice(value: Any, choices: tuple[Any, ...], where: str, wording: str) -> str:
    named = [str(c) for c in choices if c != ""]
    listed = ", ".join(named) + (" (or empty)" if "" in choices else "")
    text = wording.format(
        got=repr(value),
        listed=listed,
        either=_either(named),
        quoted=_either([repr(c) for c in named]),
    )
    return f"{where}: {text}"


def _unoptional(tp: Any) -> Any:
    """``float | None`` -> float."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _coerce(value: Any, tp: Any, where: str, wording: str | None = None) -> Any:
    """Convert ``value`` (from TOML or an env string) to ``tp``, or raise ValueError naming
    ``where`` (one message per argument: each bad item of a list is its own problem). A union
    (``float | str | bool``) takes the first of its types that accepts the value."""
    options = [
        a
        for a in (
            typing.get_args(tp)
            if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union
            else ()
        )
        if a is not type(None)
    ]
    if len(options) > 1:
        for option in options:
            try:
                return _coerce(value, option, where, wording)
            except ValueError:
                continue
        names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
        raise ValueError(f"{where}: expected {names}, got {value!r}")
    tp = _unoptional(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, str) and value in choices:
            return value
        raise ValueError(_not_a_choice(value, choices, where, wording or _ONE_OF))
    base = origin or tp
    if base is dict:  # a table of librdkafka properties: name -> string, number or boolean
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a table of properties, got {value!r}")
        bad = [
            f"{where}.{k}: expected a string, number or boolean, got {v!r}"
            for k, v in value.items()
            if not isinstance(v, str | int | float | bool)
        ]
        if bad:
            raise ValueError(*bad)
        return dict(value)
    if base is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        item = typing.get_args(tp)[0]
        if item is int:
            if not isinstance(value, list):
                raise ValueError(f"{where}: expected a list of integers, got {value!r}")
            return tuple(_coerce(v, int, where) for v in value)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}: expected a list of strings, got {value!r}")
        if typing.get_origin(item) is Literal:
            choices = typing.get_args(item)
            bad = [
                _not_a_choice(v, choices, where, wording or _EACH_ONE_OF)
                for v in value
                if v not in choices
            ]
            if bad:
                raise ValueError(*bad)
        return tuple(value)
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        ):
            return value.lower() in ("1", "true", "yes", "on")
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    if base is int:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if base is float:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if base is Secret:
        if isinstance(value, str):
            return Secret(value)
        raise ValueError(f"{where}: expected a string (value not shown: it is a secret)")
    if base is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported settings type {tp!r}")  # pragma: no cover


# Settings that are tables of free-form properties, set from the command line as
# section.table.property=value (e.g. --set kafka.consumer.auto.offset.reset=latest).
TABLE_KEYS = {
    "kafka": ("producer", "consumer", "admin"),
    "topics": ("raw_configs", "scored_configs", "dlq_configs", "internal_configs"),
    "schema_registry": ("client",),
}


def _unknown(key: str, known: list[str], where: str) -> str:
    hint = difflib.get_close_matches(key, known, n=1)
    return f"{where}: unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")


def _build(
    cls: type[T],
    data: Mapping[str, Any],
    prefix: str,
    problems: list[str],
    rejected: set[str] | None = None,
) -> T | None:
    """``cls`` from a table, each value coerced; problems appended, the keys whose value was
    rejected (the field keeps its default) added to ``rejected``."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in known:
            problems.append(_unknown(key, known, where))
            continue
        try:
            kwargs[key] = _coerce(value, hints[key], where, _WORDING.get((cls, key)))
        except ValueError as exc:
            problems.extend(str(a) for a in exc.args)
            if rejected is not None:
                rejected.add(where)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        problems.append(f"{prefix}: {exc}")
        return None


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``STREAMFLOW_KAFKA_BOOTSTRAP=x`` -> ``{"kafka.bootstrap": "x"}`` for every known key."""
    environ = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            var = f"{ENV_PREFIX}{section}_{f.name}".upper()
            if var in environ:
                out[f"{section}.{f.name}"] = environ[var]
    return out


def pipeline_path_from_env(default: str) -> str:
    """The pipeline file: ``$STREAMFLOW_PIPELINE`` or ``default``; a relative path that is not
    here may name an installed example (``resources.find_pipeline``)."""
    return find_pipeline(os.environ.get(f"{ENV_PREFIX}PIPELINE", default))


def load_settings(
    path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the pipeline file, apply env vars then CLI ``overrides``, validate everything."""
    settings, problems = collect_settings(path, overrides, environ=environ)
    if problems or settings is None:
        raise ConfigError(problems, source=str(path))
    return settings


def collect_settings(
    path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings | None, list[str]]:
    """Like load_settings, but returns (settings built as far as possible, every problem found)."""
    path = Path(path)
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return None, [f"pipeline file not found: {path}"]
    except tomllib.TOMLDecodeError as exc:
        return None, [f"not valid TOML: {exc}"]

    problems: list[str] = []
    layered: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    layers = (("environment", env_overrides(environ)), ("command line", overrides or {}))
    for origin, layer in layers:
        for dotted, value in layer.items():
            if dotted == "name":
                layered["name"] = value
                continue
            section, _, key = dotted.partition(".")
            if section not in SECTIONS or not key:
                problems.append(f"{dotted} (from the {origin}): unknown setting")
                continue
            table, dot, prop = key.partition(".")
            if dot and table in TABLE_KEYS.get(section, ()):  # kafka.producer.linger.ms=5
                target = layered.setdefault(section, {}).setdefault(table, {})
                if isinstance(target, dict):
                    target[prop] = value
                continue
            layered.setdefault(section, {})[key] = value

    name = layered.pop("name", None)
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        problems.append(
            f"name: expected the pipeline's name (letters, digits, - and _), got {name!r}"
        )
        name = "invalid"
    feature_tables = layered.pop("features", [])
    label_table = layered.pop("labels", {})
    transform_tables = layered.pop("transforms", [])
    output_tables = layered.pop("outputs", [])
    rejected: set[str] = set()
    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        data = layered.pop(section, {})
        if not isinstance(data, dict):
            problems.append(f"{section}: expected a table")
            data = {}
        data = {
            k: _resolve(path, v) if (section, k) in PATH_KEYS and isinstance(v, str) and v else v
            for k, v in data.items()
        }
        sections[section] = _build(cls, data, section, problems, rejected) or cls()
    for key in layered:
        problems.append(
            _unknown(key, ["name", "features", "labels", "transforms", "outputs", *SECTIONS], key)
        )

    stats = _load_stats(sections["model"].stats, problems)
    text = sections["model"].kind == "text-embedding"
    features = (
        []
        if text and not feature_tables
        else _build_features(feature_tables, stats, problems, rejected)
    )
    labels = _build_labels(label_table, problems)
    transforms = _build_tables(TransformSpec, "transforms", transform_tables, problems, rejected)
    outputs = _build_tables(OutputSpec, "outputs", output_tables, problems, rejected)
    settings = Settings(
        name=name,
        source=source,
        features=tuple(features),
        labels=labels,
        transforms=transforms,
        outputs=outputs,
        **sections,
    )
    problems.extend(p for p in check(settings) if not _mentions(p, rejected))
    return settings, problems


def _mentions(problem: str, keys: Collection[str]) -> bool:
    """Whether ``problem`` names one of ``keys``. A key whose value was rejected holds its
    default instead, and a cross-field rule judging that default would mislead (e.g. "is set
    but kafka.security_protocol = PLAINTEXT" after security_protocol = "TLS" was rejected)."""
    return any(re.search(rf"(?<![\w.]){re.escape(k)}(?!\w)", problem) for k in keys)


def _resolve(pipeline: Path, value: str) -> str:
    p = Path(value)
    return str(p if p.is_absolute() else (pipeline.parent / p).resolve())


def _load_stats(path: str, problems: list[str]) -> dict[str, dict[str, float]]:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        problems.append(f"model.stats: file not found: {path}")
        return {}
    except json.JSONDecodeError as exc:
        problems.append(f"model.stats: not valid JSON ({path}): {exc}")
        return {}
    feats = data.get("features", data)
    if not isinstance(feats, dict):
        problems.append(f"model.stats: expected an object of per-feature statistics in {path}")
        return {}
    return feats


def _build_tables(
    cls: type[T], key: str, tables: Any, problems: list[str], rejected: set[str]
) -> tuple[T, ...]:
    """``[[key]]`` tables (``[[transforms]]``, ``[[outputs]]``) -> ``cls``, in file order."""
    if not isinstance(tables, list):
        problems.append(f"{key}: expected [[{key}]] tables")
        return ()
    out = []
    for i, table in enumerate(tables):
        if not isinstance(table, dict):
            problems.append(f"{key}[{i}]: expected a table")
            continue
        spec = _build(cls, table, f"{key}[{i}]", problems, rejected)
        if spec is not None:
            out.append(spec)
    return tuple(out)


def _build_labels(table: Any, problems: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``[labels]`` name = ["example text", ...] -> ((name, examples), ...), in file order."""
    if not isinstance(table, dict):
        problems.append("labels: expected a table of label = [example texts]")
        return ()
    out = []
    for name, examples in table.items():
        if (
            not isinstance(examples, list)
            or not examples
            or not all(isinstance(e, str) and e.strip() for e in examples)
        ):
            problems.append(f"labels.{name}: expected a non-empty list of non-empty example texts")
            continue
        out.append((name, tuple(examples)))
    return tuple(out)


def _build_features(
    tables: Any,
    stats: Mapping[str, Mapping[str, float]],
    problems: list[str],
    rejected: set[str] | None = None,
) -> list[FeatureSpec]:
    """``[[features]]`` tables -> specs; statistics not given inline are taken from ``stats``."""
    if not isinstance(tables, list) or not tables:
        problems.append("features: expected at least one [[features]] table")
        return []
    out: list[FeatureSpec] = []
    for i, table in enumerate(tables):
        where = f"features[{i}]"
        if not isinstance(table, dict):
            problems.append(f"{where}: expected a table")
            continue
        table = dict(table)
        name = table.get("name")
        if isinstance(name, str):
            where = f"features[{i}] ({name})"
        # numbers are z-scored unless said otherwise; categories, booleans and time parts not
        numeric = table.get("type", "float") in ("float", "int")
        norm = table.get("normalize", "zscore" if numeric else "none")
        if isinstance(norm, str):
            table["normalize"] = [n.strip() for n in norm.split("+")]
        known_stats = stats.get(name, {}) if isinstance(name, str) else {}
        for key in ("mean", "std", "scale_min", "scale_max"):
            if key not in table and key in known_stats:
                table[key] = known_stats[key]
        spec = _build(FeatureSpec, table, where, problems, rejected)
        if spec is not None:
            out.append(spec)
    return out

"""Transforms written by the user: a Python function over a batch's columns, named in the pipeline.

``[[transforms]] function = "my_module:my_function"`` with ``at = "after_clean"``,
``"after_normalize"`` or ``"after_model"``. The function takes one argument, the batch's columns
as numpy arrays by name (every feature by its name, ``event_ms``, ``id``, the pass-through fields;
after the model also the model's outputs by name: ``score``, ``output_probability``, or
``embedding``), and returns the columns it changes, by the same names, one value per
row; or ``(columns, reasons)`` where ``reasons[i]`` is a rejection reason for row i (None: keep).

It runs in whichever step (or the chained agent) holds the batch at that point. When it raises,
or returns something of the wrong shape, the rows it failed on are found by bisection, as poison
rows are in ONNX Runtime: those are dead-lettered with reason code ``transform_error`` and the
exception text, the others go on. An import or signature problem fails at start-up naming the key.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from streamflow.errors import ConfigError
from streamflow.records import BytesColumn, Reason, ReasonCode, RecordBatch
from streamflow.settings import FeatureSpec

Outputs = dict[
    str, np.ndarray
]  # as in streamflow.inference.kinds (a lower layer may not import it)

Columns = dict[str, np.ndarray]
POINTS = ("after_clean", "after_normalize", "after_model")


class TransformFailed(Exception):
    """The function raised, or returned what a transform may not: its message says which."""


def import_named(spec: str, where: str, folder: str = "") -> Any:
    """``module:name`` imported, else a ConfigError naming ``where`` (the pipeline key).
    ``folder`` (the pipeline file's) is searched after ``sys.path``, so a module beside the
    pipeline file is found without PYTHONPATH."""
    if folder and folder not in sys.path:
        sys.path.append(folder)
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"{where}: expected 'module:name', got {spec!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import module {module!r}: {exc}") from None
    except AttributeError:
        raise ConfigError(f"{where}: module {module!r} has no attribute {name!r}") from None


def load_function(spec: str, where: str, folder: str = "") -> Callable[..., Any]:
    """``module:function`` imported (``import_named``) and checked to take one positional
    argument, else a ConfigError naming ``where`` (the pipeline key)."""
    fn = import_named(spec, where, folder)
    if not callable(fn):
        raise ConfigError(f"{where}: {spec} is not a function")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn  # a builtin or C function: called as f(columns)
    required = [
        p
        for p in sig.parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    positional = [
        p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(required) != 1 or not positional or required[0] is not positional[0]:
        raise ConfigError(
            f"{where}: {spec}{sig} must take exactly one argument, the batch's columns "
            "(a dict of numpy arrays by name)"
        )
    return fn


@dataclass
class Applied:
    """What a transform made of a batch: the new columns, and the rows it refused or failed on."""

    columns: Columns
    rejected: dict[int, str] = field(default_factory=dict)  # row -> reason the function gave
    failed: dict[int, str] = field(default_factory=dict)  # row -> the function's error


def _call(
    fn: Callable[..., Any], name: str, columns: Mapping[str, np.ndarray], n: int
) -> tuple[Columns, list[Any]]:
    """One call on ``n`` rows, its result checked: (columns changed, reasons per row)."""
    try:
        out = fn(dict(columns))
    except Exception as exc:
        raise TransformFailed(
            f"transform {name} raised {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    reasons: Any = None
    if isinstance(out, tuple) and len(out) == 2:
        out, reasons = out
    if not isinstance(out, Mapping):
        raise TransformFailed(
            f"transform {name} returned {type(out).__name__}, not a dict of columns"
        )
    changed: Columns = {}
    for key, value in out.items():
        if key not in columns:
            raise TransformFailed(
                f"transform {name} returned column {key!r}, which the batch does not have "
                f"({', '.join(columns)})"
            )
        arr = np.asarray(value)
        want = np.asarray(columns[key]).shape
        if arr.shape != want:
            raise TransformFailed(
                f"transform {name} returned column {key!r} of shape {arr.shape}, not {want}"
            )
        changed[key] = arr
    if reasons is None:
        return changed, [None] * n
    reasons = list(reasons)
    if len(reasons) != n:
        raise TransformFailed(f"transform {name} returned {len(reasons)} reasons for {n} rows")
    return changed, reasons


def apply(fn: Callable[..., Any], name: str, columns: Mapping[str, np.ndarray], n: int) -> Applied:
    """Run ``fn`` over the batch; when it fails, find the rows it fails on by bisection."""
    merged: Columns = {k: np.array(v, copy=True) for k, v in columns.items()}
    result = Applied(merged)

    def run(lo: int, hi: int) -> None:
        part = {k: v[lo:hi] for k, v in columns.items()}
        try:
            changed, reasons = _call(fn, name, part, hi - lo)
        except TransformFailed as exc:
            if hi - lo == 1:
                result.failed[lo] = str(exc)
                return
            mid = (lo + hi) // 2
            run(lo, mid)
            run(mid, hi)
            return
        for key, value in changed.items():
            merged[key][lo:hi] = value
        for i, why in enumerate(reasons):
            if why:
                result.rejected[lo + i] = f"transform {name}: {why}"

    if n:
        run(0, n)
    return result


@dataclass(frozen=True)
class Transform:
    """One ``[[transforms]]`` entry, loaded."""

    fn: Callable[..., Any]
    name: str
    at: str

    @classmethod
    def load(cls, function: str, at: str, name: str, where: str, folder: str = "") -> Transform:
        fn = load_function(function, where, folder)
        return cls(fn, name or function.rpartition(":")[2], at)


@dataclass
class BatchTransformed:
    """A batch after the transforms at one point: what goes on, and the rows refused on the way."""

    batch: RecordBatch  # the rows that go on, with the columns the transforms changed
    outputs: Outputs | None  # the model's outputs for those rows (after_model), else None
    bad_rows: list[int]  # rows of the input batch refused
    reasons: list[Reason]  # one per bad row


Layout = Sequence[tuple[str, int]]  # (feature name, model columns it takes) in feature order


def feature_layout(features: Sequence[FeatureSpec], point: str) -> list[tuple[str, int]]:
    """Each feature's columns at ``point``: one after clean (a category is its vocabulary index);
    after normalize, ``FeatureSpec.width`` (a one-hot category takes one per value)."""
    return [(f.name, 1 if point == "after_clean" else f.width) for f in features]


def batch_columns(batch: RecordBatch, layout: Layout) -> Columns:
    """The columns a transform sees: each feature by name (a one-hot one as [n, values]),
    ``event_ms``, ``id`` and the named columns the batch carries (pass-through fields)."""
    cols: Columns = {}
    start = 0
    for name, width in layout:
        cols[name] = (
            batch.features[:, start] if width == 1 else batch.features[:, start : start + width]
        )
        start += width
    cols["event_ms"] = batch.event_ms
    cols["id"] = np.array(batch.device_id_list(), dtype=object)
    cols.update(batch.columns)
    return cols


def transform_batch(
    transforms: Sequence[Transform],
    batch: RecordBatch,
    layout: Layout,
    outputs: Outputs | None = None,
) -> BatchTransformed:
    """Run ``transforms`` in order over ``batch`` (and the model's ``outputs`` after the model);
    a row one of them refuses or fails on leaves the batch with its reason."""
    n = len(batch)
    if not transforms or not n:
        return BatchTransformed(batch, outputs, [], [])
    cols = batch_columns(batch, layout)
    if outputs is not None:
        cols.update(outputs)
    alive = np.ones(n, dtype=bool)
    why: dict[int, Reason] = {}
    for t in transforms:
        idx = np.flatnonzero(alive)
        done = apply(t.fn, t.name, {k: v[idx] for k, v in cols.items()}, len(idx))
        for key, value in done.columns.items():
            cols[key] = np.array(cols[key], copy=True)
            cols[key][idx] = value
        for row, text in done.failed.items():
            why[int(idx[row])] = Reason(ReasonCode.TRANSFORM_ERROR, text)
        for row, text in done.rejected.items():
            why.setdefault(int(idx[row]), Reason(ReasonCode.TRANSFORM_REJECTED, text))
        alive[[int(idx[r]) for r in (*done.failed, *done.rejected)]] = False
    features = batch.features.copy()
    start = 0
    for name, width in layout:
        features[:, start : start + width] = np.asarray(cols[name]).reshape(n, width)
        start += width
    ids = BytesColumn.from_list([str(d).encode() for d in cols["id"].tolist()])
    changed = replace(
        batch,
        features=features,
        event_ms=np.asarray(cols["event_ms"], np.int64),
        device_ids=ids,
        columns={k: cols[k] for k in batch.columns},
    )
    bad = sorted(why)
    kept = changed if not bad else changed.select(alive)
    out = None if outputs is None else {k: np.asarray(cols[k])[alive] for k in outputs}
    return BatchTransformed(kept, out, bad, [why[r] for r in bad])

"""Scoring a batch in ONNX Runtime with poison rows found by bisection.

A batch that fails in ONNX Runtime is split in halves until the failing rows are found:
only those get an error (and are dead-lettered by the step), the rest are scored. Every such
error is a ``ModelError`` dead letter with code ``SCORE_ERROR_CODE`` (``model_error``).
"""

from __future__ import annotations

import numpy as np

from streamflow.inference.kinds import Outputs
from streamflow.inference.session import LoadedModel
from streamflow.records import ReasonCode

SCORE_ERROR_CODE = ReasonCode.MODEL_ERROR  # the code of every error score_rows gives


def _assemble(parts: list[tuple[int, int, Outputs]], n: int) -> Outputs:
    """The outputs of row ranges as arrays of ``n`` rows; rows no range covers hold NaN (numbers)
    or None (strings)."""
    if not parts:
        return {}
    out: Outputs = {}
    for name, first in parts[0][2].items():
        if first.dtype.kind == "f":
            arr = np.full((n, *first.shape[1:]), np.nan, dtype=first.dtype)
        else:
            arr = np.empty((n, *first.shape[1:]), dtype=first.dtype)
            if first.dtype.kind == "O":
                arr[...] = None
        for lo, hi, y in parts:
            arr[lo:hi] = y[name]
        out[name] = arr
    return out


def score_rows(model: LoadedModel, x: np.ndarray, max_batch: int) -> tuple[Outputs, dict[int, str]]:
    """The model's outputs for every row (``LoadedModel.run_all``); rows ONNX Runtime fails on
    (found by bisection) or whose numeric outputs come out non-finite get an error instead (each
    of code ``SCORE_ERROR_CODE``). When every row fails, the outputs are empty."""
    parts: list[tuple[int, int, Outputs]] = []
    errors: dict[int, str] = {}

    def run(lo: int, hi: int) -> None:
        try:
            parts.append((lo, hi, model.run_all(x[lo:hi])))
        except Exception as exc:  # ORT raises its own exception types
            if hi - lo == 1:
                errors[lo] = (
                    f"model {model.name} failed on this record: "
                    f"{type(exc).__name__}: {str(exc)[:300]}"
                )
                return
            mid = (lo + hi) // 2
            run(lo, mid)
            run(mid, hi)

    for start in range(0, len(x), max_batch):
        run(start, min(start + max_batch, len(x)))
    outputs = _assemble(parts, len(x))
    for name, arr in outputs.items():
        if arr.dtype.kind != "f":
            continue
        for row in np.flatnonzero(~np.isfinite(arr.reshape(len(x), -1)).all(axis=1)).tolist():
            errors.setdefault(row, f"model {model.name} produced a non-finite {name}")
    return outputs, errors

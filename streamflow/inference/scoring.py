"""Scoring a batch in ONNX Runtime with poison rows found by bisection.

A batch that fails in ONNX Runtime is split in halves until the failing rows are found:
only those get an error (and are dead-lettered by the step), the rest are scored. Every such
error is a ``ModelError`` dead letter with code ``SCORE_ERROR_CODE`` (``model_error``).
"""

from __future__ import annotations

import numpy as np

from streamflow.inference.session import LoadedModel
from streamflow.records import ReasonCode

SCORE_ERROR_CODE = ReasonCode.MODEL_ERROR  # the code of every error score_rows gives


def score_rows(
    model: LoadedModel, x: np.ndarray, max_batch: int
) -> tuple[np.ndarray, dict[int, str]]:
    """The model's output for every row (a score, or an embedding row); rows ONNX Runtime fails on
    (found by bisection) or that come out non-finite get an error instead (each of code
    ``SCORE_ERROR_CODE``)."""
    scores = np.full(len(x), np.nan)
    errors: dict[int, str] = {}

    def run(lo: int, hi: int) -> None:
        nonlocal scores
        try:
            y = model.run(x[lo:hi])
            if y.ndim > 1 and scores.ndim == 1:  # an embedding per row: widen the output once
                scores = np.full((len(x), *y.shape[1:]), np.nan, dtype=y.dtype)
            scores[lo:hi] = y
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
    for row in np.flatnonzero(~np.isfinite(scores.reshape(len(x), -1)).all(axis=1)).tolist():
        errors.setdefault(row, f"model {model.name} produced a non-finite score")
    return scores, errors

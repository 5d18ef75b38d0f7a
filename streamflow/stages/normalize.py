"""Per-feature scaling: optional log1p, then z-score or min-max, as one affine map."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamflow.records import ReasonCode
from streamflow.settings import FeatureSpec
from streamflow.stages.clean import StageResult


@dataclass(frozen=True)
class Normalizer:
    """``y = (f(x) - shift) / scale`` per column, with f = log1p on ``log_cols``."""

    names: tuple[str, ...]
    log_cols: np.ndarray  # bool[F]
    shift: np.ndarray  # float64[F]
    scale: np.ndarray  # float64[F]
    widths: tuple[
        int, ...
    ] = ()  # model columns per feature: a one-hot category takes one per value

    @classmethod
    def from_features(cls, features: Sequence[FeatureSpec]) -> Normalizer:
        shift, scale = [], []
        for f in features:
            if "zscore" in f.normalize:
                shift.append(f.mean)
                scale.append(f.std)
            elif "minmax" in f.normalize:
                assert f.scale_min is not None and f.scale_max is not None
                shift.append(f.scale_min)
                scale.append(f.scale_max - f.scale_min)
            else:
                shift.append(0.0)
                scale.append(1.0)
        return cls(
            names=tuple(f.name for f in features),
            log_cols=np.array(["log1p" in f.normalize for f in features], dtype=bool),
            shift=np.array(shift, dtype=np.float64),
            scale=np.array(scale, dtype=np.float64),
            widths=tuple(f.width for f in features),
        )

    def expand(self, y: np.ndarray) -> np.ndarray:
        """Model-ready columns: each one-hot category's index as one column per value."""
        if all(w == 1 for w in self.widths):
            return y
        out = np.zeros((len(y), sum(self.widths)), dtype=y.dtype)
        start = 0
        for j, w in enumerate(self.widths):
            if w == 1:
                out[:, start] = y[:, j]
            else:
                index = y[:, j].astype(np.int64)
                rows = np.flatnonzero((index >= 0) & (index < w))
                out[rows, start + index[rows]] = 1.0
            start += w
        return out

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The transform alone, float64 in and out (also used to fit statistics)."""
        x = np.array(x, dtype=np.float64, copy=True)
        if self.log_cols.any():
            with np.errstate(invalid="ignore", divide="ignore"):
                x[:, self.log_cols] = np.log1p(x[:, self.log_cols])
        return (x - self.shift) / self.scale


def normalize(x: np.ndarray, norm: Normalizer) -> StageResult:
    """Scale a cleaned batch; rows whose result is not finite are rejected with the column
    (``ReasonCode.NOT_NORMALIZABLE``)."""
    y = norm.apply(x)
    bad = ~np.isfinite(y)
    ok = ~bad.any(axis=1)
    reasons: list[str | None] = [None] * len(ok)
    codes: list[ReasonCode | None] = [None] * len(ok)
    for r in np.flatnonzero(~ok).tolist():
        c = int(np.flatnonzero(bad[r])[0])
        reasons[r] = f"{norm.names[c]}: value {x[r, c]} cannot be normalized (result {y[r, c]})"
        codes[r] = ReasonCode.NOT_NORMALIZABLE
    y[~ok] = 0.0
    return StageResult(norm.expand(y).astype(np.float32), ok, reasons, codes)

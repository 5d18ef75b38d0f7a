"""Validation, defaults and range handling for decoded feature columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from streamflow.records import ReasonCode
from streamflow.settings import FeatureSpec


@dataclass(frozen=True)
class StageResult:
    """A stage's output for a batch: values for every row, and which rows passed.

    ``reasons[i]`` explains why row i was rejected and ``codes[i]`` is that reason's code (both
    None where ``ok[i]``).
    """

    values: np.ndarray  # float32[n, F]
    ok: np.ndarray  # bool[n]
    reasons: list[str | None]
    codes: list[ReasonCode | None]

    @property
    def rejected_rows(self) -> np.ndarray:
        return np.flatnonzero(~self.ok)


@dataclass(frozen=True)
class CleanRules:
    """The feature list's cleaning rules as per-column arrays."""

    names: tuple[str, ...]
    required: np.ndarray  # bool[F]
    default: np.ndarray  # float64[F]; NaN where required
    lo: np.ndarray  # float64[F]; -inf where unbounded
    hi: np.ndarray  # float64[F]; +inf where unbounded
    clip: np.ndarray  # bool[F]: clip out-of-range values instead of rejecting the row
    integer: np.ndarray  # bool[F]: values must be whole numbers
    hour: np.ndarray  # bool[F]: an epoch-ms value becomes its hour of day (UTC)
    weekday: np.ndarray  # bool[F]: ... its day of the week (UTC, Monday = 0)
    category: np.ndarray  # bool[F]: a vocabulary index (-1: a value outside the vocabulary)
    reject_unknown: np.ndarray  # bool[F]: a category outside its vocabulary rejects the row
    vocabularies: tuple[tuple[str, ...], ...] = ()  # per feature (empty but for categories)

    @classmethod
    def from_features(cls, features: Sequence[FeatureSpec]) -> CleanRules:
        def arr(get, dtype=np.float64):  # type: ignore[no-untyped-def]
            return np.array([get(f) for f in features], dtype=dtype)

        return cls(
            names=tuple(f.name for f in features),
            required=arr(lambda f: f.required, bool),
            default=arr(_default),
            lo=arr(lambda f: -np.inf if f.min is None else f.min),
            hi=arr(lambda f: np.inf if f.max is None else f.max),
            clip=arr(lambda f: f.out_of_range == "clip", bool),
            integer=arr(lambda f: f.type == "int", bool),
            hour=arr(lambda f: f.type == "hour_of_day", bool),
            weekday=arr(lambda f: f.type == "day_of_week", bool),
            category=arr(lambda f: f.type == "category", bool),
            reject_unknown=arr(lambda f: f.type == "category" and f.unknown == "reject", bool),
            vocabularies=tuple(f.vocabulary for f in features),
        )


def _default(f: FeatureSpec) -> float:
    """A feature's default as its cleaned value: a category's is its vocabulary index."""
    if f.default is None:
        return np.nan
    if f.type == "category":
        return float(f.vocabulary.index(str(f.default))) if f.default in f.vocabulary else np.nan
    return float(f.default)


HOUR_MS, DAY_MS = 3_600_000, 86_400_000
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


def time_parts(values: np.ndarray, missing: np.ndarray, rules: CleanRules) -> np.ndarray:
    """Epoch-ms columns as hour of day or day of week (UTC), vectorised; others as they are."""
    if not (rules.hour.any() or rules.weekday.any()):
        return values
    x = values.copy()
    with np.errstate(invalid="ignore"):
        ms = np.where(missing, 0.0, values)
        hours = np.floor(ms / HOUR_MS) % 24
        days = (np.floor(ms / DAY_MS) + EPOCH_WEEKDAY) % 7
    x = np.where(rules.hour & ~missing, hours, x)
    return np.where(rules.weekday & ~missing, days, x)


def _first_reason(
    bad: np.ndarray, x: np.ndarray, names: Sequence[str], what: str, rows: np.ndarray
) -> dict[int, str]:
    """For each row in ``rows``, a reason naming the first bad column."""
    cols = bad[rows].argmax(axis=1)
    return {
        int(r): what.format(name=names[c], value=x[r, c])
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
    }


def clean(
    values: np.ndarray,
    missing: np.ndarray,
    rules: CleanRules,
    unknown: Mapping[tuple[int, int], str] | None = None,
) -> StageResult:
    """Fill defaults, reject missing-required / unknown-category / non-finite / out-of-range
    rows, clip where asked.

    ``values`` is float64[n, F] as decoded (a category as its vocabulary index, -1 outside it;
    ``unknown`` has those values, by (row, column), for the reason); ``missing`` marks fields
    the record did not carry (null or absent). A value that is present but NaN or infinite is
    invalid, not missing: it is rejected rather than silently defaulted. A category outside
    its vocabulary takes the default, or rejects the row (``unknown = "reject"``).
    """
    n = values.shape[0]
    values = time_parts(values, missing, rules)
    reasons: dict[int, tuple[str, ReasonCode]] = {}  # row -> its first failed rule, in this order

    def reject(found: dict[int, str], code: ReasonCode) -> None:
        for r, why in found.items():
            reasons.setdefault(r, (why, code))

    miss_req = missing & rules.required
    rows = np.flatnonzero(miss_req.any(axis=1))
    reject(
        _first_reason(miss_req, values, rules.names, "missing required field {name}", rows),
        ReasonCode.MISSING_REQUIRED,
    )
    if rules.category.any():
        outside = rules.category & ~missing & (values < 0)
        refused = outside & rules.reject_unknown
        for r in np.flatnonzero(refused.any(axis=1)).tolist():
            c = int(np.flatnonzero(refused[r])[0])
            value = (unknown or {}).get((r, c), "?")
            known = ", ".join(rules.vocabularies[c][:8])
            more = ", ..." if len(rules.vocabularies[c]) > 8 else ""
            reject(
                {r: f"{rules.names[c]}: {value[:40]!r} is not in the vocabulary ({known}{more})"},
                ReasonCode.UNKNOWN_CATEGORY,
            )
        missing = missing | (outside & ~rules.reject_unknown)  # takes the default
    x = np.where(missing, rules.default, values)

    nonfinite = ~missing & ~np.isfinite(values)
    rows = np.flatnonzero(nonfinite.any(axis=1))
    reject(
        _first_reason(nonfinite, values, rules.names, "{name}: non-finite value {value}", rows),
        ReasonCode.NON_FINITE,
    )

    with np.errstate(invalid="ignore"):
        not_int = rules.integer & ~missing & np.isfinite(values) & (values != np.round(values))
        rows = np.flatnonzero(not_int.any(axis=1))
        what = "{name}: expected an integer, got {value}"
        reject(_first_reason(not_int, values, rules.names, what, rows), ReasonCode.NOT_INTEGER)

        out = ((x < rules.lo) | (x > rules.hi)) & np.isfinite(x)
    hard = out & ~rules.clip
    rows = np.flatnonzero(hard.any(axis=1))
    ranges: dict[int, str] = {}
    for r, why in _first_reason(
        hard, x, rules.names, "{name}: value {value} out of range", rows
    ).items():
        c = int(np.flatnonzero(hard[r])[0])
        ranges[r] = f"{why} [{rules.lo[c]:g}, {rules.hi[c]:g}]"
    reject(ranges, ReasonCode.OUT_OF_RANGE)

    x = np.clip(x, rules.lo, rules.hi)
    ok = np.ones(n, dtype=bool)
    if reasons:
        ok[list(reasons)] = False
    x[~ok] = 0.0
    found = [reasons.get(i) for i in range(n)]
    return StageResult(
        x.astype(np.float32),
        ok,
        [f[0] if f else None for f in found],
        [f[1] if f else None for f in found],
    )

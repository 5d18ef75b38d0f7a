"""Transforms as a user writes them, for the tests
(``tests.unit.stages.user_transforms:NAME`` in a pipeline file)."""

from __future__ import annotations

import numpy as np

Columns = dict[str, np.ndarray]


def double_power(cols: Columns) -> Columns:
    """A derived value: power_w doubled."""
    return {"power_w": cols["power_w"] * 2}


def refuse_hot(cols: Columns) -> tuple[Columns, list[str | None]]:
    """Refuse rows hotter than 90 C, with a reason; change nothing."""
    return {}, ["too hot to score" if t > 90 else None for t in cols["cpu_temp_c"].tolist()]


def poison(cols: Columns) -> Columns:
    """Raises whenever a batch holds a temperature of exactly 66.6 C (a poison row)."""
    if np.any(np.isclose(cols["cpu_temp_c"], 66.6)):
        raise ValueError("66.6 is cursed")
    return {}


def wrong_shape(cols: Columns) -> Columns:
    return {"power_w": np.zeros(len(cols["power_w"]) + 1)}


def halve_score(cols: Columns) -> Columns:
    """After the model: the score halved."""
    return {"score": cols["score"] / 2}


def two_arguments(cols: Columns, other: int) -> Columns:
    return cols

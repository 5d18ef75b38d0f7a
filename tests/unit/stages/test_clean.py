import numpy as np

from streamflow.settings import FeatureSpec
from streamflow.stages.clean import CleanRules, clean

FEATURES = [
    FeatureSpec("temp", required=True, min=0.0, max=100.0, out_of_range="reject"),
    FeatureSpec("fan", default=500.0, min=0.0, max=1000.0, out_of_range="clip"),
    FeatureSpec("count", type="int", default=0.0),
]
RULES = CleanRules.from_features(FEATURES)


def run(rows: list[list[float | None]]):  # type: ignore[no-untyped-def]
    values = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)
    missing = np.array([[v is None for v in r] for r in rows])
    return clean(values, missing, RULES)


def test_good_rows_pass_and_defaults_fill_missing_optional_fields() -> None:
    res = run([[20.0, None, 3.0], [30.0, 700.0, None]])
    assert res.ok.tolist() == [True, True]
    assert res.values.tolist() == [[20.0, 500.0, 3.0], [30.0, 700.0, 0.0]]
    assert res.reasons == [None, None]


def test_missing_required_field_is_rejected_with_its_name() -> None:
    res = run([[None, 1.0, 1.0]])
    assert res.ok.tolist() == [False]
    assert res.reasons == ["missing required field temp"]


def test_nan_and_inf_are_invalid_not_missing() -> None:
    res = run([[np.nan, 1.0, 1.0], [20.0, np.inf, 1.0]])
    assert res.ok.tolist() == [False, False]
    assert res.reasons[0] == "temp: non-finite value nan"
    assert res.reasons[1] == "fan: non-finite value inf"


def test_out_of_range_rejects_or_clips_per_feature() -> None:
    res = run([[150.0, 1.0, 1.0], [50.0, 5000.0, 1.0], [50.0, -3.0, 1.0]])
    assert res.ok.tolist() == [False, True, True]
    assert res.reasons[0] == "temp: value 150.0 out of range [0, 100]"
    assert res.values[1:, 1].tolist() == [1000.0, 0.0]


def test_integer_features_reject_fractions() -> None:
    res = run([[50.0, 1.0, 2.5]])
    assert res.reasons == ["count: expected an integer, got 2.5"]


def test_the_first_problem_is_reported_once_per_row() -> None:
    res = run([[None, np.nan, 2.5]])
    assert res.reasons == ["missing required field temp"]
    assert res.rejected_rows.tolist() == [0]

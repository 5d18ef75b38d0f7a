import math

import numpy as np

from streamflow.settings import FeatureSpec
from streamflow.stages.normalize import Normalizer, normalize

FEATURES = [
    FeatureSpec("a", required=True, normalize=("zscore",), mean=10.0, std=2.0),
    FeatureSpec("b", required=True, normalize=("minmax",), scale_min=0.0, scale_max=50.0),
    FeatureSpec("c", required=True, normalize=("log1p", "zscore"), mean=1.0, std=0.5),
    FeatureSpec("d", required=True, normalize=("none",)),
]
NORM = Normalizer.from_features(FEATURES)


def test_each_method_matches_its_formula() -> None:
    res = normalize(np.array([[12.0, 25.0, 3.0, 7.0]]), NORM)
    assert res.ok.tolist() == [True]
    expected = [1.0, 0.5, (math.log1p(3.0) - 1.0) / 0.5, 7.0]
    np.testing.assert_allclose(res.values[0], expected, rtol=1e-6)
    assert res.values.dtype == np.float32


def test_unnormalizable_rows_are_rejected_with_the_column() -> None:
    res = normalize(np.array([[12.0, 25.0, -2.0, 1.0], [10.0, 0.0, 0.0, 0.0]]), NORM)
    assert res.ok.tolist() == [False, True]
    assert res.reasons[0] is not None and res.reasons[0].startswith(
        "c: value -2.0 cannot be normalized"
    )

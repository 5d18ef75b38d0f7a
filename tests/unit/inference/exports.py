"""Small classical models trained on synthetic telemetry and exported to ONNX the way their users
export them: scikit-learn through skl2onnx, LightGBM through onnxmltools (test_model_shapes.py).

Every model reads the same four readings (``FEATURES``, raw: the pipelines built on them
normalize nothing) and is trained in well under a second, seeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = ("cpu_temp_c", "power_w", "cpu_util_pct", "mem_util_pct")
LOW = np.array([20.0, 50.0, 0.0, 0.0])
HIGH = np.array([100.0, 900.0, 100.0, 100.0])
HEAT = ("cool", "warm", "hot")  # the classes of the multi-class models, by int64 class index
INPUT = "features"  # the ONNX input every model takes


@dataclass(frozen=True)
class Exported:
    """A fitted estimator and its ONNX file."""

    estimator: Any
    path: str


def readings(n: int, seed: int) -> np.ndarray:
    """``n`` rows of the four readings, float32, uniform over plausible ranges."""
    return np.random.default_rng(seed).uniform(LOW, HIGH, size=(n, 4)).astype(np.float32)


def heat_index(x: np.ndarray, seed: int) -> np.ndarray:
    """0 cool, 1 warm, 2 hot: mostly temperature and power, with some noise so the
    probabilities are not all 0 or 1."""
    z = (x[:, 0] - 60.0) / 20.0 + (x[:, 1] - 475.0) / 250.0
    z = z + np.random.default_rng(seed).normal(scale=0.5, size=len(x))
    return np.digitize(z, [-0.7, 0.7])


def _save(onx: Any, path: Path) -> str:
    path.write_bytes(onx.SerializeToString())
    return str(path)


def _skl(estimator: Any, path: Path, *, double: bool = False, **options: Any) -> str:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    tensor = DoubleTensorType if double else FloatTensorType
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    onx = convert_sklearn(
        estimator,
        initial_types=[(INPUT, tensor([None, 4]))],
        options={id(final): options} if options else None,
    )
    return _save(onx, path)


def heat_classifier(directory: Path, *, string_classes: bool, **options: Any) -> Exported:
    """StandardScaler + LogisticRegression over three classes: ``HEAT``'s names (skl2onnx's
    ZipMap keys them by name) or their int64 indices; ``options`` are skl2onnx's for the
    classifier (``zipmap``, ``raw_scores``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = readings(300, seed=1)
    y = heat_index(x, seed=2)
    target = np.asarray(HEAT)[y] if string_classes else y
    clf = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, target)
    kind = "names" if string_classes else "ints"
    suffix = "-".join(f"{k}{int(v)}" for k, v in sorted(options.items()))
    return Exported(clf, _skl(clf, directory / f"heat-{kind}{suffix}.onnx", **options))


def overheat_classifier(directory: Path) -> Exported:
    """A binary classifier, classes ``ok`` and ``overheat``, exported with skl2onnx's ZipMap."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = readings(300, seed=3)
    noisy = x[:, 0] + np.random.default_rng(4).normal(scale=8.0, size=len(x))
    y = np.where(noisy > 80.0, "overheat", "ok")
    clf = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    return Exported(clf, _skl(clf, directory / "overheat.onnx"))


def fan_regressor(directory: Path) -> Exported:
    """A GradientBoostingRegressor of the fan speed (rpm) the readings call for."""
    from sklearn.ensemble import GradientBoostingRegressor

    x = readings(300, seed=5)
    y = 2000.0 + 60.0 * x[:, 0] + 4.0 * x[:, 1] + np.random.default_rng(6).normal(0, 100, len(x))
    reg = GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=0).fit(x, y)
    return Exported(reg, _skl(reg, directory / "fan.onnx"))


def double_input_classifier(directory: Path) -> Exported:
    """A classifier whose input is tensor(double) (skl2onnx's DoubleTensorType; ZipMap takes
    float probabilities only, so without it)."""
    from sklearn.linear_model import LogisticRegression

    x = readings(300, seed=1).astype(np.float64)
    clf = LogisticRegression(max_iter=1000).fit(x, heat_index(x, seed=2))
    return Exported(clf, _skl(clf, directory / "double.onnx", double=True, zipmap=False))


# onnxmltools 1.16 converts LightGBM up to opset 15 (it refuses a higher target_opset); the
# graph it writes needs only opset 9 of the default domain and ai.onnx.ml 1, which any recent
# ONNX Runtime loads.
LIGHTGBM_OPSET = 15


def heat_lightgbm(directory: Path, *, zipmap: bool = True) -> Exported:
    """LGBMClassifier over the three int64 classes of ``HEAT``, through onnxmltools (a ZipMap
    keyed by the int64 classes, or with ``zipmap=False`` a [batch, 3] tensor)."""
    import lightgbm
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    x = readings(300, seed=1)
    clf = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=7, random_state=0, verbose=-1)
    clf.fit(x, heat_index(x, seed=2))
    onx = onnxmltools.convert_lightgbm(
        clf,
        initial_types=[(INPUT, FloatTensorType([None, 4]))],
        target_opset=LIGHTGBM_OPSET,
        zipmap=zipmap,
    )
    return Exported(clf, _save(onx, directory / f"heat-lightgbm-zipmap{int(zipmap)}.onnx"))

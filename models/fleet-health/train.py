"""Train the fleet-health classifier and export it: ``python models/fleet-health/train.py``.

Run from the repository root (or anywhere: paths are taken from this file), with the ``train``
extra installed (scikit-learn, skl2onnx). Steps:

1. 40,000 well-formed readings from ``fleet_health.FleetGenerator`` (pipelines/, seeded), one a
   minute across the fleet (four weeks of hours), labelled with their health class.
2. ``fleet_health.model_matrix``: the model input exactly as the pipeline builds it, float32
   [n, 14] (defaults filled in, hw_model one-hot, on_battery 0/1, the hour, watts_per_util).
3. A scikit-learn gradient-boosted tree ensemble, seeded, fitted on the string class labels.
4. skl2onnx: input ``features`` float [None, 14]; outputs ``output_label`` (the class) and
   ``output_probability`` (class -> probability); the model's name, version and feature names
   (the pipeline's [[features]] order) in its metadata.
5. A check that ONNX Runtime's probabilities match ``predict_proba`` on held-out readings from
   another simulated fleet, then ``model.onnx`` and ``stats.json`` beside this file (per
   feature, the cleaned training values' mean, std, min, max and drift bins).

Reproducible: the same seed writes a byte-identical model.onnx, and ``train(seed)`` refits the
identical scikit-learn model (tests import it and compare the pipeline's results with
``predict_proba``), so no pickle is kept. Trees need no scaling, and have none on purpose: their
thresholds sit on training values, and an ONNX Scaler's float32 arithmetic differs from
scikit-learn's by an ulp now and then, which would send a row down the other branch. (A network
would want scaling, but its fit changes with the BLAS kernel and thread count: it would not refit
identically on another machine.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier  # type: ignore[import-untyped]
from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]

from streamflow.collectors.synthetic import DEFAULT_START_MS
from streamflow.inference.monitoring import drift_bins

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "pipelines"))  # fleet_health sits beside its pipeline

import fleet_health  # noqa: E402

MODEL_NAME, MODEL_VERSION = "fleet-health", "1.0.0"
SEED = 7
N_TRAIN, N_TEST = 40_000, 20_000
INTERVAL_MS = 60_000  # simulated time between readings
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
MAX_PROBABILITY_DIFF = 1e-5  # ONNX Runtime (float32) against predict_proba (float64)


def dataset(seed: int, n: int, start_ms: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(model input float32 [n', 14], class labels) of the well-formed readings among ``n``."""
    gen = fleet_health.FleetGenerator(seed=seed, malformed_rate=0.0, start_ms=start_ms)
    samples = [s for s in gen.sample(n, interval_ms=INTERVAL_MS) if s.fault is None]
    x = fleet_health.model_matrix([s.record for s in samples])
    return x, np.array([s.anomaly_kind for s in samples])


def make_model(seed: int = SEED) -> Pipeline:
    """The unfitted model: gradient-boosted trees over the raw (unscaled) features."""
    return Pipeline(
        [
            (
                "clf",
                GradientBoostingClassifier(
                    n_estimators=80,
                    learning_rate=0.2,
                    max_depth=3,
                    subsample=0.5,
                    max_features=0.6,
                    random_state=seed,
                ),
            )
        ]
    )


def train(seed: int = SEED, n: int = N_TRAIN) -> Pipeline:
    """The fitted scikit-learn model: the same seed gives the same model, to the bit."""
    x, y = dataset(seed, n)
    return make_model(seed).fit(x, y)


def to_onnx(model: Pipeline) -> Any:
    """The model as an ONNX ModelProto, with its name, version and feature order as metadata."""
    from onnx import helper
    from skl2onnx import convert_sklearn  # type: ignore[import-untyped]
    from skl2onnx.common.data_types import FloatTensorType  # type: ignore[import-untyped]

    width = len(fleet_health.model_columns())
    onx = convert_sklearn(
        model,
        name=MODEL_NAME,
        initial_types=[("features", FloatTensorType([None, width]))],
        target_opset=TARGET_OPSET,
    )
    # skl2onnx lists the opsets in set order, which changes with the string hash seed: sort them,
    # so the same model always makes the same bytes.
    opsets = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    onx.opset_import.extend(helper.make_opsetid(d, v) for d, v in opsets)
    helper.set_model_props(
        onx,
        {
            "name": MODEL_NAME,
            "version": MODEL_VERSION,
            "features": ",".join(fleet_health.FEATURES),
        },
    )
    return onx


def onnx_probabilities(model_bytes: bytes, x: np.ndarray, classes: list[str]) -> np.ndarray:
    """ONNX Runtime's class probabilities for ``x``, columns in ``classes`` order."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    _, maps = sess.run(None, {"features": x})
    return np.array([[m[c] for c in classes] for m in maps])


def feature_stats(seed: int = SEED, n: int = N_TRAIN) -> dict[str, dict[str, Any]]:
    """Per feature, its cleaned training values' mean, std, min and max (a category's value is
    its vocabulary index, a bool's 0/1) and the drift monitor's bins (``drift_bins``: deciles)."""
    gen = fleet_health.FleetGenerator(seed=seed, malformed_rate=0.0)
    records = [s.record for s in gen.sample(n, interval_ms=INTERVAL_MS) if s.fault is None]
    cols = fleet_health.feature_columns(records)
    out: dict[str, dict[str, Any]] = {}
    for name in fleet_health.FEATURES:
        col = cols[name].astype(np.float64)
        bins = drift_bins(col)
        out[name] = {
            "mean": round(float(col.mean()), 6),
            "std": round(float(max(col.std(), 1e-6)), 6),
            "min": round(float(col.min()), 6),
            "max": round(float(col.max()), 6),
            "drift_edges": bins.edges,
            "drift_expected": bins.expected,
        }
    return out


def confusion(y: np.ndarray, pred: np.ndarray) -> str:
    """The confusion matrix as text: a row per true class, a column per predicted one."""
    classes = fleet_health.CLASSES
    width = max(len(c) for c in classes) + 2
    lines = ["true \\ predicted".ljust(width + 6) + "".join(c.rjust(width) for c in classes)]
    for t in classes:
        row = [int(((y == t) & (pred == p)).sum()) for p in classes]
        lines.append(t.ljust(width + 6) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--out", default=str(HERE), help="folder for model.onnx and stats.json")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    model = train(a.seed)
    seconds = time.perf_counter() - t0
    classes = [str(c) for c in model.classes_]
    if sorted(classes) != sorted(fleet_health.CLASSES):
        raise SystemExit(f"trained on classes {classes}, expected {fleet_health.CLASSES}")

    # Held out: another simulated fleet (other hosts), in the four weeks after training's.
    x_te, y_te = dataset(a.seed + 1, N_TEST, start_ms=DEFAULT_START_MS + N_TRAIN * INTERVAL_MS)
    pred = model.predict(x_te)
    accuracy = float((pred == y_te).mean())
    recall = {c: round(float((pred[y_te == c] == c).mean()), 4) for c in fleet_health.CLASSES}
    freq = {c: round(float((y_te == c).mean()), 4) for c in fleet_health.CLASSES}

    model_bytes = to_onnx(model).SerializeToString()
    got = onnx_probabilities(model_bytes, x_te, classes)
    diff = float(np.abs(got - model.predict_proba(x_te)).max())
    if not diff <= MAX_PROBABILITY_DIFF:
        raise SystemExit(f"ONNX probabilities differ from predict_proba by {diff:.3g}")

    (out / "model.onnx").write_bytes(model_bytes)
    stats = feature_stats(a.seed)
    meta = {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "seed": a.seed,
        "n_train": N_TRAIN,
        "n_test": int(len(y_te)),
        "accuracy": round(accuracy, 4),
        "recall": recall,
        "class_frequency": freq,
        "onnx_max_probability_diff": float(f"{diff:.3g}"),
    }
    (out / "stats.json").write_text(
        json.dumps({"features": stats, "model": meta}, indent=2, sort_keys=True) + "\n"
    )

    print(f"trained in {seconds:.1f} s on {N_TRAIN} readings (seed {a.seed})")
    print(f"held-out accuracy {accuracy:.4f} on {len(y_te)} readings from another fleet")
    print("class frequency: " + ", ".join(f"{c} {v:.3f}" for c, v in freq.items()))
    print("recall: " + ", ".join(f"{c} {v:.3f}" for c, v in recall.items()))
    print(confusion(y_te, pred))
    print(f"ONNX Runtime vs predict_proba: max abs difference {diff:.2e}")
    print(
        f"wrote {out / 'model.onnx'} ({len(model_bytes)} bytes, input float32 "
        f"[batch, {x_te.shape[1]}]) and {out / 'stats.json'} (statistics and drift bins)"
    )


if __name__ == "__main__":
    main()

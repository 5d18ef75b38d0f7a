"""Train and export the demo anomaly classifier: ``python -m streamflow.model.train``.

Synthetic telemetry with labelled anomalies -> the pipeline's own clean and normalize
stages -> an MLP (16 -> 32 -> 16 -> 1) trained in plain numpy (Adam, cross-entropy) ->
ONNX via onnx.helper. Seeded: the same seed gives byte-identical files on one machine.
Writes ``stats.json`` (per-feature statistics for the normalize stage, the bins the drift
monitor compares live inputs against, and the held-out AUC) and ``model.onnx`` into the output
folder.
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from streamflow.collectors.synthetic import MEASUREMENTS, Sample, TelemetryGenerator
from streamflow.inference.monitoring import drift_bins
from streamflow.settings import FeatureSpec
from streamflow.settings.loading import _build_features
from streamflow.stages.clean import CleanRules, clean
from streamflow.stages.normalize import Normalizer, normalize

HIDDEN = (32, 16)
MODEL_NAME, MODEL_VERSION = "telemetry-anomaly", "1.0.0"


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve from ranks (ties get their average rank)."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _matrix(samples: list[Sample], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    rows = [[s.record.get(n) for n in names] for s in samples]
    arr = np.array(rows, dtype=object)
    missing = np.equal(arr, None)  # type: ignore[call-overload]  # numpy stubs lack object-None
    return np.where(missing, np.nan, arr).astype(np.float64), missing


def _specs(pipeline: Path, stats: dict[str, Any]) -> list[FeatureSpec]:
    tables = tomllib.loads(pipeline.read_text())["features"]
    problems: list[str] = []
    specs = _build_features(tables, stats, problems)
    if problems:
        raise SystemExit("pipeline features: " + "; ".join(problems))
    return specs


def fit_stats(pipeline: Path, x_clean: np.ndarray) -> dict[str, dict[str, float]]:
    """mean/std/min/max per feature, after log1p where the feature's normalize starts with it."""
    tables = tomllib.loads(pipeline.read_text())["features"]
    out = {}
    for j, t in enumerate(tables):
        col = x_clean[:, j]
        if str(t.get("normalize", "zscore")).startswith("log1p"):
            col = np.log1p(col)
        out[t["name"]] = {
            "mean": round(float(col.mean()), 6),
            "std": round(float(max(col.std(), 1e-6)), 6),
            "scale_min": round(float(col.min()), 6),
            "scale_max": round(float(col.max()), 6),
        }
    return out


def fit_drift(names: list[str], x_clean: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """drift_edges/drift_expected per feature (``inference/monitoring.py``: deciles of the
    cleaned, un-normalized values the model was trained on)."""
    out = {}
    for j, name in enumerate(names):
        bins = drift_bins(x_clean[:, j])
        out[name] = {"drift_edges": bins.edges, "drift_expected": bins.expected}
    return out


def prepare(samples: list[Sample], specs: list[FeatureSpec]) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs through the production stages, and which rows survived them."""
    values, missing = _matrix(samples, [f.name for f in specs])
    cleaned = clean(values, missing, CleanRules.from_features(specs))
    normed = normalize(cleaned.values, Normalizer.from_features(specs))
    return normed.values, cleaned.ok & normed.ok


class MLP:
    def __init__(self, n_in: int, rng: np.random.Generator) -> None:
        sizes = (n_in, *HIDDEN, 1)
        self.w = [
            rng.normal(0, np.sqrt(2.0 / a), (a, b))
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        ]
        self.b = [np.zeros(b) for b in sizes[1:]]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        acts = [x]
        h = x
        for i, (w, b) in enumerate(zip(self.w, self.b, strict=True)):
            z = h @ w + b
            h = np.maximum(z, 0) if i < len(self.w) - 1 else 1 / (1 + np.exp(-z))
            acts.append(h)
        return h[:, 0], acts

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        rng: np.random.Generator,
        epochs: int = 20,
        batch: int = 256,
        lr: float = 2e-3,
    ) -> None:
        params = self.w + self.b
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        step = 0
        pos_weight = (1 - y.mean()) / max(y.mean(), 1e-6)  # balance the rare anomalies
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for start in range(0, len(x), batch):
                idx = order[start : start + batch]
                xb, yb = x[idx], y[idx]
                p, acts = self.forward(xb)
                weight = np.where(yb > 0, pos_weight, 1.0)
                grad = ((p - yb) * weight / weight.sum())[:, None]  # d(weighted BCE)/d(logit)
                gw: list[np.ndarray] = []
                gb: list[np.ndarray] = []
                for i in range(len(self.w) - 1, -1, -1):
                    gw.insert(0, acts[i].T @ grad)
                    gb.insert(0, grad.sum(axis=0))
                    if i:
                        grad = (grad @ self.w[i].T) * (acts[i] > 0)
                step += 1
                for k, (p_, g) in enumerate(zip(params, gw + gb, strict=True)):
                    m[k] = 0.9 * m[k] + 0.1 * g
                    v[k] = 0.999 * v[k] + 0.001 * g * g
                    p_ -= lr * (m[k] / (1 - 0.9**step)) / (np.sqrt(v[k] / (1 - 0.999**step)) + 1e-8)


def export_onnx(mlp: MLP, feature_names: list[str], path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    prev = "features"
    for i, (w, b) in enumerate(zip(mlp.w, mlp.b, strict=True)):
        inits += [
            numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
            numpy_helper.from_array(b.astype(np.float32), f"b{i}"),
        ]
        out = f"z{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out], name=f"dense{i}"))
        act = f"h{i}" if i < len(mlp.w) - 1 else "score"
        nodes.append(
            helper.make_node(
                "Relu" if i < len(mlp.w) - 1 else "Sigmoid", [out], [act], name=f"act{i}"
            )
        )
        prev = act
    graph = helper.make_graph(
        nodes,
        MODEL_NAME,
        [
            helper.make_tensor_value_info(
                "features", TensorProto.FLOAT, ["batch", len(feature_names)]
            )
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="streamflow"
    )
    model.ir_version = 8
    helper.set_model_props(
        model, {"name": MODEL_NAME, "version": MODEL_VERSION, "features": ",".join(feature_names)}
    )
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def train(
    pipeline: str = "pipelines/telemetry.toml",
    out_dir: str = "models/telemetry-anomaly",
    seed: int = 7,
    n_train: int = 60_000,
    n_test: int = 40_000,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    pipe, out = Path(pipeline), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # Readings every 5 s of simulated time: the training set spans several daily cycles.
    train_set = TelemetryGenerator(seed=seed, anomaly_rate=0.05, malformed_rate=0.0).sample(
        n_train, interval_ms=5000
    )
    test_set = TelemetryGenerator(seed=seed + 1000, anomaly_rate=0.05, malformed_rate=0.0).sample(
        n_test, interval_ms=5000
    )

    no_stats = _specs(
        pipe,
        {k: {"mean": 0.0, "std": 1.0, "scale_min": 0.0, "scale_max": 1.0} for k in MEASUREMENTS},
    )
    names = [f.name for f in no_stats]
    values, missing = _matrix(train_set, names)
    cleaned = clean(values, missing, CleanRules.from_features(no_stats))
    normal = cleaned.ok & ~np.array([s.anomaly for s in train_set])
    stats = fit_stats(pipe, cleaned.values[normal].astype(np.float64))
    # every row the model learns from, anomalies included: the population it was trained on
    drift = fit_drift(names, cleaned.values[cleaned.ok])

    specs = _specs(pipe, stats)
    x_tr, ok_tr = prepare(train_set, specs)
    y_tr = np.array([s.anomaly for s in train_set], dtype=np.float64)
    mlp = MLP(len(specs), rng)
    mlp.fit(x_tr[ok_tr].astype(np.float64), y_tr[ok_tr], rng)

    x_te, ok_te = prepare(test_set, specs)
    y_te = np.array([s.anomaly for s in test_set])[ok_te]
    p_te, _ = mlp.forward(x_te[ok_te].astype(np.float64))
    kinds = np.array([s.anomaly_kind or "" for s in test_set])[ok_te]
    per_kind = {
        k: round(
            roc_auc(
                np.concatenate([np.zeros((~y_te).sum(), bool), np.ones((kinds == k).sum(), bool)]),
                np.concatenate([p_te[~y_te], p_te[kinds == k]]),
            ),
            4,
        )
        for k in sorted(set(kinds.tolist()) - {""})
    }
    metrics = {
        "auc": round(roc_auc(y_te, p_te), 4),
        "auc_by_kind": per_kind,
        "mean_score_normal": round(float(p_te[~y_te].mean()), 4),
        "mean_score_anomaly": round(float(p_te[y_te].mean()), 4),
        "n_train": int(ok_tr.sum()),
        "n_test": int(ok_te.sum()),
        "seed": seed,
        "anomaly_rate_train": 0.05,
    }
    (out / "stats.json").write_text(
        json.dumps(
            {
                "features": {n: {**v, **drift[n]} for n, v in stats.items()},
                "model": {"name": MODEL_NAME, "version": MODEL_VERSION, **metrics},
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    export_onnx(mlp, names, out / "model.onnx")
    _check_against_ort(out / "model.onnx", mlp, x_te[ok_te][:2000])
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    return metrics


def _check_against_ort(path: Path, mlp: MLP, x: np.ndarray) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"features": x.astype(np.float32)})[0][:, 0]
    want, _ = mlp.forward(x.astype(np.float32).astype(np.float64))
    if not np.allclose(got, want, atol=1e-5):
        raise SystemExit(
            f"exported model differs from the numpy forward pass by {np.abs(got - want).max()}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", default="pipelines/telemetry.toml")
    p.add_argument("--out", default="models/telemetry-anomaly")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    m = train(a.pipeline, a.out, a.seed)
    print(
        f"held-out AUC {m['auc']:.4f} ({m['n_test']} readings); by kind: "
        + ", ".join(f"{k} {v:.4f}" for k, v in m["auc_by_kind"].items())
    )
    print(
        f"mean score: normal {m['mean_score_normal']:.4f}, "
        f"anomalous {m['mean_score_anomaly']:.4f}; "
        f"trained in {m['seconds']} s; wrote {a.out}/model.onnx and stats.json"
    )


if __name__ == "__main__":
    main()

"""Row bisection when ONNX Runtime fails on part of a batch (the model is faked: ORT is not under test)."""

from dataclasses import dataclass

import numpy as np

from streamflow.agents.inference import score_rows


@dataclass
class PoisonModel:
    """Fails any batch containing a row whose first feature is negative."""

    name: str = "fake"
    calls: int = 0

    def run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if (x[:, 0] < 0).any():
            raise RuntimeError("poisoned input")
        return x[:, 0] * 0.5


def test_only_the_failing_rows_get_errors_the_rest_are_scored() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    x[3, 0] = -1
    x[7, 0] = -1
    model = PoisonModel()
    scores, errors = score_rows(model, x, max_batch=100)  # type: ignore[arg-type]
    assert sorted(errors) == [3, 7]
    assert "poisoned input" in errors[3]
    ok = [i for i in range(10) if i not in (3, 7)]
    np.testing.assert_allclose(scores[ok], x[ok, 0] * 0.5)


def test_batches_are_split_at_max_batch() -> None:
    model = PoisonModel()
    scores, errors = score_rows(model, np.ones((10, 2), dtype=np.float32), max_batch=4)  # type: ignore[arg-type]
    assert model.calls == 3 and not errors and np.all(scores == 0.5)


def test_non_finite_scores_are_errors() -> None:
    class NanModel(PoisonModel):
        def run(self, x: np.ndarray) -> np.ndarray:
            return np.where(x[:, 0] > 5, np.nan, 0.1)

    _, errors = score_rows(NanModel(), np.arange(10, dtype=np.float32).reshape(10, 1), max_batch=100)  # type: ignore[arg-type]
    assert sorted(errors) == [6, 7, 8, 9]
    assert errors[6] == "model fake produced a non-finite score"

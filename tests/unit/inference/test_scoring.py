"""Row bisection when ONNX Runtime fails on part of a batch (the model is faked: ORT is not
under test)."""

from dataclasses import dataclass

import numpy as np

from streamflow.inference.scoring import score_rows


@dataclass
class PoisonModel:
    """Fails any batch containing a row whose first feature is negative."""

    name: str = "fake"
    calls: int = 0

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        if (x[:, 0] < 0).any():
            raise RuntimeError("poisoned input")
        return {"score": x[:, 0] * 0.5}


def test_only_the_failing_rows_get_errors_the_rest_are_scored() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    x[3, 0] = -1
    x[7, 0] = -1
    model = PoisonModel()
    scores, errors = score_rows(model, x, max_batch=100)  # type: ignore[arg-type]
    assert sorted(errors) == [3, 7]
    assert "poisoned input" in errors[3]
    ok = [i for i in range(10) if i not in (3, 7)]
    np.testing.assert_allclose(scores["score"][ok], x[ok, 0] * 0.5)


def test_batches_are_split_at_max_batch() -> None:
    model = PoisonModel()
    scores, errors = score_rows(model, np.ones((10, 2), dtype=np.float32), max_batch=4)  # type: ignore[arg-type]
    assert model.calls == 3 and not errors and np.all(scores["score"] == 0.5)


def test_non_finite_scores_are_errors() -> None:
    class NanModel(PoisonModel):
        def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
            return {"score": np.where(x[:, 0] > 5, np.nan, 0.1)}

    _, errors = score_rows(
        NanModel(), np.arange(10, dtype=np.float32).reshape(10, 1), max_batch=100
    )  # type: ignore[arg-type]
    assert sorted(errors) == [6, 7, 8, 9]
    assert errors[6] == "model fake produced a non-finite score"


def test_a_real_onnx_model_failing_on_some_rows_fails_only_those(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A real ORT session that raises on rows whose first feature is not a valid index
    (Gather out of bounds: ORT's own error), the way a model can fail on odd inputs."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from streamflow.inference.session import LoadedModel

    table = helper.make_tensor("table", TensorProto.FLOAT, [10], [i / 10 for i in range(10)])
    nodes = [
        helper.make_node("Slice", ["x", "zero", "one", "one"], ["col"]),  # x[:, 0:1]
        helper.make_node("Cast", ["col"], ["idx"], to=TensorProto.INT64),
        helper.make_node(
            "Gather", ["table", "idx"], ["score"], axis=0
        ),  # out of bounds: ORT raises
    ]
    graph = helper.make_graph(
        nodes,
        "poison",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])],
        initializer=[
            table,
            helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
            helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        ],
    )
    path = tmp_path / "poison.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = LoadedModel(
        session, "poison", "1", "", str(path), "CPUExecutionProvider", "x", ["score"], 2
    )

    x = np.zeros((64, 2), dtype=np.float32)
    x[:, 0] = np.arange(64) % 10
    x[[5, 40, 41], 0] = [99, 12, -50]  # three rows the graph cannot handle
    scores, errors = score_rows(model, x, max_batch=64)
    assert sorted(errors) == [5, 40, 41]
    assert all("out of bounds" in e or "indices" in e for e in errors.values()), errors
    ok = [i for i in range(64) if i not in errors]
    np.testing.assert_allclose(scores["score"][ok], (np.arange(64) % 10)[ok] / 10, rtol=1e-6)


def test_embedding_rows_the_model_fails_on_are_found_the_same_way() -> None:
    """A text model returns a row per text (an embedding): bisection and non-finite checks per
    row."""

    class EmbeddingModel(PoisonModel):
        def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
            if (x[:, 0] < 0).any():
                raise RuntimeError("poisoned input")
            out = np.repeat(x[:, :1], 4, axis=1).astype(np.float32)
            out[x[:, 0] == 99, 2] = np.nan
            return {"embedding": out}

    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    x[[4, 13], 0] = -1
    x[7, 0] = 99
    out, errors = score_rows(EmbeddingModel(), x, max_batch=8)  # type: ignore[arg-type]
    emb = out["embedding"]
    assert emb.shape == (20, 4) and sorted(errors) == [4, 7, 13]
    assert errors[7] == "model fake produced a non-finite embedding"
    ok = [i for i in range(20) if i not in errors]
    np.testing.assert_array_equal(emb[ok], np.repeat(x[ok, :1], 4, axis=1))

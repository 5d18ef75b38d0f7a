"""The text-embedding kind takes the encoder as sentence-transformers or optimum export it.

Three graphs are built from the shipped MiniLM weights (``minilm.build_graph``): the token
vectors with a ``token_type_ids`` input (optimum's ``last_hidden_state``), the mean unscaled
(``sentence_embedding``), and the mean at unit length (like the shipped graph). Each is loaded
through ``load_model`` with the pipeline's pooling and normalisation and its embeddings compared
with the float64 numpy reference: cosine >= MIN_COSINE and max abs diff <= MAX_ABS_DIFF per
sentence (measured on ORT's CPU provider: 1 - cosine ~2.5e-13, max abs diff ~1.1e-7 on unit
vectors, ~1.2e-6 on the unscaled cls and max vectors).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

for _module in ("onnx", "onnxruntime", "tokenizers", "safetensors"):
    pytest.importorskip(_module, reason="the text extra: pip install 'streamflow-inference[text]'")

from streamflow.errors import ConfigError, ModelError  # noqa: E402
from streamflow.inference.kinds import file_problems  # noqa: E402
from streamflow.inference.kinds.text import TextEmbeddingKind, pool  # noqa: E402
from streamflow.inference.session import LoadedModel, load_model  # noqa: E402
from streamflow.model import minilm  # noqa: E402
from streamflow.settings import Settings  # noqa: E402
from streamflow.settings.loading import load_settings  # noqa: E402

try:
    SRC = minilm.package_dir()
except ConfigError as exc:
    pytest.skip(str(exc), allow_module_level=True)

ROOT = Path(__file__).resolve().parents[3]
PIPELINE = ROOT / "pipelines" / "text.toml"
# The shipped graph, models/minilm/model.onnx: the default build must not change by a byte
# (bump minilm.MODEL_VERSION and this pin together when it must).
SHIPPED_SHA256 = "e0c7bd2516a405e71295d7f84667e8f3f119824f03675cbe264c879f7da40eff"
MIN_COSINE = 0.9999
MAX_ABS_DIFF = 1e-5  # on unit-length embeddings (components ~0.05)
SENTENCES = [
    "Hi",
    "The server is overheating.",
    "Disk /dev/sda1 is 97% full; log rotation failed with ENOSPC at 03:14 UTC.",
    "Café naïve façade 🔥",
    "fan failure on rack 7, node 3, since this morning",
]


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return minilm.load_weights(SRC)


@pytest.fixture(scope="module")
def cfg() -> minilm.BertConfig:
    return minilm.read_config(SRC)


@pytest.fixture(scope="module")
def exports(
    weights: dict[str, np.ndarray], cfg: minilm.BertConfig, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The three export shapes, written once: name -> model.onnx."""
    out = tmp_path_factory.mktemp("exports")
    variants: dict[str, dict[str, Any]] = {
        "unpooled": {"pooling": False, "normalize": False, "token_type_ids": True},
        "pooled": {"normalize": False, "output_name": "sentence_embedding"},
        "normalised": {"output_name": "sentence_embedding"},
    }
    paths = {}
    for name, options in variants.items():
        paths[name] = out / f"{name}.onnx"
        paths[name].write_bytes(minilm.build_graph(weights, cfg, **options).SerializeToString())
    return paths


@pytest.fixture(scope="module")
def hidden(
    weights: dict[str, np.ndarray], cfg: minilm.BertConfig, exports: dict[str, Path]
) -> list[np.ndarray]:
    """The float64 reference token vectors [tokens, 384] of each sentence, unpadded."""
    settings = settings_for(str(exports["normalised"]), "sentence_embedding")
    tok = TextEmbeddingKind(settings).tokenizer
    return [minilm.reference_hidden(weights, cfg, ids) for ids in tok.tokenize(SENTENCES)]


def settings_for(path: str, output: str, pooling: str = "none", l2: bool = False) -> Settings:
    """pipelines/text.toml with the model file, its output and the pooling overridden (the
    tokenizer from the weights package, the one the export ships)."""
    return load_settings(
        PIPELINE,
        {
            "model.path": path,
            "model.tokenizer": str(SRC / "tokenizer.json"),
            "model.outputs": [output],
            "model.pooling": pooling,
            "model.l2_normalize": l2,
        },
    )


def embed(model: LoadedModel) -> np.ndarray:
    """The sentences tokenised by the kind's tokenizer, padded as one batch (as normalize feeds
    them: float32 ids), through the loaded model."""
    assert isinstance(model.kind, TextEmbeddingKind)
    ids, mask = model.kind.tokenizer.encode(SENTENCES)
    assert len(set(mask.sum(axis=1).tolist())) == len(SENTENCES)  # every length differs
    got = model.run(ids.astype(np.float32))
    assert got.shape == (len(SENTENCES), 384) and got.dtype == np.float32
    return got


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def assert_close(got: np.ndarray, want: list[np.ndarray]) -> tuple[float, float]:
    """Each row of ``got`` against its reference; (min cosine, max abs diff)."""
    assert got.shape == (len(SENTENCES), 384)
    cosines = [minilm.cosine(g, w) for g, w in zip(got, want, strict=True)]
    diff = max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))
    assert min(cosines) >= MIN_COSINE, cosines
    assert diff <= MAX_ABS_DIFF, diff
    return min(cosines), diff


def test_the_default_build_is_the_shipped_graph_byte_for_byte(
    weights: dict[str, np.ndarray], cfg: minilm.BertConfig
) -> None:
    data = minilm.build_graph(weights, cfg).SerializeToString()
    assert hashlib.sha256(data).hexdigest() == SHIPPED_SHA256


def test_each_export_has_the_signature_its_exporter_gives(exports: dict[str, Path]) -> None:
    def signature(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        s = minilm.onnx_session(path)
        return (
            {i.name: (i.type, i.shape) for i in s.get_inputs()},
            {o.name: (o.type, o.shape) for o in s.get_outputs()},
        )

    ids = ("tensor(int64)", ["batch", "seq"])
    assert signature(exports["unpooled"]) == (
        {"input_ids": ids, "attention_mask": ids, "token_type_ids": ids},
        {"last_hidden_state": ("tensor(float)", ["batch", "seq", 384])},
    )
    for name in ("pooled", "normalised"):
        assert signature(exports[name]) == (
            {"input_ids": ids, "attention_mask": ids},
            {"sentence_embedding": ("tensor(float)", ["batch", 384])},
        )


def test_token_type_ids_feed_the_token_type_embeddings(
    exports: dict[str, Path], weights: dict[str, np.ndarray], cfg: minilm.BertConfig
) -> None:
    tok = TextEmbeddingKind(settings_for(str(exports["unpooled"]), "last_hidden_state")).tokenizer
    [seq] = tok.tokenize(["the second segment of a pair"])
    types = (np.arange(len(seq)) >= 3).astype(np.int64)  # a sentence pair: types 0 then 1
    feeds = {"input_ids": seq[None], "attention_mask": np.ones((1, len(seq)), np.int64)}
    session = minilm.onnx_session(exports["unpooled"])
    [typed] = session.run(None, {**feeds, "token_type_ids": types[None]})
    [zeros] = session.run(None, {**feeds, "token_type_ids": np.zeros_like(types)[None]})
    np.testing.assert_allclose(
        typed[0], minilm.reference_hidden(weights, cfg, seq, types), atol=1e-4
    )
    np.testing.assert_allclose(zeros[0], minilm.reference_hidden(weights, cfg, seq), atol=1e-4)
    assert np.abs(typed - zeros).max() > 0.1


@pytest.mark.parametrize(
    "variant, output, pooling, l2",
    [
        ("unpooled", "last_hidden_state", "mean", True),
        ("pooled", "sentence_embedding", "none", True),
        ("normalised", "sentence_embedding", "none", False),
    ],
)
def test_each_export_gives_the_reference_embedding(
    exports: dict[str, Path],
    hidden: list[np.ndarray],
    variant: str,
    output: str,
    pooling: str,
    l2: bool,
) -> None:
    settings = settings_for(str(exports[variant]), output, pooling, l2)
    assert file_problems(settings) == []
    model = load_model(settings)
    assert isinstance(model.kind, TextEmbeddingKind)
    assert model.kind.token_types == (variant == "unpooled")
    assert_close(embed(model), [unit(h.mean(axis=0)) for h in hidden])


def test_the_pooled_export_without_l2_normalize_gives_the_unscaled_mean(
    exports: dict[str, Path], hidden: list[np.ndarray]
) -> None:
    got = embed(load_model(settings_for(str(exports["pooled"]), "sentence_embedding")))
    want = [h.mean(axis=0) for h in hidden]
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=0.01)
    scale = np.linalg.norm(want, axis=1)[:, None]  # compare as unit vectors, tolerances alike
    assert_close(got / scale, [w / s for w, s in zip(want, scale, strict=True)])


def per_row(pooling: str) -> Callable[[np.ndarray], np.ndarray]:
    """cls or max of one sentence's token vectors [tokens, dim], no padding in sight."""
    return {"cls": lambda h: h[0], "max": lambda h: h.max(axis=0)}[pooling]


@pytest.mark.parametrize("pooling", ["cls", "max"])
@pytest.mark.parametrize("l2", [False, True])
def test_cls_and_max_pooling_of_the_token_vectors(
    exports: dict[str, Path], hidden: list[np.ndarray], pooling: str, l2: bool
) -> None:
    model = load_model(settings_for(str(exports["unpooled"]), "last_hidden_state", pooling, l2))
    got = embed(model)
    # the graph's own token vectors, each row cut to its tokens and pooled alone
    assert isinstance(model.kind, TextEmbeddingKind)
    ids, mask = model.kind.tokenizer.encode(SENTENCES)
    [tokens] = model.session.run(
        None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    )
    rows = [per_row(pooling)(t[: int(m.sum())]) for t, m in zip(tokens, mask, strict=True)]
    want = np.stack([unit(r) if l2 else r for r in rows]).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # and the float64 reference, pooled the same way
    ref = [per_row(pooling)(h) for h in hidden]
    scale = [1.0 if l2 else float(np.linalg.norm(r)) for r in ref]
    assert_close(got / np.array(scale, np.float32)[:, None], [unit(r) for r in ref])


def test_validate_names_an_export_the_pooling_does_not_fit(exports: dict[str, Path]) -> None:
    unpooled, pooled = str(exports["unpooled"]), str(exports["pooled"])
    assert file_problems(settings_for(unpooled, "last_hidden_state")) == [
        f"model.pooling: 'last_hidden_state' of {unpooled} returns [batch, tokens, dim] "
        "(last_hidden_state) ['batch', 'seq', 384]; set model.pooling = mean | cls | max"
    ]
    assert file_problems(settings_for(pooled, "sentence_embedding", "mean")) == [
        f"model.pooling: 'sentence_embedding' of {pooled} returns [batch, dim] ['batch', 384], "
        "already pooled; set model.pooling = none, not mean"
    ]
    with pytest.raises(ModelError, match=r"returns \[batch, dim\] \[\d+, 384\], already pooled"):
        # the same mismatch when a worker starts: the labels' examples are embedded at once
        load_model(settings_for(pooled, "sentence_embedding", "max"))


def tiny_graph(
    path: Path, inputs: dict[str, int], out_type: int, out_rank: int = 2, out_name: str = "e"
) -> str:
    """A model with those inputs (name -> onnx elem type, [batch, seq]) whose output ``out_name``
    is input_ids cast to ``out_type``, of rank ``out_rank`` (2 or 3)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["input_ids"], ["cast"], to=out_type)]
    if out_rank == 3:
        axes = helper.make_tensor("axes", TensorProto.INT64, [1], [2])
        nodes.append(helper.make_node("Constant", [], ["axes"], value=axes))
        nodes.append(helper.make_node("Unsqueeze", ["cast", "axes"], [out_name]))
    else:
        nodes.append(helper.make_node("Identity", ["cast"], [out_name]))
    shape: list[str | int] = ["batch", "seq", 1][:out_rank]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(n, t, ["batch", "seq"]) for n, t in inputs.items()],
        [helper.make_tensor_value_info(out_name, out_type, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_validate_names_inputs_and_types_the_kind_cannot_feed(tmp_path: Path) -> None:
    from onnx import TensorProto

    i64, i32, f32 = TensorProto.INT64, TensorProto.INT32, TensorProto.FLOAT
    extra = tiny_graph(
        tmp_path / "extra.onnx", {"input_ids": i64, "attention_mask": i64, "position_ids": i64}, f32
    )
    assert file_problems(settings_for(extra, "e")) == [
        "model.kind: a text-embedding model is fed input_ids, attention_mask and, when the graph "
        f"has it, token_type_ids; {extra} also takes 'position_ids' (tensor(int64) "
        "['batch', 'seq'])"
    ]
    with pytest.raises(ModelError, match="also takes 'position_ids'"):
        load_model(settings_for(extra, "e"))

    types = tiny_graph(
        tmp_path / "types.onnx",
        {"input_ids": i64, "attention_mask": i64, "token_type_ids": i32},
        TensorProto.DOUBLE,
        out_rank=3,
    )
    assert file_problems(settings_for(types, "e", "mean")) == [
        f"model.kind: input 'token_type_ids' of {types} is tensor(int32) ['batch', 'seq']; "
        "the pipeline feeds tensor(int64) [batch, tokens]",
        f"model.outputs: 'e' of {types} is tensor(double) ['batch', 'seq', 1]; expected token "
        "vectors, tensor(float) [batch, tokens, dim]",
    ]
    assert file_problems(settings_for(types, "e")) == [
        f"model.kind: input 'token_type_ids' of {types} is tensor(int32) ['batch', 'seq']; "
        "the pipeline feeds tensor(int64) [batch, tokens]",
        f"model.outputs: 'e' of {types} is tensor(double) ['batch', 'seq', 1]; expected an "
        "embedding, tensor(float) [batch, dim]",
    ]


# --- pool, on its own ------------------------------------------------------------------------

H = np.array(
    [
        [[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]],  # two tokens, then padding
        [[0.0, 1.0], [2.0, 3.0], [-4.0, 5.0]],  # three tokens
    ],
    dtype=np.float32,
)
MASK = np.array([[1, 1, 0], [1, 1, 1]])


def test_pool_mean_cls_and_max_ignore_the_padding() -> None:
    np.testing.assert_allclose(pool(H, MASK, "mean", False), [[2.0, -1.0], [-2 / 3, 3.0]])
    np.testing.assert_array_equal(pool(H, MASK, "cls", False), [[1.0, 2.0], [0.0, 1.0]])
    np.testing.assert_array_equal(pool(H, MASK, "max", False), [[3.0, 2.0], [2.0, 5.0]])
    assert all(pool(H, MASK, p, False).dtype == np.float32 for p in ("mean", "cls", "max"))


def test_pool_l2_gives_unit_length_and_leaves_a_zero_vector_zero() -> None:
    e = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(pool(e, MASK[:, :2], "none", True), [[0.6, 0.8], [0.0, 0.0]])
    np.testing.assert_array_equal(pool(e, MASK[:, :2], "none", False), e)
    np.testing.assert_allclose(np.linalg.norm(pool(H, MASK, "mean", True), axis=1), 1.0, rtol=1e-6)


def test_pool_a_row_without_tokens_pools_to_zeros() -> None:
    mask = np.array([[0, 0, 0], [1, 0, 0]])
    for p in ("mean", "max"):
        np.testing.assert_array_equal(pool(H, mask, p, True), [[0.0, 0.0], unit(H[1, 0])], p)
    assert pool(np.zeros((2, 0, 4), np.float32), mask[:, :0], "max", False).shape == (2, 4)

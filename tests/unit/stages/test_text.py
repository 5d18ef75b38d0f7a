"""Text stages: which texts are usable, length buckets of token ids, the centroid head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamflow.inference.kinds.text import CentroidHead, model_inputs
from streamflow.stages.text import clean_texts, tokenize_buckets

TOKENIZER = Path(__file__).resolve().parents[3] / "models" / "minilm" / "tokenizer.json"


def test_unusable_texts_are_rejected_with_precise_reasons() -> None:
    texts = ["fan failure", None, 42, "   \n", "", "x" * 21, "bad \ud800 surrogate", " ok "]
    ok, reasons, codes = clean_texts(texts, "text", max_length=20)
    assert ok.tolist() == [True, False, False, False, False, False, False, True]
    assert codes == [
        None,
        "missing_required",
        "wrong_type",
        "empty",
        "empty",
        "too_large",
        "invalid_utf8",
        None,
    ]
    assert reasons[1] == "missing required field text"


def test_centroid_head_picks_the_nearest_label_and_its_cosine() -> None:
    head = CentroidHead.fit(
        ["a", "b"], [np.array([[1.0, 0.0], [0.8, 0.2]]), np.array([[0.0, 1.0]])]
    )
    labels, scores = head.label(np.array([[2.0, 0.1], [0.1, 3.0], [0.0, 0.0]], dtype=np.float32))
    assert labels[:2] == ["a", "b"]
    np.testing.assert_allclose(np.linalg.norm(head.centroids, axis=1), 1.0, rtol=1e-6)
    assert 0.99 < scores[0] <= 1.0 and 0.99 < scores[1] <= 1.0
    assert scores[2] == 0.0  # a zero vector is no nearer to anything


def test_model_inputs_mask_is_ids_not_pad() -> None:
    ids, mask = model_inputs(
        np.array([[101, 7, 102, 0], [101, 102, 0, 0]], dtype=np.float32), pad_id=0
    )
    assert ids.dtype == mask.dtype == np.int64
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]


@pytest.mark.skipif(not TOKENIZER.is_file(), reason="run `streamflow model export minilm` first")
def test_buckets_pad_less_than_one_padded_batch_and_keep_every_row() -> None:
    pytest.importorskip("tokenizers")
    from streamflow.stages.tokenizer import TextTokenizer

    tok = TextTokenizer(TOKENIZER, max_length=256)
    rng = np.random.default_rng(3)
    words = ["disk", "full", "fan", "failure", "on", "node", "7", "latency", "went", "up", "again"]
    texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 80, size=300)]
    tb = tokenize_buckets(texts, tok, max_rows=32, max_tokens=1024)
    assert sorted(np.concatenate(tb.rows).tolist()) == list(range(len(texts)))
    assert 1 - tb.tokens / tb.fed < 0.1 < 0.3 < 1 - tb.tokens / tb.fed_unbucketed
    for rows, ids in zip(tb.rows, tb.ids, strict=True):
        assert (
            ids.dtype == np.float32
            and ids.shape[0] == len(rows) <= 32
            and (ids.size <= 1024 or len(rows) == 1)
        )
        want, _ = tok.encode([texts[i] for i in rows.tolist()])
        np.testing.assert_array_equal(
            ids.astype(np.int64), want
        )  # exact ids, padded to the bucket's longest

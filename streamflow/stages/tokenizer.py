"""Text to model inputs: WordPiece token ids padded per batch, and length bucketing.

``TextTokenizer`` wraps Hugging Face's Rust tokenizer (``tokenizers``, the ``text`` extra)
loaded from a ``tokenizer.json``; it truncates to ``max_length`` tokens and pads each batch
to its own longest text, so short texts cost short rows. ``bucket_by_length`` groups a batch
by token count before padding, because one long text padded with twenty short ones makes
most of the batch padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamflow.errors import ConfigError, ModelError


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise ConfigError(
            "the text pipeline needs Hugging Face's tokenizer: "
            "pip install 'streamflow-inference[text]'"
        ) from None
    return tokenizers


def pad(sequences: Sequence[np.ndarray], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), int64 [n, longest], right-padded with ``pad_id``."""
    width = max((len(s) for s in sequences), default=0)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


class TextTokenizer:
    """A ``tokenizer.json`` that turns texts into padded int64 (input_ids, attention_mask)."""

    def __init__(self, path: str | Path, max_length: int = 256) -> None:
        if max_length < 2:
            raise ConfigError(
                f"max_length: {max_length} leaves no room for a token between [CLS] and [SEP]"
            )
        try:
            tok = _tokenizers().Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exception for a missing or bad file
            raise ModelError(f"cannot load tokenizer {path}: {exc}") from exc
        # The file may carry its own padding/truncation (all-MiniLM-L6-v2's: fixed 128); ours wins.
        tok.no_padding()
        tok.enable_truncation(max_length)
        self._tok = tok
        self.path, self.max_length = Path(path), max_length
        self.pad_id = int(tok.token_to_id("[PAD]") or 0)

    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids per text, with the special tokens, truncated, unpadded."""
        return [np.asarray(e.ids, dtype=np.int64) for e in self._tok.encode_batch(list(texts))]

    def lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens per text after truncation (what ``bucket_by_length`` takes)."""
        return np.array([len(s) for s in self.tokenize(texts)], dtype=np.int64)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), int64 [len(texts), longest in this batch]."""
        return pad(self.tokenize(texts), self.pad_id)


def padding_waste(lengths: np.ndarray, groups: Sequence[np.ndarray] | None = None) -> float:
    """Pad tokens / all tokens fed to the model when each group is padded to its longest.

    Without ``groups`` the whole batch is one group.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    parts = [np.arange(len(lengths))] if groups is None else list(groups)
    fed = sum(int(lengths[g].max()) * len(g) for g in parts if len(g))
    return 0.0 if fed == 0 else 1.0 - int(lengths.sum()) / fed


@dataclass(frozen=True)
class Buckets:
    """Row indices of the original batch, one array per model call, shortest texts first."""

    groups: list[np.ndarray]
    waste: float  # pad tokens / tokens fed, bucketed
    unbucketed_waste: float  # the same with the whole batch padded to its longest


def bucket_by_length(
    lengths: np.ndarray, max_rows: int = 64, max_tokens: int | None = None
) -> Buckets:
    """Group rows of similar token length so each group pads little.

    Sorts by length and cuts consecutive runs of at most ``max_rows`` rows and, when given,
    at most ``max_tokens`` padded tokens (rows x longest; a text longer than that goes alone).
    So a 2-token text shares a padded batch with a 256-token one only when ``max_rows``
    forces it.
    """
    if max_rows < 1:
        raise ConfigError(f"max_rows: {max_rows} must be at least 1")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    groups: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        rows = end - start
        longest = int(lengths[order[end - 1]])
        last = end == len(order)
        next_len = 0 if last else int(lengths[order[end]])
        full = rows == max_rows or (
            max_tokens is not None and (rows + 1) * max(longest, next_len) > max_tokens
        )
        if last or full:
            groups.append(order[start:end])
            start = end
    return Buckets(groups, padding_waste(lengths, groups), padding_waste(lengths))

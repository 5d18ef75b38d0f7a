"""Text stages: check decoded texts, turn them into padded token-id buckets.

The tokenizer itself is ``streamflow.stages.tokenizer.TextTokenizer``; these functions only take and
return numpy columns (and lists of strings), like the tabular stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamflow.records import ReasonCode
from streamflow.stages.tokenizer import Buckets, TextTokenizer, bucket_by_length, pad


def clean_texts(
    texts: Sequence[object], field: str, max_length: int
) -> tuple[np.ndarray, list[str | None], list[ReasonCode | None]]:
    """(mask of usable texts, reason per rejected row, its code).

    A usable text is present, a string, encodable as UTF-8 (no lone surrogates), not only
    whitespace, and at most ``max_length`` characters."""
    ok = np.ones(len(texts), dtype=bool)
    reasons: list[str | None] = [None] * len(texts)
    codes: list[ReasonCode | None] = [None] * len(texts)
    for i, t in enumerate(texts):
        if t is None:
            why, code = f"missing required field {field}", ReasonCode.MISSING_REQUIRED
        elif not isinstance(t, str):
            why, code = f"{field}: expected a string, got {type(t).__name__}", ReasonCode.WRONG_TYPE
        elif len(t) > max_length:
            why = f"{field}: string of {len(t)} characters exceeds max_string_length {max_length}"
            code = ReasonCode.TOO_LARGE
        elif not t.strip():
            why = f"{field}: empty text (only whitespace)" if t else f"{field}: empty text"
            code = ReasonCode.EMPTY
        else:
            try:
                t.encode()
                continue
            except UnicodeEncodeError as exc:
                why = f"{field}: not valid unicode (lone surrogate at character {exc.start})"
                code = ReasonCode.INVALID_UTF8
        ok[i] = False
        reasons[i], codes[i] = why, code
    return ok, reasons, codes


@dataclass(frozen=True)
class TokenBuckets:
    """Token ids of a batch of texts, grouped by length: one padded matrix per group."""

    rows: list[np.ndarray]  # row indices into the batch, per group
    ids: list[np.ndarray]  # float32 [len(rows[g]), longest in g], padded with pad_id
    pad_id: int
    tokens: int  # real tokens in the batch
    fed: int  # tokens with padding, bucketed
    fed_unbucketed: int  # tokens with padding if the whole batch were one group


def tokenize_buckets(
    texts: Sequence[str], tok: TextTokenizer, max_rows: int, max_tokens: int | None = None
) -> TokenBuckets:
    """Tokenize, bucket by token length (``bucket_by_length``: at most ``max_rows`` texts and
    ``max_tokens`` padded tokens per bucket), pad each bucket to its longest.

    Ids travel as float32 (the internal batch's feature matrix): exact for ids below 2^24."""
    seqs = tok.tokenize(texts)
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    b: Buckets = bucket_by_length(lengths, max_rows=max_rows, max_tokens=max_tokens)
    ids = [pad([seqs[i] for i in g.tolist()], tok.pad_id)[0].astype(np.float32) for g in b.groups]
    fed = sum(m.size for m in ids)
    return TokenBuckets(
        b.groups,
        ids,
        tok.pad_id,
        int(lengths.sum()),
        fed,
        int(lengths.max(initial=0)) * len(lengths),
    )

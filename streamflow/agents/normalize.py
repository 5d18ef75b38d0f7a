"""The normalize agent: cleaned batches -> model-ready batches.

Tabular: the features scaled. Text: the texts tokenized and grouped by token length, one
batch per length bucket, its features the token ids padded to the bucket's longest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from streamflow.agents.common import PaddingTally, StageContext, dead_letter
from streamflow.agents.transport import Chunk
from streamflow.clients import OutMessage
from streamflow.codecs import decode_record_batch
from streamflow.errors import DecodeError
from streamflow.records import RecordBatch, Rejected, rejected_from_batch
from streamflow.stages.normalize import Normalizer, normalize
from streamflow.stages.text import tokenize_buckets


def decode_batches(chunks: Sequence[Chunk], stage: str, dlq_topic: str) -> tuple[list[RecordBatch], list[OutMessage]]:
    """Decode internal batch messages; a corrupt one is dead-lettered whole (it names no record)."""
    batches, bad = [], []
    for m in (r for c in chunks for r in c.records):
        try:
            batches.append(decode_record_batch(m.value))
        except DecodeError as exc:
            bad.append(dead_letter(Rejected(stage, "DecodeError", f"internal batch undecodable: {exc.reason}",
                                            m.topic, m.partition, m.offset, m.key, m.value), dlq_topic))
    return batches, bad


def batch_weight(record: Any) -> int:
    """Records in an internal batch message, read from its header without decoding it."""
    from streamflow.codecs import record_batch_length

    try:
        return max(1, record_batch_length(record.value))
    except DecodeError:
        return 1


class NormalizeHandler:
    stage = "normalize"

    def __init__(self, ctx: StageContext) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.source_topic = s.cleaned_topic
        self.max_weight = s.batching.max_batch
        self.within = 0.0  # what is fetched is the batch: waiting here only adds latency
        self.norm = Normalizer.from_features(s.features)
        self.weight = batch_weight
        self.tokenizer = None
        if s.is_text:
            from streamflow.text import TextTokenizer

            self.tokenizer = TextTokenizer(s.model.tokenizer, s.model.max_tokens)
            self.bucket_rows, self.bucket_tokens = s.model.bucket_rows, s.model.bucket_tokens
            self.padding = PaddingTally()

    def process(self, batch: RecordBatch) -> tuple[list[RecordBatch], list[Rejected]]:
        """(model-ready batches: one, or one per length bucket for text; rows rejected)."""
        if self.tokenizer is not None:
            return self.tokenize(batch), []
        res = normalize(batch.features, self.norm)
        out = replace(batch, features=res.values, stage="normalize")
        if res.ok.all():
            return [out], []
        bad_rows = np.flatnonzero(~res.ok)
        rejected = rejected_from_batch(batch, bad_rows, [res.reasons[r] or "" for r in bad_rows.tolist()],
                                       stage=self.stage, error_class="ValidationError")
        return [out.select(res.ok)], rejected

    def tokenize(self, batch: RecordBatch) -> list[RecordBatch]:
        """One batch per length bucket, shortest first; the texts stay behind (the model needs ids)."""
        if not len(batch):
            return []
        assert self.tokenizer is not None and batch.texts is not None, "a text pipeline's cleaned batch has texts"
        texts = [t.decode() if t is not None else "" for t in batch.texts.to_list()]
        tb = tokenize_buckets(texts, self.tokenizer, self.bucket_rows, self.bucket_tokens)
        self.padding.add(self.ctx, tb.tokens, tb.fed, tb.fed_unbucketed)
        extra = {**batch.extra, "pad_id": str(tb.pad_id)}
        return [replace(batch.select(rows), features=ids, texts=None, stage="normalize", extra=extra)
                for rows, ids in zip(tb.rows, tb.ids, strict=True)]

    async def handle(self, chunks: Sequence[Chunk]) -> asyncio.Future[None]:
        started = time.perf_counter()
        s = self.ctx.settings
        batches, out = decode_batches(chunks, self.stage, s.topics.dlq)
        rejected: list[Rejected] = []
        n = 0
        for batch in batches:
            good, bad = self.process(batch)
            rejected += bad
            n += len(batch)
            for b in good:
                if len(b):
                    out += self.ctx.batch_messages(s.normalized_topic, b)
        out += [dead_letter(r, s.topics.dlq) for r in rejected]
        self.ctx.account(n - len(rejected), rejected, started, n)
        return self.ctx.send(out)

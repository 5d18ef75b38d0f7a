"""The normalize agent: cleaned batches -> model-ready batches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from streamflow.agents.common import StageContext, dead_letter
from streamflow.agents.transport import Chunk
from streamflow.clients import OutMessage
from streamflow.codecs import decode_record_batch
from streamflow.errors import DecodeError
from streamflow.records import RecordBatch, Rejected, rejected_from_batch
from streamflow.stages.normalize import Normalizer, normalize


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

    def process(self, batch: RecordBatch) -> tuple[RecordBatch, list[Rejected]]:
        res = normalize(batch.features, self.norm)
        out = replace(batch, features=res.values, stage="normalize")
        if res.ok.all():
            return out, []
        bad_rows = np.flatnonzero(~res.ok)
        rejected = rejected_from_batch(batch, bad_rows, [res.reasons[r] or "" for r in bad_rows.tolist()],
                                       stage=self.stage, error_class="ValidationError")
        return out.select(res.ok), rejected

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
            if len(good):
                out += self.ctx.batch_messages(s.normalized_topic, good)
        out += [dead_letter(r, s.topics.dlq) for r in rejected]
        self.ctx.account(n - len(rejected), rejected, started, n)
        return self.ctx.send(out)

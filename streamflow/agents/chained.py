"""The chained topology: clean, normalize and inference in one agent, on each batch of raw records.

The same handlers as the staged topology, called in turn in memory instead of through the
internal topics: one consume and one produce per record instead of three of each. Each
step still accounts under its own stage name, so metrics and dashboards read the same.
Scaling is by partitions of the raw topic (more chained workers in the group).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from streamflow.agents.clean import CleanHandler
from streamflow.agents.common import StageContext, dead_letter
from streamflow.agents.inference import InferenceHandler
from streamflow.agents.normalize import NormalizeHandler
from streamflow.agents.transport import Chunk
from streamflow.inference import LoadedModel
from streamflow.records import RecordBatch


class ChainedHandler:
    stage = "chained"

    def __init__(self, ctx: StageContext, model: LoadedModel) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.clean = CleanHandler(replace(ctx, stage="clean"))
        self.normalize = NormalizeHandler(replace(ctx, stage="normalize"))
        self.inference = InferenceHandler(replace(ctx, stage="inference"), model)
        self.source_topic = s.topics.raw
        self.max_weight = s.batching.clean_max_batch
        self.preferred = self.inference.preferred

    @property
    def within(self) -> float:
        return self.inference.within  # adapted to the SLO by what the inference step delivers

    @staticmethod
    def weight(record: Any) -> int:
        return CleanHandler.weight(record)  # raw records: large ones weigh more

    async def handle(self, chunks: Sequence[Chunk]) -> asyncio.Future[None]:
        dlq = self.ctx.settings.topics.dlq
        out = []
        batches: list[RecordBatch] = []
        started = time.perf_counter()
        for c in chunks:
            cleaned, bad = self.clean.process(c.topic, c.partition, c.records)
            out += [dead_letter(r, dlq) for r in bad]
            self.clean.ctx.account(len(cleaned), bad, started, len(c.records))
            if not len(cleaned):
                continue
            started = time.perf_counter()
            good, bad = self.normalize.process(cleaned)
            out += [dead_letter(r, dlq) for r in bad]
            self.normalize.ctx.account(len(cleaned) - len(bad), bad, started, len(cleaned))
            batches += [b for b in good if len(b)]
            started = time.perf_counter()
        n = sum(len(b) for b in batches)
        results, bad, delivered = await self.inference.score(batches)
        out += results + [dead_letter(r, dlq) for r in bad]
        self.inference.ctx.account(n - len(bad), bad, started, n)
        return self.inference.send(out, delivered)

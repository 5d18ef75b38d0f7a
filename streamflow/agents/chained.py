"""The chained topology: every step of ``STEPS``, in turn, in one agent on each batch of raw
records.

The same handlers as the staged topology, called in memory instead of through the internal
topics: one consume and one produce per record instead of one per step. Each step still
accounts under its own stage name, so metrics and dashboards read the same. Scaling is by
partitions of the raw topic (more chained workers in the group).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

from streamflow.agents.context import StageContext
from streamflow.agents.handler import StepHandler, StepOutput
from streamflow.kafka.transport import Chunk
from streamflow.records import OutMessage
from streamflow.steps import STEPS, handler_class, source_topic


class ChainedHandler:
    stage: ClassVar[str] = "chained"

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.steps: list[StepHandler] = [
            handler_class(step)(replace(ctx, stage=step.name)) for step in STEPS
        ]
        first, last = self.steps[0], self.steps[-1]
        self.source_topic = source_topic(ctx.settings, STEPS[0])
        self.max_weight = first.max_weight
        self.preferred = last.preferred

    @property
    def within(self) -> float:
        return self.steps[
            -1
        ].within  # the model step's wait, adapted to the SLO by what it delivers

    def weight(self, record: Any) -> int:
        return self.steps[0].weight(record)  # raw records: large ones weigh more

    async def handle(self, chunks: Sequence[Chunk]) -> asyncio.Future[None]:
        dead: list[OutMessage] = []
        inputs: Sequence[Any] = chunks
        out = StepOutput()
        for step in self.steps:
            out = await step.run(inputs, dead)
            inputs = out.batches
        return self.steps[-1].send(out.results + dead, out)

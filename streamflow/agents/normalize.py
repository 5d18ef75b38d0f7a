"""The normalize agent: cleaned batches -> model-ready batches, as the model kind prepares them.

Tabular: the features scaled. Text: the texts tokenized and grouped by token length, one
batch per length bucket, its features the token ids padded to the bucket's longest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamflow.agents.context import StageContext, batch_weight
from streamflow.agents.handler import StepHandler, StepOutput
from streamflow.errors import ValidationError
from streamflow.inference.kinds import kind_for
from streamflow.records import RecordBatch, Rejected, rejected_from_batch


class NormalizeHandler(StepHandler):
    stage = "normalize"

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.kind = kind_for(ctx.settings)

    def weight(self, record: Any) -> int:
        return batch_weight(record)

    def process(self, batch: RecordBatch) -> tuple[list[RecordBatch], list[Rejected]]:
        """(model-ready batches: one, or one per length bucket for text; rows rejected)."""
        p = self.kind.prepare(batch, self.ctx)
        if not len(p.bad_rows):
            return p.batches, []
        return p.batches, rejected_from_batch(
            batch, p.bad_rows, p.reasons, stage=self.stage, error_class=ValidationError.__name__
        )

    async def transform(self, inputs: Sequence[RecordBatch]) -> StepOutput:
        out = StepOutput()
        for batch in inputs:
            good, bad = self.process(batch)
            out.rejected += bad
            out.batches += [b for b in good if len(b)]
        return out

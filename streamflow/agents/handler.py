"""One handler protocol for every step, and one template for its skeleton.

The faust shell (``agents/worker.py``) knows nothing of what a step does: it takes chunks of
fetched records from the transport's buffer and hands them to ``handle``, which returns a
future that resolves once everything the step produced for them is acknowledged by the
broker; only then are the chunks acked (and later committed). ``StepHandler.handle`` is the
skeleton every step shares: decode -> transform -> dead-letter -> account -> send. A step only
says what its input is (raw messages or internal batches) and writes ``transform``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from streamflow.agents.context import StageContext, decode_batches
from streamflow.errors import TransformError, ValidationError
from streamflow.headers import dead_letter
from streamflow.kafka.transport import Chunk
from streamflow.records import OutMessage, ReasonCode, RecordBatch, Rejected, rejected_from_batch
from streamflow.settings import Settings
from streamflow.stages.transforms import (
    BatchTransformed,
    Transform,
    feature_layout,
    transform_batch,
)
from streamflow.steps import Step, sink_topic, source_topic, step_named


class Handler(Protocol):
    """What the faust shell needs from a step (a ``StepHandler`` or the chained composition)."""

    stage: ClassVar[str]
    source_topic: str
    max_weight: int  # records (or weight units) taken at once
    preferred: tuple[int, ...]  # batch sizes cut at once when that many records wait

    @property
    def within(self) -> float:
        """Longest to wait for a fuller batch, in seconds."""
        ...

    def weight(self, record: Any) -> int:
        """How much one fetched record counts against ``max_weight`` and the fetch buffer."""
        ...

    async def handle(self, chunks: Sequence[Chunk]) -> asyncio.Future[None]:
        """Process ``chunks``; the future resolves once their output is acknowledged."""
        ...


@dataclass
class StepOutput:
    """What a step made of its input."""

    batches: list[RecordBatch] = field(default_factory=list)  # on to the next step
    rejected: list[Rejected] = field(default_factory=list)  # to the dead-letter topic
    results: list[OutMessage] = field(
        default_factory=list
    )  # the last step's results, for the sink topic
    scored: list[RecordBatch] = field(default_factory=list)  # the rows those results are for


def load_transforms(settings: Settings, point: str) -> list[Transform]:
    """The ``[[transforms]]`` that run at ``point``, imported (a module beside the pipeline file
    is found too); a problem was already reported, naming the key, when the settings loaded."""
    folder = str(Path(settings.source).resolve().parent)
    return [
        Transform.load(t.function, t.at, t.name, f"transforms[{i}].function", folder)
        for i, t in enumerate(settings.transforms)
        if t.at == point
    ]


def transformed_away(batch: RecordBatch, t: BatchTransformed, stage: str) -> list[Rejected]:
    """Dead-letter entries for the rows the transforms refused (ValidationError) or failed on."""
    out: list[Rejected] = []
    for row, reason in zip(t.bad_rows, t.reasons, strict=True):
        failed = reason.code is ReasonCode.TRANSFORM_ERROR
        cls = TransformError if failed else ValidationError
        out += rejected_from_batch(
            batch, np.array([row]), [reason], stage=stage, error_class=cls.__name__
        )
    return out


def count(inputs: Sequence[Any]) -> int:
    """Records in a step's input: raw chunks or record batches."""
    return sum(len(c.records) if isinstance(c, Chunk) else len(c) for c in inputs)


class StepHandler:
    """A step's skeleton: decode -> ``transform`` -> dead-letter -> account -> send.

    The first step (``raw_input``) processes the raw messages of the chunks themselves; the
    others get the internal batches decoded from them (a corrupt one dead-lettered whole).
    """

    stage: ClassVar[str]
    raw_input: ClassVar[bool] = False
    preferred: tuple[int, ...] = ()

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.step: Step = step_named(self.stage)
        self.source_topic = source_topic(ctx.settings, self.step)
        self.sink_topic = sink_topic(ctx.settings, self.step)
        self.max_weight = ctx.settings.batching.max_batch
        self.transforms = load_transforms(ctx.settings, self.step.transforms)
        self.layout = feature_layout(ctx.settings.features, self.step.transforms)

    @property
    def within(self) -> float:
        return 0.0  # what is fetched is the batch: waiting only adds latency

    def weight(self, record: Any) -> int:
        return 1

    async def transform(self, inputs: Sequence[Any]) -> StepOutput:
        """The step's own work on raw chunks (``raw_input``) or on record batches."""
        raise NotImplementedError

    def user_transforms(self, out: StepOutput) -> StepOutput:
        """The ``[[transforms]]`` of this step's point over the batches it passes on; a row they
        refuse or fail on is dead-lettered here, under this stage (their cost is this stage's)."""
        batches: list[RecordBatch] = []
        for b in out.batches:
            t = transform_batch(self.transforms, b, self.layout)
            out.rejected += transformed_away(b, t, self.stage)
            if len(t.batch):
                batches.append(t.batch)
        out.batches = batches
        return out

    def forward(self, out: StepOutput) -> list[OutMessage]:
        """What goes on: the batches as internal-topic messages, or the results."""
        return [
            m for b in out.batches if len(b) for m in self.ctx.batch_messages(self.sink_topic, b)
        ] + out.results

    def send(self, messages: list[OutMessage], out: StepOutput) -> asyncio.Future[None]:
        return self.ctx.send(messages)

    async def run(self, inputs: Sequence[Any], dead: list[OutMessage]) -> StepOutput:
        """``transform``, its rejections dead-lettered into ``dead`` and accounted under this
        stage."""
        started = time.perf_counter()
        n = count(inputs)
        out = await self.transform(inputs)
        if self.transforms and out.batches:
            out = self.user_transforms(out)
        dead += [dead_letter(r, self.ctx.settings.topics.dlq) for r in out.rejected]
        self.ctx.account(n - len(out.rejected), out.rejected, started, n)
        return out

    async def handle(self, chunks: Sequence[Chunk]) -> asyncio.Future[None]:
        dead: list[OutMessage] = []
        inputs: Sequence[Any] = chunks
        if not self.raw_input:
            inputs, dead = decode_batches(chunks, self.stage, self.ctx.settings.topics.dlq)
        out = await self.run(inputs, dead)
        return self.send(self.forward(out) + dead, out)

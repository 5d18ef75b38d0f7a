"""The pipeline's steps, in order: the one list both topologies are built from.

``stages`` runs each step as an agent of its own (its own process, consumer group and
``worker --stage`` name), joined by one internal topic per step output; ``chained`` runs
the same steps in turn, in memory, in one agent reading the raw topic. Everything that names
a step (topics, consumer groups, ``worker --stage all``, the deploy files' services, checked
by tests/unit/test_deploy.py) is derived from ``STEPS``, so adding a step is one handler
module plus one line here (docs/architecture.md, "Add a step").

A step's handler is registered by its import path (``module:Class``), imported only by the
worker that runs it: the supervisor and the commands know the steps without loading faust,
ONNX Runtime or the model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from streamflow.errors import ConfigError
from streamflow.kafka.admin import TopicSpec
from streamflow.kafka.config import topic_configs
from streamflow.settings import Settings


@dataclass(frozen=True)
class Step:
    """One step of the pipeline."""

    name: str  # its stage label in metrics, its consumer group and ``worker --stage`` name
    handler: str  # "module:Class" of its agent handler (agents/handler.py)
    output: str = (
        ""  # suffix of the internal topic it writes; "" for the last step (the sink topic)
    )
    model: bool = False  # runs the model: its queue is batching.max_queue_records, it reports GPUs
    transforms: str = ""  # the [[transforms]] point it runs ("after_clean", ...), on what it makes


STEPS: tuple[Step, ...] = (
    Step(
        "clean", "streamflow.agents.clean:CleanHandler", output="cleaned", transforms="after_clean"
    ),
    Step(
        "normalize",
        "streamflow.agents.normalize:NormalizeHandler",
        output="normalized",
        transforms="after_normalize",
    ),
    Step(
        "inference",
        "streamflow.agents.inference:InferenceHandler",
        model=True,
        transforms="after_model",
    ),
)
# The chained topology: every step above in one agent.
CHAINED = Step("chained", "streamflow.agents.chained:ChainedHandler", model=True)
STAGES = tuple(s.name for s in STEPS)
# Sinks: steps beside the list, in both topologies, each with its own consumer group on the sink
# and dead-letter topics; run where the pipeline enables them (the store: store.path is set).
STORE = Step("store", "streamflow.agents.store:StoreHandler")
SINKS: tuple[Step, ...] = (STORE,)


def step_named(name: str) -> Step:
    """The step (or ``chained``) that ``worker --stage NAME`` runs."""
    for step in (*STEPS, CHAINED, *SINKS):
        if step.name == name:
            return step
    names = ", ".join((*STAGES, CHAINED.name, *(s.name for s in SINKS)))
    raise ConfigError(f"--stage: unknown stage {name!r} (one of {names}, all)")


def handler_class(step: Step) -> Any:
    """The step's handler class, imported now."""
    module, _, attr = step.handler.partition(":")
    return getattr(importlib.import_module(module), attr)


def process_stages(settings: Settings) -> tuple[str, ...]:
    """The agents ``worker --stage all`` (and demo, up) runs for this pipeline's topology."""
    steps = (CHAINED.name,) if settings.runtime.topology == "chained" else STAGES
    return steps + ((STORE.name,) if settings.store.path else ())


def internal_topic(settings: Settings, step: Step) -> str:
    return f"{settings.name}.internal.{step.output}"


def source_topic(settings: Settings, step: Step) -> str:
    """What ``step`` consumes: the raw topic for the first step (and chained), else what the
    step before it sends (its internal topic, or the sink topic after the last model step)."""
    i = STEPS.index(step) if step in STEPS else 0
    return settings.topics.raw if i == 0 else sink_topic(settings, STEPS[i - 1])


def sink_topic(settings: Settings, step: Step) -> str:
    """Where ``step`` sends what it passes on: its internal topic, or the sink topic for the
    last."""
    return internal_topic(settings, step) if step.output else settings.topics.scored


def pipeline_topics(settings: Settings) -> list[TopicSpec]:
    """The user-facing and internal topics of a pipeline, with their partition counts and the
    configs they are created with ([topics.<role>_configs]; kafka/config.py:topic_configs)."""
    t = settings.topics

    def spec(name: str, role: str, partitions: int) -> TopicSpec:
        configs = tuple(sorted(topic_configs(settings, role).items()))
        return TopicSpec(name, partitions, t.replication, configs, f"topics.{role}_configs")

    return [
        spec(t.raw, "raw", t.partitions),
        spec(t.scored, "scored", t.partitions),
        spec(t.dlq, "dlq", t.partitions),
        *(
            spec(internal_topic(settings, s), "internal", settings.internal_partitions)
            for s in STEPS
            if s.output
        ),
    ]


def writes_internal_topic(settings: Settings, stage: str) -> bool:
    """Whether ``worker --stage`` ``stage`` sends what it passes on to an internal topic."""
    step = step_named(stage)
    return settings.runtime.topology == "stages" and step in STEPS and bool(step.output)

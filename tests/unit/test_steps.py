"""Steps as data: both topologies, the topics, the groups and ``worker --stage`` come from STEPS."""

from __future__ import annotations

import pytest

from streamflow.errors import ConfigError
from streamflow.settings.loading import load_settings
from streamflow.steps import (
    CHAINED,
    STAGES,
    STEPS,
    handler_class,
    pipeline_topics,
    process_stages,
    sink_topic,
    source_topic,
    step_named,
)
from tests.conftest import PIPELINE

SETTINGS = load_settings(PIPELINE, environ={})


def test_each_step_reads_what_the_one_before_it_writes() -> None:
    s = SETTINGS
    assert source_topic(s, STEPS[0]) == s.topics.raw and sink_topic(s, STEPS[-1]) == s.topics.scored
    for before, after in zip(STEPS, STEPS[1:], strict=False):
        assert source_topic(s, after) == sink_topic(s, before)
    assert [sink_topic(s, step) for step in STEPS[:-1]] == [
        f"{s.name}.internal.cleaned",
        f"{s.name}.internal.normalized",
    ]
    assert source_topic(s, CHAINED) == s.topics.raw


def test_the_topics_created_are_the_user_facing_ones_and_one_per_step_output() -> None:
    s = SETTINGS
    names = [t.name for t in pipeline_topics(s)]
    assert names == [
        s.topics.raw,
        s.topics.scored,
        s.topics.dlq,
        *(sink_topic(s, step) for step in STEPS if step.output),
    ]


def test_the_topology_picks_the_processes_and_every_step_has_a_handler() -> None:
    assert process_stages(SETTINGS) == STAGES == ("clean", "normalize", "inference")
    chained = load_settings(PIPELINE, {"runtime.topology": "chained"}, environ={})
    assert process_stages(chained) == ("chained",)
    for step in (*STEPS, CHAINED):
        assert handler_class(step).stage == step.name
    assert [s.name for s in STEPS if s.model] == ["inference"] and CHAINED.model


def test_an_unknown_stage_names_the_choices() -> None:
    with pytest.raises(
        ConfigError,
        match="unknown stage 'enrich' .one of clean, normalize, inference, chained, store, all",
    ):
        step_named("enrich")


def test_topics_are_created_with_their_roles_configs() -> None:
    """[topics.<role>_configs] per topic; the internal topics compress with zstd and delete
    unless told otherwise, and the stages writing them compress with that codec."""
    from streamflow.kafka.config import internal_compression
    from streamflow.steps import writes_internal_topic

    s = load_settings(
        PIPELINE,
        {"topics.dlq_configs.retention.ms": "2592000000", "topics.scored_configs.retention.ms": 5,
         "topics.internal_configs.retention.ms": 86400000},
        environ={},
    )  # fmt: skip
    configs = {t.name: dict(t.configs) for t in pipeline_topics(s)}
    assert configs[s.topics.raw] == {}
    assert configs[s.topics.dlq] == {"retention.ms": "2592000000"}
    assert configs[s.topics.scored] == {"retention.ms": "5"}
    internal = [n for n in configs if ".internal." in n]
    assert len(internal) == 2 and all(
        configs[n] == {"compression.type": "zstd", "cleanup.policy": "delete",
                       "retention.ms": "86400000"}
        for n in internal
    )  # fmt: skip
    assert [writes_internal_topic(s, st) for st in ("clean", "normalize", "inference")] == [
        True, True, False,
    ]  # fmt: skip
    chained = load_settings(PIPELINE, {"runtime.topology": "chained"}, environ={})
    assert not writes_internal_topic(chained, "chained")
    assert internal_compression(s) == {"compression.type": "zstd", "compression.level": 1}
    plain = load_settings(
        PIPELINE, {"topics.internal_configs.compression.type": "uncompressed"}, environ={}
    )
    assert internal_compression(plain) == {"compression.type": "none"}
    mine = load_settings(PIPELINE, {"kafka.producer.compression.type": "lz4"}, environ={})
    assert internal_compression(mine) == {}  # [kafka.producer] wins, for every producer

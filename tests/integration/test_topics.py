"""Topics on a cluster where the application may not create them (``topics.create = false``):
a missing topic stops start-up with its name; when they all exist, nothing is created."""

from __future__ import annotations

import pytest

from streamflow.errors import ConfigError
from streamflow.kafka.admin import admin_client, ensure_topics
from streamflow.settings.loading import load_settings
from streamflow.steps import pipeline_topics
from tests.conftest import PIPELINE

pytestmark = pytest.mark.integration


def test_without_create_rights_a_missing_topic_is_named(
    pipeline_overrides: dict[str, str], bootstrap: str
) -> None:
    s = load_settings(PIPELINE, {**pipeline_overrides, "topics.create": "false"}, environ={})
    with pytest.raises(ConfigError, match=rf"do not exist at .*{s.topics.raw}"):
        ensure_topics(bootstrap, pipeline_topics(s), settings=s)
    assert s.topics.raw not in admin_client(bootstrap).list_topics(timeout=10).topics
    created = load_settings(PIPELINE, pipeline_overrides, environ={})
    ensure_topics(bootstrap, pipeline_topics(created), settings=created)  # an operator did it
    assert ensure_topics(bootstrap, pipeline_topics(s), settings=s) == []


def test_a_consumer_property_passed_through_takes_effect(
    pipeline_overrides: dict[str, str], bootstrap: str
) -> None:
    """[kafka.consumer] auto.offset.reset = latest: a new group starts at the end of the raw
    topic, so what was produced before the pipeline started is not scored."""
    import time

    from streamflow.collectors.produce import RawProducer
    from tests.integration.helpers import read_topic, running_pipeline, wait_for

    overrides = {**pipeline_overrides, "kafka.consumer.auto.offset.reset": "latest",
                 "runtime.topology": "chained"}  # fmt: skip
    s = load_settings(PIPELINE, overrides, environ={})
    ensure_topics(bootstrap, pipeline_topics(s), settings=s)
    raw = RawProducer(s, bootstrap)
    reading = {"device_id": "d1", "timestamp": 1764000000000, "cpu_temp_c": 50.0,
               "power_w": 300.0, "cpu_util_pct": 20.0}  # fmt: skip
    for _ in range(50):  # before the pipeline: skipped
        raw.send_record(reading)
        # one record per batch: the embedded broker (Tansu) answers a "latest" ListOffsets with
        # the last batch's base offset + 1, not the log end (measured: 5 records in one batch
        # gave position 1); on Kafka the flush per record changes nothing
        assert raw.flush() == 0
    before = {(m.partition, m.offset) for m in read_topic(bootstrap, s.topics.raw, until=50)}
    assert len(before) == 50
    with running_pipeline(overrides):
        time.sleep(3.0)  # the group's position is taken at the end of the topic first
        for _ in range(30):
            raw.send_record(reading)
        assert raw.flush() == 0

        def thirty_scored() -> list | None:  # type: ignore[type-arg]
            got = read_topic(bootstrap, s.topics.scored, idle_s=1.0)
            return got if len(got) >= 30 else None

        assert wait_for(thirty_scored, timeout_s=30, interval_s=0.5), "the 30 were not scored"
        time.sleep(2.0)  # anything more (the 50 before) would come out by now
        scored = read_topic(bootstrap, s.topics.scored, idle_s=1.0)
    assert len(scored) == 30
    sources = {
        (int(m.headers["sf-source-partition"]), int(m.headers["sf-source-offset"])) for m in scored
    }
    assert not sources & before  # only what was produced after the group started


def test_compressed_input_and_topic_configs(
    pipeline_overrides: dict[str, str], bootstrap: str
) -> None:
    """A user's producer compresses (lz4, zstd, snappy, gzip): every record is scored through
    the three stages, whose internal topics are created zstd with their configs; the
    dead-letter topic takes its configs from [topics.dlq_configs]."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import ConfigResource

    from streamflow.codecs import RecordCodec
    from tests.integration.helpers import read_topic, running_pipeline

    overrides = {**pipeline_overrides, "runtime.topology": "stages",
                 "topics.dlq_configs.retention.ms": "2592000000",
                 "topics.internal_configs.retention.ms": "86400000"}  # fmt: skip
    with running_pipeline(overrides) as (s, _):
        codec = RecordCodec(s.input.schema)
        n = 0
        for codec_name in ("lz4", "zstd", "snappy", "gzip"):
            p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec_name,
                          "linger.ms": 20})  # fmt: skip
            for i in range(100):
                rec = {"device_id": f"d{i % 7}", "timestamp": 1764000000000 + n,
                       "cpu_temp_c": 50.0 + i % 9, "power_w": 300.0,
                       "cpu_util_pct": 20.0}  # fmt: skip
                p.produce(s.topics.raw, key=rec["device_id"].encode(), value=codec.encode(rec))
                n += 1
            assert p.flush(10) == 0
        scored = read_topic(bootstrap, s.topics.scored, until=n, timeout_s=60)
        dead = read_topic(bootstrap, s.topics.dlq, timeout_s=2, idle_s=1.0)
    assert len(scored) == n and not dead
    admin = admin_client(bootstrap)
    internal = f"{s.name}.internal.cleaned"
    wanted = [ConfigResource("topic", s.topics.dlq), ConfigResource("topic", internal)]
    got = {
        r.name: {k: v.value for k, v in f.result(timeout=10).items()}
        for r, f in admin.describe_configs(wanted).items()
    }
    assert got[s.topics.dlq]["retention.ms"] == "2592000000"
    assert got[internal]["compression.type"] == "zstd"
    assert got[internal]["cleanup.policy"] == "delete"
    assert got[internal]["retention.ms"] == "86400000"

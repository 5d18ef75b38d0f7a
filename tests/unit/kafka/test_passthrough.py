"""[kafka.producer], [kafka.consumer] and [kafka.admin]: librdkafka properties passed through, from
the pipeline file or the command line; those streamflow's guarantees rest on are refused with the
reason, and a consumer property the agents' consumer cannot honour stops start-up naming it."""

from __future__ import annotations

from pathlib import Path

from streamflow.agents.app import make_app
from streamflow.kafka.admin import admin_client
from streamflow.kafka.config import producer_config
from streamflow.settings.loading import collect_settings, load_settings
from tests.conftest import PIPELINE, ROOT


def pipeline(tmp_path: Path, tables: str) -> Path:
    text = PIPELINE.read_text().replace('"../', f'"{ROOT}/') + tables
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def test_producer_and_consumer_properties_reach_their_clients(tmp_path: Path) -> None:
    path = pipeline(tmp_path, """
[kafka.producer]
"compression.type" = "zstd"
"client.rack" = "rack-7"

[kafka.consumer]
"auto.offset.reset" = "latest"
"session.timeout.ms" = 20000

[kafka.admin]
"request.timeout.ms" = 5000
""")  # fmt: skip
    s = load_settings(path, {"kafka.producer.linger.ms": "7"}, environ={})
    conf = producer_config(s, "127.0.0.1:9")
    assert conf["compression.type"] == "zstd" and conf["client.rack"] == "rack-7"
    assert conf["linger.ms"] == "7"  # from the command line
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True  # still streamflow's
    app = make_app(s, "clean", "127.0.0.1:9")
    assert app.conf.consumer_auto_offset_reset == "latest"
    assert app.conf.broker_session_timeout == 20.0
    admin_client("127.0.0.1:9", s)  # takes request.timeout.ms (librdkafka would refuse a typo)


def test_what_the_guarantees_rest_on_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = pipeline(tmp_path, """
[kafka.producer]
acks = "1"
"enable.idempotence" = false
"sasl.password" = "x"

[kafka.consumer]
"enable.auto.commit" = true
"client.rack" = "r1"
"auto.offset.reset" = "middle"
""")  # fmt: skip
    _, problems = collect_settings(path, environ={})
    text = "\n".join(problems)
    assert "kafka.producer.acks: streamflow sets this itself: results and dead letters" in text
    assert "kafka.producer.enable.idempotence: streamflow sets this itself" in text
    assert "kafka.producer.sasl.password: streamflow sets this itself: set it in [kafka]" in text
    assert "kafka.consumer.enable.auto.commit: streamflow sets this itself" in text
    assert (
        "kafka.consumer.client.rack: the agents' consumer (aiokafka, through faust) has no" in text
    )
    assert "kafka.consumer.auto.offset.reset: earliest or latest, got 'middle'" in text
    assert "x" not in [p.rsplit(" ", 1)[-1] for p in problems]  # the secret's value shows nowhere


def test_a_property_value_must_be_a_scalar(tmp_path: Path) -> None:
    path = pipeline(tmp_path, '\n[kafka.producer]\n"compression.type" = ["zstd"]\n')
    _, problems = collect_settings(path, environ={})
    assert any(
        p.startswith("kafka.producer.compression.type: expected a string, number or boolean")
        for p in problems
    ), problems

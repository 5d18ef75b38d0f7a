from pathlib import Path

import pytest

from streamflow.errors import ConfigError
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE


def write(tmp_path: Path, text: str) -> Path:
    src = PIPELINE.read_text().replace('"../', f'"{PIPELINE.parent.parent}/')
    p = tmp_path / "p.toml"
    p.write_text(src + text)
    return p


def test_the_shipped_pipeline_loads() -> None:
    s = load_settings(PIPELINE, environ={})
    assert s.name == "telemetry"
    assert (s.topics.raw, s.topics.scored, s.topics.dlq) == (
        "telemetry.raw",
        "telemetry.scored",
        "telemetry.dlq",
    )
    assert len(s.features) == 16
    assert all(f.mean is not None and f.std for f in s.features if "zscore" in f.normalize)
    assert s.metrics.port == 9108 and s.metrics.host == "127.0.0.1"


def test_precedence_is_cli_then_env_then_file() -> None:
    env = {"STREAMFLOW_KAFKA_BOOTSTRAP": "env:9092", "STREAMFLOW_BATCHING_MAX_BATCH": "128"}
    s = load_settings(PIPELINE, {"kafka.bootstrap": "cli:9092"}, environ=env)
    assert s.kafka.bootstrap == "cli:9092"
    assert s.batching.max_batch == 128


def test_a_bad_env_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(PIPELINE, environ={"STREAMFLOW_METRICS_PORT": "lots"})
    assert "metrics.port: expected an integer, got 'lots'" in str(e.value)


def test_unknown_keys_are_reported_with_a_suggestion(tmp_path: Path) -> None:
    p = write(tmp_path, "")
    p.write_text(p.read_text().replace("max_batch = 4096", "max_bach = 4096"))
    with pytest.raises(ConfigError) as e:
        load_settings(p, environ={})
    assert "batching.max_bach: unknown key (did you mean 'max_batch'?)" in str(e.value)
    assert str(p) in str(e.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        '\n[[features]]\nname = "extra"\nout_of_range = "explode"\nnormalize = "zscore+cube"\n',
    )
    p.write_text(p.read_text().replace('device = "auto"', 'device = "quantum"'))
    with pytest.raises(ConfigError) as e:
        load_settings(p, environ={})
    msg = str(e.value)
    assert "runtime.device: must be one of auto, cpu, cuda, tensorrt, got 'quantum'" in msg
    assert "features[16] (extra).out_of_range: must be clip or reject, got 'explode'" in msg
    assert "features[16] (extra).normalize: unknown step 'cube'" in msg
    assert "features[16] (extra).default: an optional feature needs a default" in msg
    assert "features[16] (extra): zscore needs mean and std" in msg


def test_topology_and_in_flight_limits_are_checked() -> None:
    assert (
        load_settings(PIPELINE, {"runtime.topology": "chained"}, environ={}).runtime.topology
        == "chained"
    )
    with pytest.raises(ConfigError) as e:
        load_settings(
            PIPELINE, {"runtime.topology": "mesh", "batching.max_in_flight": "0"}, environ={}
        )
    assert "runtime.topology: must be 'stages' or 'chained', got 'mesh'" in str(e.value)
    assert "batching.max_in_flight: must be >= 1, got 0" in str(e.value)


def test_missing_files_are_named(tmp_path: Path) -> None:
    p = write(tmp_path, "")
    p.write_text(p.read_text().replace("model.onnx", "nope.onnx"))
    with pytest.raises(ConfigError, match=r"model.path: file not found: .*nope.onnx"):
        load_settings(p, environ={})


def test_not_toml_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(p)


def test_input_limits_are_checked_at_start_up() -> None:
    s = load_settings(PIPELINE, environ={"STREAMFLOW_LIMITS_MAX_STRING_LENGTH": "256"})
    assert (s.limits.max_message_bytes, s.limits.max_string_length, s.limits.max_array_length) == (
        1_048_576,
        256,
        4096,
    )
    with pytest.raises(ConfigError) as e:
        load_settings(
            PIPELINE,
            {"limits.max_array_length": "0", "limits.max_message_bytes": "5000000"},
            environ={},
        )
    assert "limits.max_array_length: must be >= 1, got 0" in str(e.value)
    assert (
        "limits.max_message_bytes: 5000000 is more than kafka.max_message_bytes 1048576, "
        "the largest message streamflow produces (raise both)"
    ) in str(e.value)
    assert str(PIPELINE) in str(e.value)

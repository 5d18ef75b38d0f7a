"""streamflow init: a project that validate explains until it is complete, and never overwrites."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from streamflow.cli import main
from streamflow.cli.init import FILES, init, project_name
from streamflow.cli.validate import validate
from streamflow.errors import ConfigError


def write_model(path: Path) -> None:
    """A model of the shape models/README.md asks for: features [batch, 3] -> score [batch, 1]."""
    w = numpy_helper.from_array(np.array([[0.5], [0.01], [0.002]], dtype=np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["score"]),
        ],
        "scaffold",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_init_writes_the_project_and_says_what_comes_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "Fleet Sensors"
    assert main(["init", str(folder)]) == 0
    out = capsys.readouterr().out
    for rel in FILES:
        assert (folder / rel).is_file() and str(folder / rel) in out
    assert f"streamflow validate {folder / 'pipeline.toml'}" in out
    assert "models/model.onnx" in out and "docker compose up" in out
    text = (folder / "pipeline.toml").read_text()
    assert 'name = "fleet-sensors"' in text and 'raw = "fleet-sensors.raw"' in text


def test_validate_names_the_missing_model_until_it_is_there(tmp_path: Path) -> None:
    init(tmp_path / "proj")
    pipeline = str(tmp_path / "proj" / "pipeline.toml")
    model = tmp_path / "proj" / "models" / "model.onnx"
    assert validate(pipeline) == [f"model.path: file not found: {model}"]
    write_model(model)
    assert validate(pipeline) == []


def test_the_compose_file_runs_every_stage_of_the_project_pipeline(tmp_path: Path) -> None:
    init(tmp_path / "proj")
    compose = yaml.safe_load((tmp_path / "proj" / "docker-compose.yml").read_text())
    worker = compose["services"]["worker"]
    assert worker["command"] == ["worker", "--stage", "all"]
    assert worker["environment"]["STREAMFLOW_PIPELINE"] == "/project/pipeline.toml"
    assert worker["environment"]["STREAMFLOW_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert ".:/project:ro" in worker["volumes"]
    assert "kafka" in compose["services"]


def test_init_overwrites_nothing_and_names_what_is_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "proj"
    (folder / "schemas").mkdir(parents=True)
    (folder / "pipeline.toml").write_text("mine")
    (folder / "schemas" / "input.avsc").write_text("mine too")
    with pytest.raises(ConfigError) as err:
        init(folder)
    assert err.value.problems == [
        f"{folder / 'pipeline.toml'}: exists already (streamflow init overwrites nothing)",
        f"{folder / 'schemas' / 'input.avsc'}: exists already (streamflow init overwrites nothing)",
    ]
    assert (folder / "pipeline.toml").read_text() == "mine"
    assert not (folder / "docker-compose.yml").exists()  # nothing written at all
    assert main(["init", str(folder)]) == 2
    assert "pipeline.toml: exists already" in capsys.readouterr().err


def test_the_pipeline_name_is_made_of_the_folder_name(tmp_path: Path) -> None:
    assert project_name(tmp_path / "My_Pipeline.v2") == "my-pipeline-v2"
    assert project_name(tmp_path / "___") == "my-pipeline"

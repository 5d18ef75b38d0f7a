"""The installed examples found without a checkout, and ``streamflow --version``."""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from streamflow import __version__, resources
from streamflow.cli import build_parser, pipeline_path
from streamflow.settings.loading import load_settings, pipeline_path_from_env
from tests.conftest import ROOT


@pytest.fixture()
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with no pipelines/ in it, the repository standing in for the installed
    examples (the wheel installs the same tree under <prefix>/share/streamflow)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STREAMFLOW_PIPELINE", raising=False)
    monkeypatch.setattr(resources, "examples_dir", lambda: ROOT)
    return tmp_path


def test_the_default_pipeline_falls_back_to_the_installed_one(elsewhere: Path) -> None:
    path = pipeline_path_from_env("pipelines/telemetry.toml")
    assert path == str(ROOT / "pipelines" / "telemetry.toml")
    s = load_settings(path, environ={})  # its ../schemas and ../models resolve beside it
    assert Path(s.model.path) == ROOT / "models" / "telemetry-anomaly" / "model.onnx"


def test_a_named_example_is_found_too_and_a_local_file_wins(elsewhere: Path) -> None:
    args = build_parser().parse_args(["validate", "--pipeline", "pipelines/fleet-health.toml"])
    assert pipeline_path(args) == str(ROOT / "pipelines" / "fleet-health.toml")
    (elsewhere / "pipelines").mkdir()
    (elsewhere / "pipelines" / "fleet-health.toml").write_text("")
    assert pipeline_path(args) == "pipelines/fleet-health.toml"


def test_paths_that_are_not_relative_examples_stay_as_given(elsewhere: Path) -> None:
    for given in ("/nowhere/pipeline.toml", "../pipelines/telemetry.toml", "mine.toml"):
        assert resources.find_pipeline(given) == given


def test_the_examples_are_found_under_the_prefix_without_the_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert resources.examples_dir() == ROOT  # an editable install: the checkout it runs from
    monkeypatch.setattr(resources, "SOURCE_TREE", tmp_path / "site-packages")
    assert resources.examples_dir() is None
    share = tmp_path / "share" / "streamflow"
    (share / "pipelines").mkdir(parents=True)
    (share / "pipelines" / "telemetry.toml").write_text("")
    assert resources.examples_dir() == share


def test_version_prints_the_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"streamflow {resources.version()}\n"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__  # the fallback when the metadata is not there

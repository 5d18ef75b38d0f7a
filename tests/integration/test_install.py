"""streamflow as a user installs it: the wheel built from this tree, installed into a new virtualenv
in a temporary folder, and run from an empty folder, far from the checkout.

The dependencies come from the package index (pip's cache makes a second run quicker). The demo
runs on its own embedded broker; only its metrics port is set, so that it may run beside others.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

EXTRAS = "cpu,local,store"


def sources(into: Path) -> Path:
    """The files a clone of this tree holds (tracked, or new and not ignored), copied: the build
    sees neither the checkout's venvs nor its exported MiniLM."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (into / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, into / rel)
    return into


class User:
    """Commands typed in ``cwd`` with the virtualenv's bin/ first on PATH; each one timed."""

    def __init__(self, venv: Path, cwd: Path) -> None:
        self.cwd = cwd
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "STREAMFLOW_PIPELINE")
        }
        self.env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env["VIRTUAL_ENV"] = str(venv)
        self.seconds: dict[str, float] = {}

    def run(self, *cmd: str, timeout: float, ok: bool = True) -> subprocess.CompletedProcess[str]:
        t0 = time.monotonic()
        r = subprocess.run(
            list(cmd), cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        self.seconds[" ".join(cmd[:3])] = round(time.monotonic() - t0, 1)
        if ok:
            assert r.returncode == 0, f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}{r.stderr}"
        return r


@pytest.mark.timeout(1200)
def test_the_built_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    from streamflow import __version__
    from streamflow.broker import free_port

    dist, venv, home = tmp_path / "dist", tmp_path / "venv", tmp_path / "home"
    home.mkdir()
    builder = User(Path(sys.prefix), tmp_path)
    builder.run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
        str(sources(tmp_path / "src")), timeout=600,
    )  # fmt: skip
    (wheel,) = dist.glob("streamflow_inference-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = f"streamflow_inference-{__version__}.data/data/share/streamflow/"
    for rel in (
        "pipelines/telemetry.toml",
        "pipelines/fleet_health.py",
        "schemas/telemetry_reading.avsc",
        "models/telemetry-anomaly/model.onnx",
        "models/fleet-health/model.onnx",
    ):
        assert data + rel in names, rel
    assert not [n for n in names if "minilm/" in n]  # exported on the user's machine
    assert "streamflow/py.typed" in names
    assert f"streamflow_inference-{__version__}.dist-info/licenses/LICENSE" in names

    builder.run(sys.executable, "-m", "venv", str(venv), timeout=120)
    user = User(venv, home)
    user.run("pip", "install", "-q", f"{wheel}[{EXTRAS}]", timeout=900)

    where = user.run("python", "-c", "import streamflow; print(streamflow.__file__)", timeout=60)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    assert user.run("streamflow", "--version", timeout=60).stdout == f"streamflow {__version__}\n"

    demo = user.run(
        "streamflow", "demo", "--records", "2000", "--metrics-port", str(free_port()), timeout=300
    )
    out = demo.stdout
    assert "produced       2000" in out
    assert "accounted      2000 of 2000" in out and "INCOMPLETE" not in out, out
    assert "results (this run scored" in out  # the store extra: Parquet, read back with DuckDB
    assert "using the example pipeline" in demo.stderr  # no pipelines/ in this folder

    user.run("streamflow", "init", "proj", timeout=60)
    assert (home / "proj" / "pipeline.toml").is_file()
    check = user.run("streamflow", "validate", "proj/pipeline.toml", timeout=60, ok=False)
    assert check.returncode == 1
    assert f"model.path: file not found: {home / 'proj' / 'models' / 'model.onnx'}" in check.stderr
    print("seconds:", user.seconds | builder.seconds)

"""The example pipelines, schemas and models installed with streamflow, found without a checkout.

The wheel installs ``pipelines/``, ``schemas/`` and ``models/`` (the demo's and fleet-health's;
MiniLM is exported on the user's machine) side by side under ``<prefix>/share/streamflow/``
(pyproject.toml, ``[tool.setuptools.data-files]``), as they lie in the repository: paths in a
pipeline file are relative to it. A relative pipeline path that names no file under the current
directory is looked up there, so ``streamflow demo`` works in any folder after ``pip install``.
An editable install (``make install``) gets no copy: the checkout it runs from serves instead.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path, PurePath

DISTRIBUTION = "streamflow-inference"
SHARE = PurePath("share", "streamflow")
MARKER = PurePath("pipelines", "telemetry.toml")  # the default pipeline, in every install
SOURCE_TREE = Path(__file__).resolve().parent.parent  # the checkout, when run from one

log = logging.getLogger(__name__)
_told: set[str] = set()


def examples_dir() -> Path | None:
    """The installed examples' folder (``<prefix>/share/streamflow``), or None when absent."""
    for root in _candidates():
        if (root / MARKER).is_file():
            return root
    return None


def _candidates() -> Iterator[Path]:
    """Where the examples may be: where the installed distribution's file list puts them (a
    venv, ``--user``, ``--prefix``), under this interpreter's prefix, in the source tree."""
    try:
        files = metadata.distribution(DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        files = []
    suffix = (SHARE / MARKER).as_posix()
    for f in files:
        if f.as_posix().endswith(suffix):
            yield Path(str(f.locate())).resolve().parents[len(MARKER.parts) - 1]
    yield Path(sys.prefix) / SHARE
    yield SOURCE_TREE


def version() -> str:
    """The installed distribution's version; ``streamflow.__version__`` when run from a tree
    that is not installed under that name."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        from streamflow import __version__

        return __version__


def find_pipeline(path: str) -> str:
    """``path`` when it names a file, is absolute or climbs out (``..``); otherwise the installed
    example at the same relative path when there is one, else ``path`` as it is (the loader then
    says it is not found)."""
    p = Path(path)
    if p.is_absolute() or ".." in p.parts or p.exists():
        return path
    root = examples_dir()
    if root is None or not (root / p).is_file():
        return path
    found = str(root / p)
    if found not in _told:  # once, though a command may resolve its pipeline more than once
        _told.add(found)
        log.info("no %s here: using the example pipeline %s", path, found)
    return found

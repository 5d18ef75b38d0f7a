"""``streamflow validate``: the pipeline file against its schemas and model, every problem at once.

The checks themselves belong to the settings (``settings/checks.py``) and to the pipeline's
model kind (``ModelKind.check_files`` in ``inference/kinds/``); this command runs them all.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

from streamflow.inference.kinds import file_problems, kind_for
from streamflow.settings.loading import collect_settings, load_settings


def validate(path: str, overrides: Mapping[str, str] | None = None) -> list[str]:
    """Every problem found, each naming its key; empty when the pipeline is valid.

    The cross-file checks run even when the file itself has problems, wherever the files
    they need exist, so one run lists everything to fix.
    """
    s, problems = collect_settings(path, overrides)
    if s is None:
        return problems
    return problems + file_problems(s)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow validate [FILE]``."""
    from streamflow.cli import settings_args

    v = sub.add_parser("validate", help="check a pipeline file: schema <-> features <-> model")
    v.add_argument("file", nargs="?")
    settings_args(v)
    v.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """List every problem of the pipeline file (exit 1), or summarise the valid pipeline."""
    from streamflow.cli import overrides, pipeline_path

    path = args.file or pipeline_path(args)
    problems = validate(path, overrides(args))
    if problems:
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    s = load_settings(path, overrides(args))
    print(
        f"{path}: ok (pipeline {s.name}: {kind_for(s).describe()}, "
        f"model {s.model.name} {s.model.version}, "
        f"topics {s.topics.raw} -> {s.topics.scored}, dead letters {s.topics.dlq})"
    )
    return 0

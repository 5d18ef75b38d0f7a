"""``streamflow worker``: run stages against the configured broker (what compose and k8s run)."""

from __future__ import annotations

import argparse

from streamflow import logs
from streamflow.cli import DEFAULT_PIPELINE, argv_settings, bootstrap_or_fail, load, settings_args
from streamflow.settings import Settings
from streamflow.settings.loading import pipeline_path_from_env


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow worker --stage STAGE``."""
    w = sub.add_parser(
        "worker", help="run agents against the configured broker (what compose and k8s run)"
    )
    w.add_argument(
        "--stage",
        required=True,
        choices=["clean", "normalize", "inference", "chained", "store", "all"],
    )
    w.add_argument(
        "--loglevel", default=None, help="the global --log-level, for this command (old scripts)"
    )
    settings_args(w)
    w.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """One stage in this process; or, for ``--stage all`` or several pipeline files, a supervisor
    of one child process per stage and pipeline."""
    from streamflow.agents.worker import run_stage
    from streamflow.supervisor import run_all

    if args.loglevel:  # before any child process is started: they get it too
        logs.set_level(args.loglevel)
    files = args.pipeline or [pipeline_path_from_env(DEFAULT_PIPELINE)]
    pipelines: list[tuple[Settings, list[str]]] = []
    for f in files:  # every pipeline file with the same overrides; each child re-reads its own
        one = argparse.Namespace(**{**vars(args), "pipeline": [f]})
        pipelines.append((load(one), argv_settings(one)))
    s = pipelines[0][0]
    bootstrap = bootstrap_or_fail(s, "streamflow worker")
    if args.stage == "all" or len(pipelines) > 1:
        return run_all(pipelines, bootstrap, args.stage)
    run_stage(s, args.stage, bootstrap)
    return 0

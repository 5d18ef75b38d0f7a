"""``streamflow up``: embedded broker (unless one is configured), topics and all stages, until
Ctrl-C; no collector (``streamflow demo`` adds one)."""

from __future__ import annotations

import argparse
import sys
import time

from streamflow.cli import argv_settings, load, settings_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow up``."""
    u = sub.add_parser(
        "up", help="embedded broker + topics + all stages, no collector; until Ctrl-C"
    )
    settings_args(u)
    u.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the pipeline until a signal (exit 0); 1 when it does not start or a stage dies, 130
    on a second Ctrl-C."""
    from streamflow.signals import install_stop_handler
    from streamflow.supervisor import LocalPipeline

    settings, argv = load(args), argv_settings(args)
    stop = install_stop_handler()
    pipe = LocalPipeline(settings, argv)
    try:
        bootstrap = pipe.start()
        ok = pipe.wait_consuming()
        t = settings.topics
        print(
            f"streamflow up: pipeline {settings.name} "
            f"{'running' if ok else 'NOT running (see logs)'}\n"
            f"  bootstrap  {bootstrap}\n"
            f"  produce to {t.raw}; results on {t.scored}; dead letters on {t.dlq}\n"
            f"  metrics    {pipe.metrics_url}\n  logs       {pipe.log_dir}\n  Ctrl-C stops",
            flush=True,
        )
        if not ok:
            return 1
        while not stop.is_set():
            if pipe.stages and pipe.stages.dead():
                print(
                    f"streamflow up: a stage died: {', '.join(pipe.stages.dead())}", file=sys.stderr
                )
                return 1
            time.sleep(0.2)
        return 0
    except KeyboardInterrupt:  # a second signal: abort
        pipe.kill()
        return 130
    finally:
        pipe.stop()

"""The ``streamflow`` command.

Each subcommand is a module of this package (``command_modules()``) with ``add_parser(sub)``,
which declares the subcommand and its arguments, and ``run(args)``, its body.
This module holds what they share: the settings options and loading the settings, and
``connect``, the prologue of the commands that work against a running broker (collect, produce,
consume, dlq).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from types import ModuleType

from streamflow import logs
from streamflow.errors import ConfigError, StreamflowError
from streamflow.resources import find_pipeline, version
from streamflow.settings import Settings
from streamflow.settings.loading import load_settings, pipeline_path_from_env

DEFAULT_PIPELINE = "pipelines/telemetry.toml"


def settings_args(p: argparse.ArgumentParser) -> None:
    """Add the settings options: --pipeline, --set, --bootstrap, --metrics-port."""
    p.add_argument(
        "--pipeline",
        action="append",
        default=None,
        help=f"pipeline file (default $STREAMFLOW_PIPELINE or {DEFAULT_PIPELINE}); "
        "`worker` takes several",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting (repeatable); beats STREAMFLOW_* env vars and the file",
    )
    p.add_argument(
        "--bootstrap",
        default=None,
        help="Kafka bootstrap servers (same as --set kafka.bootstrap=...)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="metrics port (same as --set metrics.port=...)",
    )


def overrides(args: argparse.Namespace) -> dict[str, str]:
    """The settings given on the command line (--set, --bootstrap, --metrics-port) by key."""
    out: dict[str, str] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            shown = (
                "(not shown: it may hold a secret)"
                if any(w in item.lower() for w in ("password", "secret", "token"))
                else repr(item)
            )
            raise ConfigError(f"--set {shown}: expected SECTION.KEY=VALUE", source="command line")
        out[key.strip()] = value
    if args.bootstrap:
        out["kafka.bootstrap"] = args.bootstrap
    if args.metrics_port is not None:
        out["metrics.port"] = str(args.metrics_port)
    return out


def pipeline_path(args: argparse.Namespace) -> str:
    """The command's one pipeline file: --pipeline, else $STREAMFLOW_PIPELINE, else the default;
    a relative path that is not here may name an installed example (``resources.find_pipeline``)."""
    given = args.pipeline or []
    if len(given) > 1:
        raise ConfigError(
            "--pipeline: only `streamflow worker` takes several pipeline files",
            source="command line",
        )
    return find_pipeline(given[0]) if given else pipeline_path_from_env(DEFAULT_PIPELINE)


def load(args: argparse.Namespace) -> Settings:
    """The settings of the command's pipeline file with the command-line overrides."""
    return load_settings(pipeline_path(args), overrides(args))


def argv_settings(args: argparse.Namespace) -> list[str]:
    """The settings flags to pass on to child processes (they re-read the same sources)."""
    out = ["--pipeline", str(Path(pipeline_path(args)).resolve())]
    for item in args.overrides:
        out += ["--set", item]
    if args.metrics_port is not None:
        out += ["--metrics-port", str(args.metrics_port)]
    return out


def bootstrap_or_fail(settings: Settings, what: str) -> str:
    """The configured broker address; a ConfigError naming ``what`` when there is none."""
    if not settings.kafka.bootstrap:
        raise ConfigError(
            f"kafka.bootstrap: {what} needs a broker address (--bootstrap, "
            "STREAMFLOW_KAFKA_BOOTSTRAP or the pipeline file); `streamflow up` or "
            "`streamflow broker` starts an embedded one",
            source=settings.source,
        )
    return settings.kafka.bootstrap


def connect(args: argparse.Namespace, what: str) -> tuple[Settings, str]:
    """Load the settings, require a broker address and wait until that broker answers.

    ``what`` names the command in the error when no address is configured. Returns the
    settings and the bootstrap servers."""
    from streamflow.kafka.admin import wait_ready

    settings = load(args)
    bootstrap = bootstrap_or_fail(settings, what)
    wait_ready(bootstrap, settings.kafka.connect_timeout_s, settings=settings)
    return settings, bootstrap


def command_modules() -> tuple[ModuleType, ...]:
    """The command modules, in ``streamflow --help`` order.

    Imported here, not at the top: they import this module's helpers."""
    from streamflow.cli import (
        bench,
        broker,
        collect,
        consume,
        demo,
        dlq,
        doctor,
        init,
        kcat,
        model,
        produce,
        query,
        report,
        schema,
        status,
        store,
        up,
        validate,
        worker,
    )

    return (
        init,
        validate,
        schema,
        broker,
        worker,
        demo,
        doctor,
        report,
        up,
        status,
        collect,
        produce,
        consume,
        dlq,
        query,
        store,
        model,
        kcat,
        bench,
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``streamflow`` parser: the global options and every command's subparser."""
    p = argparse.ArgumentParser(prog="streamflow", description="Streaming inference on Kafka.")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, the client libraries' too"
    )
    p.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default="text",
        help="log lines on stderr: text, or json (one object per line, for Loki or ELK)",
    )
    p.add_argument("--log-level", choices=logs.LEVELS, default="info", help="(default: info)")
    p.add_argument("--version", action="version", version=f"streamflow {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for module in command_modules():
        module.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the ``streamflow`` command; the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["kcat"]:  # every argument after it belongs to kcat, options included
        try:
            from streamflow.cli.kcat import exec_kcat

            exec_kcat(argv[1:])
        except StreamflowError as exc:
            print(f"streamflow: error: {exc}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    logs.configure(args.log_format, args.log_level, verbose=args.verbose)
    try:
        return int(args.func(args) or 0)
    except StreamflowError as exc:
        logs.say(str(exc), prefix="streamflow: error: ")
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `streamflow consume ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0

"""Log output: text lines for people, or one JSON object per line for Loki or ELK.

``configure`` sets up the root logger once, in ``streamflow.cli.main``, from the global options
``--log-format`` and ``--log-level`` (``-v``: debug, the client libraries' own lines included).
Stage processes a supervisor starts get the same options on their command line
(``cli_args``), and the faust worker is told to leave logging alone (``agents/worker.py``), so
faust's, aiokafka's and librdkafka's lines come out in the same format. A JSON line holds
``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``exception`` (the traceback)
when there is one, and ``pipeline`` and ``stage`` once the process knows them (``bind``).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal, TextIO

Format = Literal["text", "json"]
FORMATS: tuple[Format, ...] = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
# Chatty below WARNING; their debug lines show with -v only.
LIBRARIES = ("aiokafka", "faust", "mode", "kafka")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT = ("pipeline", "stage")  # fields a record may carry (``extra=``) or the process binds

log = logging.getLogger("streamflow")


@dataclass(frozen=True)
class Config:
    """How this process logs: what ``configure`` was given."""

    format: Format = "text"
    level: str = "info"
    verbose: bool = False


_config = Config()
_bound: dict[str, str] = {}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message or traceback escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT:
            value = getattr(record, key, None) or _bound.get(key)
            if value:
                line[key] = str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


class _Handler(logging.StreamHandler[TextIO]):
    """The handler ``configure`` installs on the root logger (and replaces when called again)."""


def configure(format: Format = "text", level: str = "info", *, verbose: bool = False) -> None:
    """Log to stderr in ``format`` at ``level`` (``verbose``: debug, client libraries included).

    Like ``logging.basicConfig``, it leaves a root logger that someone else set up alone (a test
    runner capturing logs) and only sets the levels of the client libraries there."""
    global _config
    _config = Config(format, level, verbose)
    threshold = logging.DEBUG if verbose else level_number(level)
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _Handler)]
    if ours or not root.handlers:
        for h in ours:
            root.removeHandler(h)
        handler = _Handler(sys.stderr)
        handler.setFormatter(
            JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT)
        )
        root.addHandler(handler)
        root.setLevel(threshold)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(
            logging.DEBUG if verbose else max(logging.WARNING, threshold)
        )
    # In json mode nothing else may write to stderr: warnings and uncaught exceptions too.
    logging.captureWarnings(format == "json")
    if format == "json":
        sys.excepthook = _log_uncaught
        threading.excepthook = lambda a: _log_uncaught(a.exc_type, a.exc_value, a.exc_traceback)


def level_number(level: str) -> int:
    """``"warning"`` -> 30; an unknown name (``worker --loglevel`` takes any) -> INFO."""
    number = logging.getLevelName(level.strip().upper())
    return number if isinstance(number, int) else logging.INFO


def set_level(level: str) -> None:
    """Change the level ``configure`` set (``worker --loglevel``, kept for old scripts)."""
    name = logging.getLevelName(level_number(level)).lower()
    configure(_config.format, name if name in LEVELS else "error", verbose=_config.verbose)


def bind(**fields: str) -> None:
    """Fields every JSON line of this process carries from now on (``pipeline``, ``stage``)."""
    _bound.update({k: v for k, v in fields.items() if k in CONTEXT})


def cli_args() -> list[str]:
    """The global options that give a child ``streamflow`` process this process's logging."""
    return [
        "--log-format",
        _config.format,
        "--log-level",
        _config.level,
        *(["-v"] if _config.verbose else []),
    ]


def say(message: str, *, prefix: str = "streamflow: ") -> None:
    """An error for the person running the command, on stderr: ``prefix + message`` as text; in
    json mode a record of logger ``streamflow``, so that every line on stderr stays JSON."""
    if _config.format == "json":
        log.error("%s", message)
    else:
        print(f"{prefix}{message}", file=sys.stderr)


def _log_uncaught(
    kind: type[BaseException], exc: BaseException | None, tb: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc or kind(), tb)
        return
    log.critical("uncaught exception", exc_info=(kind, exc or kind(), tb))

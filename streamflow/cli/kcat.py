"""``streamflow kcat ARGS``: the system's kcat, run with the librdkafka that confluent-kafka ships.

Debian 12's kcat links librdkafka 2.0.2, which cannot parse the embedded broker's (Tansu)
ApiVersions v3 response ("Read underflow ... ApiVersionRequest failed"); librdkafka 2.16
can. librdkafka's C ABI is stable, so the same kcat binary runs on the newer library.
Against real Kafka, plain kcat works as it is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from streamflow.errors import ConfigError


def bundled_librdkafka() -> Path | None:
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*")) if libs.is_dir() else []
    return found[0] if found else None


def kcat_env() -> dict[str, str]:
    """Environment that makes kcat load the bundled librdkafka (unchanged if there is none)."""
    env = dict(os.environ)
    lib = bundled_librdkafka()
    if lib is None:
        return env
    d = Path(tempfile.gettempdir()) / f"streamflow-librdkafka-{lib.stem}"
    d.mkdir(exist_ok=True)
    link = d / "librdkafka.so.1"
    if not link.exists():
        tmp = d / f".link-{os.getpid()}"
        tmp.symlink_to(lib)
        tmp.replace(link)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(d), env.get("LD_LIBRARY_PATH", "")) if p
    )
    return env


def kcat_binary() -> str:
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        raise ConfigError("kcat is not installed (Debian: apt-get install kcat)")
    return path


def exec_kcat(args: list[str]) -> None:
    binary = kcat_binary()
    os.execve(binary, [binary, *args], kcat_env())


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow kcat ARGS``.

    ``main()`` runs kcat before parsing when the command line starts with ``kcat``, so that
    options meant for kcat are not parsed; this subparser is for ``streamflow --help`` and
    for ``kcat`` after global options (``streamflow -v kcat ...``)."""
    kc = sub.add_parser(
        "kcat",
        help="the system's kcat with a librdkafka that speaks to the embedded broker",
        description="Runs kcat with the librdkafka bundled in confluent-kafka "
        "(Debian's 2.0.2 cannot talk to the embedded broker). Arguments go to kcat "
        "unchanged.",
    )
    kc.add_argument("args", nargs=argparse.REMAINDER)
    kc.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replace this process by kcat; returns only through an exception."""
    exec_kcat(args.args)
    return 0  # not reached

"""The check that the files a section's keys name exist: one wording for every TLS file
(``kafka.ssl_*``, ``schema_registry.ssl_*``, ``collector.tls_*``).

Below codecs and collectors: it imports nothing of streamflow, so any layer may use it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def missing_files(section: str, settings: object, keys: Iterable[str]) -> list[str]:
    """``<section>.<key>: file not found: <path>`` for each of ``keys`` set on ``settings`` to a
    path that is no file (an unset key is not checked)."""
    return [
        f"{section}.{key}: file not found: {path}"
        for key in keys
        if (path := getattr(settings, key)) and not Path(path).is_file()
    ]

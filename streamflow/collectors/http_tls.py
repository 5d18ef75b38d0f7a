"""TLS for ``streamflow collect http``: ``collector.tls_certfile`` and ``collector.tls_keyfile``
(both or neither) serve HTTPS; ``collector.tls_client_cafile`` adds mutual TLS, accepting only
clients whose certificate those CAs signed (not the system's CAs)."""

from __future__ import annotations

import ssl

from streamflow.errors import ConfigError
from streamflow.settings import Settings
from streamflow.settings.files import missing_files
from streamflow.settings.schema import CollectorSettings


def check_tls(c: CollectorSettings) -> list[str]:
    """The TLS keys: certificate and key both or neither, the client CA only with them, files
    that exist. Each problem names its key."""
    p: list[str] = []
    if bool(c.tls_certfile) != bool(c.tls_keyfile):
        given, missing = (
            ("tls_certfile", "tls_keyfile") if c.tls_certfile else ("tls_keyfile", "tls_certfile")
        )
        p.append(f"collector.{missing}: required with collector.{given} (both or neither)")
    if c.tls_client_cafile and not c.tls_certfile:
        p.append(
            "collector.tls_client_cafile: needs collector.tls_certfile and collector.tls_keyfile "
            "(client certificates are checked only over TLS)"
        )
    return p + missing_files("collector", c, ("tls_certfile", "tls_keyfile", "tls_client_cafile"))


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context (TLS 1.2 or later), None without ``collector.tls_certfile``;
    a ConfigError naming the key for a half setting or a file that does not load."""
    c = settings.collector
    problems = check_tls(c)
    if problems:
        raise ConfigError(problems, source=settings.source)
    if not c.tls_certfile:
        return None
    # Not create_default_context(): that would trust the system's CAs for client certificates.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(c.tls_certfile, c.tls_keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"collector.tls_certfile / collector.tls_keyfile: cannot load "
            f"{c.tls_certfile} with {c.tls_keyfile}: {exc}",
            source=settings.source,
        ) from None
    if c.tls_client_cafile:
        try:
            ctx.load_verify_locations(cafile=c.tls_client_cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"collector.tls_client_cafile: cannot load {c.tls_client_cafile}: {exc}",
                source=settings.source,
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx

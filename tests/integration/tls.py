"""A TLS endpoint in front of the embedded broker: a test CA and server certificate (openssl
CLI) and Debian's stunnel4 terminating TLS. Tansu advertises the stunnel address, so every
client (bootstrap and partition leaders alike) goes through TLS."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamflow.broker import EmbeddedBroker, die_with_parent, free_port, stop_process


def require_tool(name: str, package: str) -> str:
    """The tool's path; in CI a missing tool fails the test (`make test` installs it), elsewhere
    it skips."""
    path = shutil.which(name)
    if path is None:
        why = (
            f"{name} is not installed (apt-get install {package}; "
            "`make system-tools` does it as root)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{why}: it must be there in CI")
        pytest.skip(why)
    return path


def make_certificates(d: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate for localhost/127.0.0.1, server key), all PEM."""
    openssl = require_tool("openssl", "openssl")
    ca_key, ca, key, csr, cert, ext = (
        d / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem", "server.ext")
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30)

    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=streamflow test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    ext.write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    return ca, cert, key


@dataclass
class TlsBroker:
    bootstrap: str  # the TLS address, the only one clients are told about
    cafile: Path
    plain: EmbeddedBroker


def _wait_port(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@contextmanager
def tls_broker(d: Path) -> Iterator[TlsBroker]:
    """The embedded broker behind stunnel on its own port; the broker advertises that port."""
    stunnel = (
        require_tool("stunnel4", "stunnel4")
        if shutil.which("stunnel4")
        else require_tool("stunnel", "stunnel4")
    )
    ca, cert, key = make_certificates(d)
    tls_port = free_port()
    conf = d / "stunnel.conf"
    with EmbeddedBroker(
        advertise=f"127.0.0.1:{tls_port}", log_path=str(d / "broker.log")
    ) as broker:
        conf.write_text(
            f"foreground = yes\npid =\ndebug = 4\n\n[kafka]\naccept = 127.0.0.1:{tls_port}\n"
            f"connect = 127.0.0.1:{broker.port}\ncert = {cert}\nkey = {key}\n"
        )
        with open(d / "stunnel.log", "ab") as log:
            proc = subprocess.Popen(
                [stunnel, str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        try:
            if not _wait_port(tls_port, 10):
                pytest.fail(
                    f"stunnel did not listen on {tls_port}: "
                    f"{(d / 'stunnel.log').read_text()[-2000:]}"
                )
            yield TlsBroker(f"127.0.0.1:{tls_port}", ca, broker)
        finally:
            stop_process(proc)

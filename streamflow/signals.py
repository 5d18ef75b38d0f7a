"""Stopping on SIGINT/SIGTERM: the first asks for a clean stop, a second aborts."""

from __future__ import annotations

import signal
from typing import Any


class StopFlag:
    """Set by a signal handler, read by any thread. No lock: a handler that takes a lock the
    interrupted code holds (``threading.Event.set`` does) deadlocks the process."""

    def __init__(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True


def install_stop_handler() -> StopFlag:
    """A flag set by the first SIGINT/SIGTERM; a second one aborts at once."""
    stop = StopFlag()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop

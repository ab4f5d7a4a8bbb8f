"""SIGTERM/SIGINT as a request to stop at the next dispatch boundary, save and exit 3.

A preempted machine gets SIGTERM and some seconds of grace: the executor
checks `requested` after every dispatch, saves a checkpoint at the step it
reached and ends the run with `Preempted` (`tnx run` exits 3: interrupted,
resumable; never 0, so `tnx run x && next` stops). A second SIGINT (an
impatient Ctrl-C) exits at once with 130, without saving.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any


class Preempted(Exception):
    """The run stopped on a signal after saving; re-running the command resumes it."""


class StopSignals:
    """Context manager installing the handlers (main thread only; elsewhere a no-op)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            os._exit(130)  # second Ctrl-C: leave now, the last checkpoint stays valid
        self.requested = name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

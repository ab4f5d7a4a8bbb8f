"""SIGTERM/SIGINT as a request to stop at the next dispatch boundary, save and exit 3.

A preempted machine gets SIGTERM and some seconds of grace: the executor
polls the signals after every dispatch, saves a checkpoint at the step it
reached and ends the run with `Preempted` (`tnx run` exits 3: interrupted,
resumable; never 0, so `tnx run x && next` stops). A second SIGINT (an
impatient Ctrl-C) exits at once with 130, without saving.

In a multi-process job a signal reaches one host, or the hosts at different
moments; `poll` agrees on it through a collective at each dispatch boundary,
so every process stops after the same step and saves the same checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

import numpy as np


class Preempted(Exception):
    """The run stopped on a signal after saving; re-running the command resumes it."""


class StopSignals:
    """Context manager installing the handlers (main thread only; elsewhere a no-op)."""

    def __init__(self) -> None:
        self.requested: str | None = None  # the signal this process received
        self.agreed: str | None = None  # the stop every process agreed on (set by `poll`)
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            os._exit(130)  # second Ctrl-C: leave now, the last checkpoint stays valid
        self.requested = name

    def poll(self, save_due: bool = False) -> tuple[str | None, bool]:
        """(the agreed stop, or None; whether any process wants a save now). Every process of a
        job calls it at the same points: with several it is a collective."""
        from tunix_dsl.runtime.distributed import gather, process_count

        if process_count() == 1:
            self.agreed = self.agreed or self.requested
            return self.agreed, save_due
        # One small collective per dispatch: (signal number or 0, save due) of every process.
        rows = gather([signal.Signals[self.requested].value if self.requested else 0, int(save_due)])
        signalled = np.flatnonzero(rows[:, 0])
        if self.agreed is None and len(signalled):
            first = int(signalled[0])
            self.agreed = f"{signal.Signals(int(rows[first, 0])).name} on process {first}"
        return self.agreed, bool(rows[:, 1].any())

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

"""`tnx run` as one process of a job, optionally SIGKILLing itself mid-stage (multi-process tests).

    python multihost_run.py SIGNAL -- ARGS...

ARGS are `tnx run`'s. SIGNAL is `-` (run to the end) or `STAGE:STEP:NAME`: the
process sends itself signal NAME (SIGKILL, SIGTERM) right after the dispatch that
reaches STEP of STAGE has finished.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from tunix_dsl.runtime import rl_loop, training
from tunix_dsl.runtime.cli_commands import main as tnx


def main(argv: list[str]) -> int:
    kill, args = argv[0], argv[2:]
    if kill != "-":
        stage, step, name = kill.split(":")
        for loop in (training.StageLoop, rl_loop.RLLoop):  # supervised and RL stages
            loop.dispatch = _dying(loop.dispatch, stage, int(step), signal.Signals[name])  # type: ignore[method-assign]
    return tnx("run", args)


def _dying(dispatch: Callable[..., tuple[Any, int]], stage: str, step: int, sig: signal.Signals
           ) -> Callable[..., tuple[Any, int]]:
    def dispatch_then_die(self: Any, state: Any, done: int) -> tuple[Any, int]:
        state, k = dispatch(self, state, done)
        if self.name == stage and done + k >= step:
            jax.block_until_ready(state)
            _committed(self.checkpoints.directory, int(self.config.checkpoint_every or 0), done + k)
            os.kill(os.getpid(), sig)
        return state, k

    return dispatch_then_die


def _committed(directory: Path, every: int, reached: int, timeout_s: float = 120.0) -> None:
    """Wait until the newest checkpoint due before step `reached` is committed (orbax renames
    its temporary directory to the step number), so the test kills after a durable save rather
    than racing the background commit."""
    due = (reached - 1) // every * every if every else 0
    deadline = time.monotonic() + timeout_s
    while due and not (directory / str(due)).is_dir() and time.monotonic() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

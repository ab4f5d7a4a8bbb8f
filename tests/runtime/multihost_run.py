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
from collections.abc import Callable
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
            os.kill(os.getpid(), sig)
        return state, k

    return dispatch_then_die


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

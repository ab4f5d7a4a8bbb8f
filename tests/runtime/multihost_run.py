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
from typing import Any

import jax

from tunix_dsl.runtime import training
from tunix_dsl.runtime.cli_commands import main as tnx


def main(argv: list[str]) -> int:
    kill, args = argv[0], argv[2:]
    if kill != "-":
        stage, step, name = kill.split(":")
        original = training.StageLoop.dispatch

        def dispatch_then_die(self: training.StageLoop, state: Any, done: int) -> tuple[Any, int]:
            state, k = original(self, state, done)
            if self.name == stage and done + k >= int(step):
                jax.block_until_ready(state)
                os.kill(os.getpid(), signal.Signals[name])
            return state, k

        training.StageLoop.dispatch = dispatch_then_die  # type: ignore[method-assign]
    return tnx("run", args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

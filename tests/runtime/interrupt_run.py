"""Run a pipeline and SIGKILL this very process at a chosen point (for the resume tests).

    python interrupt_run.py PIPELINE RUN_DIR STAGE STEP [--during-save]

Without --during-save the process kills itself right after the dispatch that
reaches STEP of STAGE; with it, right after the checkpoint save of that step
has started (its asynchronous write still in flight).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from tunix_dsl.api import load
from tunix_dsl.runtime import checkpoint
from tunix_dsl.runtime.executor import Executor


def main(argv: list[str]) -> int:
    pipeline_file, run_dir, stage, step = argv[:4]
    during_save = "--during-save" in argv
    target = int(step)

    def kill_at_dispatch(name: str, reached: int) -> None:
        if not during_save and name == stage and reached >= target:
            os.kill(os.getpid(), signal.SIGKILL)

    if during_save:
        original = checkpoint.StageCheckpoints.save

        def save_then_die(self: Any, at: int, state: Any, meta: dict[str, Any]) -> None:
            original(self, at, state, meta)
            if meta.get("stage") == stage and at >= target:
                os.kill(os.getpid(), signal.SIGKILL)

        checkpoint.StageCheckpoints.save = save_then_die  # type: ignore[method-assign]

    pipeline = load(pipeline_file)
    assert pipeline.ok, pipeline.diagnostics
    Executor(pipeline, Path(run_dir), on_dispatch=kill_at_dispatch).run()
    return 3  # reaching the end means the kill point was never hit


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Per-stage metrics: `metrics.jsonl` (one row per optimizer step) and TensorBoard events.

A stage that starts from step 0 starts both afresh. On resume from step `n`
the rows after `n` (written before the interruption, from steps that will be
redone) are dropped from `metrics.jsonl`, and the TensorBoard writer purges
its events from step `n + 1` on, so every step appears exactly once in both.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from tensorboardX import SummaryWriter


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Rows of a `metrics.jsonl`; a torn last line (killed mid-write) is dropped."""
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows


class MetricsSink:
    """Appends step rows to `metrics.jsonl` and scalars to TensorBoard."""

    def __init__(self, jsonl: Path, events: Path, *, resume_step: int = 0, write: bool = True):
        """`write` False (the processes other than 0 of a job): the same rows kept in memory
        (the earlier ones read back), no file written."""
        self._write = write
        if not write:
            self.history = _rows_until(jsonl, resume_step)
            self.eval_history = _rows_until(jsonl.with_name("eval.jsonl"), resume_step)
            return
        self.history = _keep_until(jsonl, resume_step)
        self._jsonl = jsonl.open("a")
        # Held-out evaluations (`eval_every`) go beside it, one row per evaluation.
        self.eval_history = _keep_until(jsonl.with_name("eval.jsonl"), resume_step)
        self._eval_jsonl = jsonl.with_name("eval.jsonl").open("a")
        if not resume_step:
            shutil.rmtree(events, ignore_errors=True)  # a fresh start: no events of an older config
        events.mkdir(parents=True, exist_ok=True)
        # The default file name has one-second resolution: a resume within the same second
        # would overwrite the earlier file. A nanosecond suffix keeps names unique and in order.
        self._tb = SummaryWriter(logdir=str(events), purge_step=resume_step + 1 if resume_step else None,
                                 flush_secs=30, filename_suffix=f".{time.time_ns()}")

    def write(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if not self._write:
            return
        self._jsonl.write(json.dumps(row) + "\n")
        step = int(row["step"])
        for name, value in row.items():
            if name != "step":
                self._tb.add_scalar(name, value, global_step=step)

    def write_eval(self, row: dict[str, Any]) -> None:
        """A held-out evaluation at `row["step"]`; TensorBoard names its scalars `eval/…`."""
        self.eval_history.append(row)
        if not self._write:
            return
        self._eval_jsonl.write(json.dumps(row) + "\n")
        self._eval_jsonl.flush()
        for name, value in row.items():
            if name != "step":
                self._tb.add_scalar(f"eval/{name}", value, global_step=int(row["step"]))

    def flush(self) -> None:
        if not self._write:
            return
        self._jsonl.flush()
        self._tb.flush()

    def close(self) -> None:
        if not self._write:
            return
        self._jsonl.close()
        self._eval_jsonl.close()
        self._tb.close()


def _rows_until(path: Path, resume_step: int) -> list[dict[str, float]]:
    """The rows of `path` up to `resume_step` (none on a fresh start)."""
    return [r for r in read_metrics(path) if r.get("step", 0) <= resume_step] if resume_step else []


def _keep_until(path: Path, resume_step: int) -> list[dict[str, float]]:
    """Rewrite `path` with its rows up to `resume_step` (none on a fresh start); return them."""
    kept = _rows_until(path, resume_step)
    with path.open("w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in kept)
    return kept

"""The loop of one stage: dispatch steps, fetch metrics per window, checkpoint, stop cleanly.

`DurableLoop` is that loop for every stage kind; `StageLoop` (here) and
`RLLoop` (`runtime/rl_loop.py`) only say what one dispatch does.

The loop starts from a fresh train state or the newest good checkpoint (the
data stream then starts at the checkpoint's cursor), dispatches
`steps_per_call` optimizer steps at a time and keeps each dispatch's metrics
on the device until the end of a log window, so dispatch runs ahead of the
host. Checkpoints happen at dispatch boundaries, every `checkpoint_every`
steps, every `checkpoint_minutes` minutes and at the end; the pending
metrics are fetched (and checked finite) before each save, so a checkpoint
never holds a state that already went NaN.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import jax
import numpy as np

from tunix_dsl.compiler.program import StageProgram
from tunix_dsl.compiler.train_step import TrainState
from tunix_dsl.runtime.batches import BatchStream
from tunix_dsl.runtime.checkpoint import StageCheckpoints
from tunix_dsl.runtime.metrics import MetricsSink
from tunix_dsl.runtime.preemption import Preempted, StopSignals
from tunix_dsl.runtime.progress import RunLog, StageProgress
from tunix_dsl.schemas.stages import TrainingConfig

DispatchHook = Callable[[str, int], None]


class NonFiniteLoss(Exception):
    """The loss or the gradient went NaN/Inf; the message names the stage, the step and the last
    good checkpoint. A non-finite gradient already poisoned that step's parameters, so it stops
    the stage as well."""


@dataclass
class LoopResult:
    history: list[dict[str, float]]
    tokens: int  # tokens seen in this invocation
    wall_s: float  # this invocation's loop time (compilation of the first dispatch included)
    tokens_per_s: float  # steady throughput: after the first log window (compilation excluded)
    start_step: int
    skipped: int = 0  # updates dropped by on_nonfinite = "skip", over the whole stage
    updates: int = 0  # optimizer updates the whole stage makes (steps × updates per step)


P = TypeVar("P")  # the stage's programs: StageProgram, RLProgram
C = TypeVar("C", bound=TrainingConfig)  # the stage's config


@dataclass
class DurableLoop(Generic[P, C]):
    """What every stage loop shares, supervised or RL: the dispatch loop with its log windows,
    held-out evaluation, both checkpoint triggers, the stop on a signal, the finite check before a
    save and the count of skipped updates. A subclass says how one dispatch runs (`dispatch`)."""

    name: str
    config: C
    program: P
    stream: BatchStream
    checkpoints: StageCheckpoints
    sink: MetricsSink
    progress: StageProgress
    log: RunLog
    signals: StopSignals
    fingerprint: str
    on_dispatch: DispatchHook | None = None
    evaluate: Callable[[TrainState], dict[str, float]] | None = None  # held-out metrics of a state
    clock: Callable[[], float] = time.monotonic  # seconds; tests inject a fake one

    eval_keys: ClassVar[tuple[str, ...]] = ("loss", "accuracy")  # logged from a held-out row
    blame: ClassVar[str] = "check the data"  # the fix a non-finite loss suggests

    def dispatch(self, state: TrainState, done: int) -> tuple[TrainState, int]:
        """Run the next steps from `done` on; queue their metrics in `_pending`: (new state, steps)."""
        raise NotImplementedError

    def updates_per_step(self) -> int:
        """Optimizer updates one step makes (RL: μ passes), the unit `skipped` counts in."""
        return 1

    def throughput(self, started: float) -> float:
        """Tokens/s since the first window (so the first dispatch's compile does not count)."""
        now = time.perf_counter()
        t0, n0 = self._rate_origin if self._rate_origin is not None else (started, 0)
        if now - t0 < 1e-6 or self._tokens == n0:
            t0, n0 = started, 0
        return (self._tokens - n0) / max(now - t0, 1e-9)

    def run(self, state: TrainState, start_step: int) -> tuple[TrainState, LoopResult]:
        config = self.config
        total, every = config.steps, config.checkpoint_every
        log_every = max(1, total // 10)
        # (first step, steps, host metrics, device metrics with one value per step or a scalar)
        self._pending: list[tuple[int, int, dict[str, float], dict[str, Any]]] = []
        self._saved_step = start_step  # nothing new to save before the first dispatch
        self._last_good = start_step if start_step else None
        self._tokens = 0
        self._rate_origin: tuple[float, int] | None = None  # (time, tokens) after the first window
        started = time.perf_counter()
        self._restart_timer()
        done = start_step
        stop, _ = self.signals.poll()  # agreed by every process of a job (a collective then)
        while done < total and stop is None:
            state, k = self.dispatch(state, done)
            done += k
            self.progress.advance(done)
            if self.on_dispatch is not None:
                self.on_dispatch(self.name, done)
            if _crossed(log_every, done, k) or done == k + start_step or done == total:
                self._flush(started)
            if self.evaluate is not None and (_crossed(config.eval_every, done, k) or done == total):
                row = {"step": done, **self.evaluate(state)}
                self.sink.write_eval(row)
                self.log(f"  {self.name} eval at step {done}: "
                         + " ".join(f"{n}={v:.4g}" for n, v in row.items() if n in self.eval_keys))
            stop, due = self.signals.poll(self.clock() >= self._next_save_time)
            if _crossed(every, done, k) or due:
                self.save(state, done, started)
        if stop is not None and done < total:
            if done != self._saved_step:
                self.save(state, done, started)
            self.checkpoints.wait()
            saved = "checkpoint saved" if done else "nothing to save yet"
            raise Preempted(f"stopped by {stop} in stage `{self.name}` at step "
                            f"{done}/{total}; {saved}; run the same command to resume")
        if done != self._saved_step:
            self.save(state, done, started)  # the end: a kill while writing the output loses nothing
        self.checkpoints.wait()
        updates = total * self.updates_per_step()
        skipped = int(sum(row.get("skipped", 0) for row in self.sink.history))
        if skipped >= updates:
            # Nothing was learned: handing the unchanged start model on as "trained" would hide it.
            raise NonFiniteLoss(
                f"stage `{self.name}`: all {updates} updates were skipped (non-finite loss or gradient "
                "with on_nonfinite = \"skip\"), so its output would be the untrained starting model; "
                f"the stage is not marked finished; lower the learning rate or {self.blame}"
            )
        wall = time.perf_counter() - started
        return state, LoopResult(self.sink.history, self._tokens, wall, self.throughput(started), start_step,
                                 skipped, updates)

    def save(self, state: TrainState, step: int, started: float) -> None:
        self._flush(started)  # raises on a non-finite loss: a bad state is never saved
        self.checkpoints.save(step, state, {
            "fingerprint": self.fingerprint,
            "cursor": self.stream.cursor,
            "stage": self.name,
        })
        self._saved_step = self._last_good = step
        self._restart_timer()  # whatever triggered this save, the minutes count from here

    def _restart_timer(self) -> None:
        # On top of `checkpoint_every` steps: a long stage never loses more than this much work.
        minutes = self.config.checkpoint_minutes
        self._next_save_time = self.clock() + 60 * minutes if minutes > 0 else math.inf

    def _flush(self, started: float) -> None:
        # Metrics stay on device until here, so dispatch runs ahead of the host.
        last = None
        per_step = self.updates_per_step()
        for first, k, host, device_metrics in self._pending:
            fetched = {n: np.asarray(v).reshape(-1) for n, v in jax.device_get(device_metrics).items()}
            for i in range(k):
                row = {"step": first + i, **host, **{n: float(v[i]) for n, v in fetched.items()}}
                bad = {n: row[n] for n in ("loss", "grad_norm") if n in row and not math.isfinite(row[n])}
                if row.get("skipped"):  # on_nonfinite = "skip": the update was dropped
                    why = ", ".join(f"{n} = {v}" for n, v in bad.items()) or "the update overflowed"
                    what = "skipped" if per_step == 1 else f"{int(row['skipped'])} of {per_step} updates skipped"
                    self.log(f"warning: stage `{self.name}`: step {row['step']} {what} ({why})")
                elif bad:
                    self.sink.flush()
                    kept = (f"the last good checkpoint is step {self._last_good}"
                            if self._last_good is not None else "no checkpoint was saved yet")
                    values = ", ".join(f"{n} = {v}" for n, v in bad.items())
                    raise NonFiniteLoss(
                        f"stage `{self.name}`: {values} at step {row['step']}; stopped ({kept}); "
                        f"lower the learning rate or {self.blame}"
                    )
                self.sink.write(row)
                last = row
        self._pending.clear()
        self.sink.flush()
        if last is not None:
            self.progress.window(last, self.throughput(started))
            if self._rate_origin is None:
                self._rate_origin = (time.perf_counter(), self._tokens)


@dataclass
class StageLoop(DurableLoop[StageProgram, TrainingConfig]):
    """A supervised stage: `steps_per_call` fused optimizer steps per dispatch."""

    def dispatch(self, state: TrainState, done: int) -> tuple[TrainState, int]:
        program = self.program
        k = min(self.config.steps_per_call, self.config.steps - done)
        batch = self.stream.next_batches(k)
        batch.pop("example_ids", None)
        # Several processes: scaled from this process's rows (each sees only its share).
        local = sum(np.sum(v) for n, v in batch.items() if n.endswith("attention_mask"))
        self._tokens += int(round(local / self.stream.share))
        state, metrics = program.step(state, program.split.frozen, program.put_batch(batch))
        self._pending.append((done + 1, k, {}, metrics))
        return state, k


def _crossed(interval: int, done: int, k: int) -> bool:
    """Whether the dispatch that took the step count from `done - k` to `done` passed a multiple."""
    return interval > 0 and done // interval != (done - k) // interval

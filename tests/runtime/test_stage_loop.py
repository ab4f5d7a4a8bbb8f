"""The stage loop around fake programs: the checkpoint triggers on a fake clock
(`checkpoint_minutes` saves once per interval, not on every step after the first interval, and any
save restarts the interval) and the count of updates skipped by `on_nonfinite = "skip"`."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tunix_dsl.runtime.training import LoopResult, NonFiniteLoss, StageLoop


@dataclass
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeProgram:
    """Each optimizer step takes `seconds_per_step` on the fake clock."""

    clock: FakeClock
    seconds_per_step: float
    skipped_steps: frozenset[int] = frozenset()  # these steps report a dropped update
    split: Any = field(default_factory=lambda: SimpleNamespace(frozen=None))

    def put_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return batch

    def step(self, state: int, _frozen: Any, batch: dict[str, np.ndarray]) -> tuple[int, dict[str, np.ndarray]]:
        k = len(batch["attention_mask"])
        self.clock.now += k * self.seconds_per_step
        steps = range(state + 1, state + k + 1)
        skipped = np.asarray([s in self.skipped_steps for s in steps], np.float32)
        return state + k, {"loss": np.where(skipped > 0, np.nan, 1.0).astype(np.float32), "skipped": skipped}


@dataclass
class FakeStream:
    cursor: int = 0

    def next_batches(self, k: int) -> dict[str, np.ndarray]:
        self.cursor += k
        return {"attention_mask": np.ones((k, 2), np.int32)}


@dataclass
class FakeCheckpoints:
    saved: list[int] = field(default_factory=list)

    def save(self, step: int, state: int, meta: dict[str, Any]) -> None:
        assert state == step  # the state saved is the one reached at that step
        self.saved.append(step)

    def wait(self) -> None:
        pass


@dataclass
class FakeSink:
    history: list[dict[str, float]] = field(default_factory=list)

    def write(self, row: dict[str, float]) -> None:
        self.history.append(row)

    def write_eval(self, row: dict[str, float]) -> None:
        raise AssertionError("no held-out evaluation configured")

    def flush(self) -> None:
        pass


class FakeProgress:
    def advance(self, step: int) -> None:
        pass

    def window(self, row: dict[str, float], rate: float) -> None:
        pass


def run_loop(*, steps: int, every: int = 0, minutes: float = 0, seconds_per_step: float = 1.0,
             steps_per_call: int = 1, skipped: frozenset[int] = frozenset(),
             log: list[str] | None = None) -> tuple[LoopResult, list[int]]:
    """Run a stage loop of `steps` fake steps; its result and the steps at which it checkpointed."""
    clock = FakeClock()
    config = SimpleNamespace(steps=steps, checkpoint_every=every, checkpoint_minutes=minutes,
                             steps_per_call=steps_per_call, eval_every=0)
    checkpoints = FakeCheckpoints()
    loop = StageLoop("s", config, FakeProgram(clock, seconds_per_step, skipped), FakeStream(), checkpoints,
                     FakeSink(), FakeProgress(), (log if log is not None else []).append,
                     SimpleNamespace(requested=None), "fp", clock=clock)
    state, result = loop.run(0, 0)
    assert state == steps and len(result.history) == steps
    return result, checkpoints.saved


def saves(**kwargs: Any) -> list[int]:
    return run_loop(**kwargs)[1]


def test_time_trigger_saves_once_per_interval_not_every_step_after_it() -> None:
    # 400 one-second steps, a checkpoint every minute: 6 timed saves and the final one.
    assert saves(steps=400, every=0, minutes=1) == [60, 120, 180, 240, 300, 360, 400]


def test_tiny_interval_saves_each_dispatch_it_has_passed() -> None:
    # An interval shorter than a dispatch: one save per dispatch at most, never more.
    assert saves(steps=12, every=0, minutes=0.01, steps_per_call=4) == [4, 8, 12]


def test_step_trigger_saves_every_n_steps_and_restarts_the_timer() -> None:
    # Step saves every 50 s: the 60 s timer restarts at each of them and never fires.
    assert saves(steps=400, every=50, minutes=1) == list(range(50, 401, 50))


def test_both_triggers_together_each_save_restarts_the_minute() -> None:
    assert saves(steps=400, every=100, minutes=1) == [60, 100, 160, 200, 260, 300, 360, 400]


def test_timer_fires_at_the_first_dispatch_boundary_past_the_interval() -> None:
    # 4 steps of 10 s per dispatch: 80 s is the first boundary past 60 s, then 160 s, 240 s, ...
    assert saves(steps=400, every=0, minutes=1, seconds_per_step=10, steps_per_call=4) == list(
        range(8, 401, 8))


def test_minutes_zero_turns_the_timer_off() -> None:
    assert saves(steps=400, every=0, minutes=0, seconds_per_step=3600) == [400]


def test_skipped_updates_are_counted_and_logged() -> None:
    log: list[str] = []
    result, _ = run_loop(steps=10, skipped=frozenset({2, 7}), log=log)
    assert result.skipped == 2
    assert sum("skipped" in line for line in log) == 2


def test_a_stage_whose_every_update_was_skipped_fails() -> None:
    with pytest.raises(NonFiniteLoss, match=r"stage `s`: all 6 updates were skipped .* untrained "
                                            r"starting model; the stage is not marked finished"):
        run_loop(steps=6, steps_per_call=2, skipped=frozenset(range(1, 7)))

"""The stage loops around fake programs: the checkpoint triggers on a fake clock
(`checkpoint_minutes` saves once per interval, not on every step after the first interval, and any
save restarts the interval) and the count of updates skipped by `on_nonfinite = "skip"` — for the
supervised `StageLoop` and the RL `RLLoop` alike (both run on `DurableLoop`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tunix_dsl.runtime.preemption import StopSignals
from tunix_dsl.runtime.rl_loop import RLLoop
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
class FakeRLProgram:
    """One RL step: a rollout that takes `seconds_per_step` on the fake clock, no score program,
    an update of `iterations` passes of which those of `skipped_steps` are all dropped."""

    clock: FakeClock
    seconds_per_step: float
    skipped_steps: frozenset[int] = frozenset()
    iterations: int = 1
    split: Any = field(default_factory=lambda: SimpleNamespace(frozen=None))
    score: None = None
    prompts_per_step: int = 1

    def __post_init__(self) -> None:
        self.rl = SimpleNamespace(generations=2, iterations=self.iterations)
        self.sampling = SimpleNamespace(max_new_tokens=2)

    def put(self, batch: dict[str, Any]) -> dict[str, Any]:
        return batch

    def rollout(self, state: int, _frozen: Any, tokens: np.ndarray, _mask: np.ndarray, step: np.int32,
                draw: np.int32) -> dict[str, np.ndarray]:
        assert int(step) == state and int(draw) == 0
        self.clock.now += self.seconds_per_step
        return {"tokens": np.full((2, 3), 65, np.int32), "lengths": np.asarray([2, 1], np.int32)}

    def update(self, state: int, _frozen: Any, batch: dict[str, Any]) -> tuple[int, dict[str, np.ndarray]]:
        assert batch["rewards"].shape == (2,)
        dropped = state + 1 in self.skipped_steps
        return state + 1, {"loss": np.float32(np.nan if dropped else 1.0),
                           "skipped": np.float32(self.iterations if dropped else 0)}


class FakeTokenizer:
    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return bytes(ids).decode()


def fake_rewards(prompts: list[str], completions: list[str], lengths: np.ndarray,
                 columns: dict[str, list[Any]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    reward = np.asarray([float(len(c)) for c in completions], np.float32)
    return reward, {"length": reward}


@dataclass
class FakeStream:
    cursor: int = 0
    share: float = 1.0  # the whole batch is this process's

    def next_batches(self, k: int) -> dict[str, np.ndarray]:
        self.cursor += k
        return {"attention_mask": np.ones((k, 2), np.int32)}

    def next_batch(self) -> dict[str, np.ndarray]:  # an RL stage's prompts
        self.cursor += 1
        return {"tokens": np.ones((1, 2), np.int32), "attention_mask": np.ones((1, 2), np.int32),
                "example_ids": np.zeros(1, np.int64)}


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
             log: list[str] | None = None, rl: bool = False, iterations: int = 1) -> tuple[LoopResult, list[int]]:
    """Run a stage loop of `steps` fake steps (an RL loop when `rl`); its result and the steps at
    which it checkpointed."""
    clock = FakeClock()
    config = SimpleNamespace(steps=steps, checkpoint_every=every, checkpoint_minutes=minutes,
                             steps_per_call=steps_per_call, eval_every=0)
    checkpoints = FakeCheckpoints()
    common = (FakeStream(), checkpoints, FakeSink(), FakeProgress(), (log if log is not None else []).append,
              StopSignals(), "fp")
    loop: StageLoop | RLLoop
    if rl:
        program = FakeRLProgram(clock, seconds_per_step, skipped, iterations)
        loop = RLLoop("s", config, program, *common, clock=clock, rows=[{"prompt": "p", "answer": "A"}],
                      tokenizer=FakeTokenizer(), rewards=fake_rewards,  # type: ignore[arg-type]
                      row_name=lambda row: f"row {row + 1}")
    else:
        loop = StageLoop("s", config, FakeProgram(clock, seconds_per_step, skipped), *common, clock=clock)
    state, result = loop.run(0, 0)
    assert state == steps and len(result.history) == steps
    return result, checkpoints.saved


def saves(**kwargs: Any) -> list[int]:
    return run_loop(**kwargs)[1]


@pytest.mark.parametrize("rl", [False, True], ids=["supervised", "rl"])
def test_time_trigger_saves_once_per_interval_not_every_step_after_it(rl: bool) -> None:
    # 400 one-second steps, a checkpoint every minute: 6 timed saves and the final one.
    assert saves(steps=400, every=0, minutes=1, rl=rl) == [60, 120, 180, 240, 300, 360, 400]


def test_tiny_interval_saves_each_dispatch_it_has_passed() -> None:
    # An interval shorter than a dispatch: one save per dispatch at most, never more.
    assert saves(steps=12, every=0, minutes=0.01, steps_per_call=4) == [4, 8, 12]


@pytest.mark.parametrize("rl", [False, True], ids=["supervised", "rl"])
def test_step_trigger_saves_every_n_steps_and_restarts_the_timer(rl: bool) -> None:
    # Step saves every 50 s: the 60 s timer restarts at each of them and never fires.
    assert saves(steps=400, every=50, minutes=1, rl=rl) == list(range(50, 401, 50))


@pytest.mark.parametrize("rl", [False, True], ids=["supervised", "rl"])
def test_both_triggers_together_each_save_restarts_the_minute(rl: bool) -> None:
    assert saves(steps=400, every=100, minutes=1, rl=rl) == [60, 100, 160, 200, 260, 300, 360, 400]


def test_timer_fires_at_the_first_dispatch_boundary_past_the_interval() -> None:
    # 4 steps of 10 s per dispatch: 80 s is the first boundary past 60 s, then 160 s, 240 s, ...
    assert saves(steps=400, every=0, minutes=1, seconds_per_step=10, steps_per_call=4) == list(
        range(8, 401, 8))


@pytest.mark.parametrize("rl", [False, True], ids=["supervised", "rl"])
def test_minutes_zero_turns_the_timer_off(rl: bool) -> None:
    assert saves(steps=400, every=0, minutes=0, seconds_per_step=3600, rl=rl) == [400]


def test_skipped_updates_are_counted_and_logged() -> None:
    log: list[str] = []
    result, _ = run_loop(steps=10, skipped=frozenset({2, 7}), log=log)
    assert result.skipped == 2
    assert sum("skipped" in line for line in log) == 2


def test_a_stage_whose_every_update_was_skipped_fails() -> None:
    with pytest.raises(NonFiniteLoss, match=r"stage `s`: all 6 updates were skipped .* untrained "
                                            r"starting model; the stage is not marked finished"):
        run_loop(steps=6, steps_per_call=2, skipped=frozenset(range(1, 7)))


def test_rl_loop_timer_is_not_every_step_after_the_first_interval() -> None:
    # The RL loop reads the injected clock and the shared timer: 10 s rollouts, a checkpoint
    # every minute, so one save per 6 steps (and the last).
    assert saves(steps=30, every=0, minutes=1, seconds_per_step=10, rl=True) == [6, 12, 18, 24, 30]


def test_rl_skipped_updates_count_passes_and_are_logged() -> None:
    log: list[str] = []
    result, _ = run_loop(steps=10, skipped=frozenset({2, 7}), log=log, rl=True, iterations=3)
    assert (result.skipped, result.updates) == (6, 30)
    assert sum("3 of 3 updates skipped" in line for line in log) == 2


def test_an_rl_stage_whose_every_update_was_skipped_fails() -> None:
    with pytest.raises(NonFiniteLoss, match=r"stage `s`: all 8 updates were skipped .* check the rewards"):
        run_loop(steps=4, skipped=frozenset(range(1, 5)), rl=True, iterations=2)

"""The loop of one RL stage: rollout → score → host rewards → update, durable like training.py.

Per step the loop dispatches the rollout and the score programs, fetches the
completions (the score program keeps running meanwhile), decodes them, scores
them on the host (`runtime/rl_rewards.py`) and dispatches the update. The
rollout's PRNG key is derived from (stage seed, step) inside the program and the
data cursor is an integer, so a run resumed from a checkpoint (policy, critic,
optimizer state, RNG state, cursor) replays exactly the steps an uninterrupted
run takes. Device metrics stay on the device until a log window or a
checkpoint, where they are checked finite before anything is saved. With
`rollout = "async"` the rollouts of later steps run in a worker thread meanwhile
(`runtime/rl_async.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jax
import numpy as np

from tunix_dsl.compiler.rl_program import RLProgram
from tunix_dsl.compiler.rl_step import RLConfig
from tunix_dsl.compiler.train_step import TrainState
from tunix_dsl.data.tokenizers import Tokenizer
from tunix_dsl.runtime import rl_dynamic
from tunix_dsl.runtime.agent_env import PythonEnv, ToolsEnv
from tunix_dsl.runtime.distributed import agree, host_copy
from tunix_dsl.runtime.evaluation import completions_text
from tunix_dsl.runtime.rewards import RowName, score_rows
from tunix_dsl.runtime.rl_agent import StageAgent
from tunix_dsl.runtime.rl_async import AsyncRollouts, Prepared, snapshot
from tunix_dsl.runtime.rl_rewards import StageRewards
from tunix_dsl.runtime.training import DurableLoop, LoopResult
from tunix_dsl.schemas.stages import GRPOConfig


@dataclass(kw_only=True)
class RLLoop(DurableLoop[RLProgram, RLConfig]):
    """An RL stage: one rollout → score → rewards → update step per dispatch. The loop itself
    (windows, checkpoint triggers, signals, finite checks) is `DurableLoop`'s."""

    rows: list[dict[str, Any]]  # the dataset's rows (reward columns), by row id; `stream` yields prompts
    tokenizer: Tokenizer
    rewards: StageRewards
    row_name: RowName  # row id -> where the row is (a reward error names it)
    agent: StageAgent | None = None  # with an `environment`: multi-turn episodes (rl_agent.py)
    _async: AsyncRollouts | None = field(default=None, init=False)  # rollout = "async", set by run

    eval_keys: ClassVar[tuple[str, ...]] = ("reward",)
    blame: ClassVar[str] = "check the rewards"

    def run(self, state: TrainState, start_step: int) -> tuple[TrainState, LoopResult]:
        self._rollout_s = 0.0
        self._async = None
        if getattr(self.config, "rollout", "sync") == "async":
            assert not getattr(self.config, "dynamic_sampling", False), "async + dynamic_sampling (TNX520)"
            self._async = AsyncRollouts(int(self.config.max_staleness),
                                        self.checkpoints.directory.parent / "async_rollouts",
                                        self.produce, self.program.put)
            if start_step and not self._async.resume(start_step):
                self.log(f"  {self.name}: no async rollouts saved with checkpoint {start_step}; "
                         "the first steps roll out on the restored weights")
        held_out: Callable[[TrainState], dict[str, float]] | None = self.evaluate
        if self._async is not None and held_out is not None:
            self.evaluate = self.drained(held_out, self._async)
        try:
            return super().run(state, start_step)
        finally:
            self.evaluate = held_out
            if self._async is not None:
                self._async.close()

    @staticmethod
    def drained(evaluate: Callable[[TrainState], dict[str, float]], pipe: AsyncRollouts
                ) -> Callable[[TrainState], dict[str, float]]:
        """Held-out episodes share the environment (tool pool, its call counts) with the
        worker's: they run once the rollouts in flight are done, never beside them."""
        def run(state: TrainState) -> dict[str, float]:
            pipe.wait()
            return evaluate(state)
        return run

    def save(self, state: TrainState, step: int, started: float) -> None:
        if self._async is not None:  # the rollouts in flight are part of the resumable state
            self._async.save(step)
        super().save(state, step, started)
        if self._async is not None:
            checkpoints = self.checkpoints.directory
            self._async.prune(lambda s: s == step or (checkpoints / str(s)).is_dir())

    def dispatch(self, state: TrainState, done: int) -> tuple[TrainState, int]:
        state, host, device = self.step(state, done)
        self._pending.append((done + 1, 1, host, device))
        return state, 1

    def updates_per_step(self) -> int:
        return int(self.program.rl.iterations)

    def throughput(self, started: float) -> float:
        """Rollout tokens per second of rollout (the update's time is not generation's)."""
        return self._tokens / max(self._rollout_s, 1e-9)

    def step(self, state: TrainState, done: int
             ) -> tuple[TrainState, dict[str, float], dict[str, jax.Array]]:
        """One RL step: returns the new state, host metrics and (still on device) update metrics."""
        if self._async is not None:
            return self.async_step(state, done)
        program = self.program
        frozen = program.split.frozen
        if getattr(self.config, "dynamic_sampling", False):
            batch, reward, parts, lengths, extra = self.dynamic_batch(state, done)
            scores = program.score(state, frozen, batch) if program.score is not None else {}
            batch = {**batch, **scores}
        else:
            rollout, row_ids = self.sample(state, done, 0)
            # dispatched before the host work below: the score program runs meanwhile
            scores = program.score(state, frozen, rollout) if program.score is not None else {}
            reward, parts, lengths = self.score_on_host(rollout, row_ids)
            batch = {**rollout, **scores, **program.put({"rewards": reward})}
            extra = {}
        state, metrics = program.update(state, frozen, batch)
        return state, self.host_metrics(reward, parts, lengths, extra), metrics

    def async_step(self, state: TrainState, done: int
                   ) -> tuple[TrainState, dict[str, float], dict[str, jax.Array]]:
        """Take step `done`'s rollout, queue the one `max_staleness` steps ahead on a copy of
        the current weights, and dispatch the update while the worker generates."""
        pipe, total = self._async, int(self.config.steps)
        assert pipe is not None
        weights = None
        if not len(pipe):  # a fresh start: the first rollouts come from the starting weights
            weights = snapshot(state)
            for ahead in range(done, min(done + pipe.depth, total)):
                pipe.submit(weights, done, ahead, self.stream.next_batch())
        ready = pipe.take(done)
        if done + pipe.depth < total:
            weights = weights if weights is not None else snapshot(state)
            pipe.submit(weights, done, done + pipe.depth, self.stream.next_batch())
        state, metrics = self.program.update(state, self.program.split.frozen, ready.batch)
        return state, {**ready.host, "rollout_staleness": float(done - ready.behaviour)}, metrics

    def produce(self, weights: TrainState, behaviour: int, step: int,
                prompts: Mapping[str, np.ndarray]) -> Prepared:
        """The worker's job: rollout, score (behaviour log-probs) and host rewards of one step."""
        program = self.program
        rollout, row_ids = self.sample(weights, step, 0, prompts)
        scores = program.score(weights, program.split.frozen, rollout) if program.score is not None else {}
        reward, parts, lengths = self.score_on_host(rollout, row_ids)
        batch = {**rollout, **scores, **program.put({"rewards": reward})}
        return Prepared(step, behaviour, batch, self.host_metrics(reward, parts, lengths, {}))

    def host_metrics(self, reward: np.ndarray, parts: dict[str, np.ndarray], lengths: np.ndarray,
                     extra: dict[str, float]) -> dict[str, float]:
        if self.agent is not None:
            extra = {**extra, **self.agent.metrics(self._episodes)}
        return {
            "reward": float(reward.mean()),
            "reward_std": float(reward.std()),
            **{f"reward/{name}": float(v.mean()) for name, v in parts.items()},
            "completion_length": float(lengths.mean()),
            "completion_length_max": float(lengths.max()),
            "rollout_tokens_per_s": self._step_tokens / max(self._step_s, 1e-9),
            **extra,
        }

    def sample(self, state: TrainState, done: int, draw: int, batch: Mapping[str, np.ndarray] | None = None
               ) -> tuple[dict[str, jax.Array], np.ndarray]:
        """Dispatch the rollout of `batch` (default: the next prompts); (rollout batch on device,
        row id per row)."""
        program = self.program
        batch = self.stream.next_batch() if batch is None else batch
        row_ids = np.repeat(batch["example_ids"], program.rl.generations)
        self._t0 = time.perf_counter()
        if self.agent is not None:  # episodes run on the host between device turns
            rows = [self.rows[int(r)] for r in row_ids]
            rollout, self._episodes = self.agent.sample(program, state, batch, rows, done, draw)
            return rollout, row_ids
        prompts = program.put({"tokens": batch["tokens"], "attention_mask": batch["attention_mask"]})
        rollout = program.rollout(state, program.split.frozen, prompts["tokens"], prompts["attention_mask"],
                                  np.int32(done), np.int32(draw))
        return rollout, row_ids

    def score_on_host(self, rollout: dict[str, jax.Array], row_ids: np.ndarray
                      ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Fetch and decode the completions, score them: (rewards, rewards by name, lengths)."""
        if self.agent is not None:  # rewards score each episode's final answer
            self._step_s = time.perf_counter() - self._t0
            lengths = self._episodes.own_lengths
            texts = self._episodes.final_texts
        else:
            fetched = host_copy((rollout["tokens"], rollout["lengths"]))  # every process: all rows
            self._step_s = time.perf_counter() - self._t0
            completion = np.asarray(fetched[0])[:, -self.program.sampling.max_new_tokens:]
            lengths = np.asarray(fetched[1])
            texts = completions_text(completion, lengths, self.tokenizer)
        self._step_tokens = int(lengths.sum())
        self._tokens += self._step_tokens
        self._rollout_s += self._step_s
        chosen = [self.rows[int(r)] for r in row_ids]
        columns = {c: [row.get(c) for row in chosen] for c in chosen[0]}
        reward, parts = score_rows(self.rewards, [row["prompt"] for row in chosen], texts, lengths, columns,
                                   lambda i: self.row_name(int(row_ids[i])))
        if self.agent is not None and isinstance(self.agent.rollout.env, PythonEnv):
            parts["environment"] = self._episodes.rewards
            reward = reward + self._episodes.rewards
        elif self.agent is not None and isinstance(self.agent.rollout.env, ToolsEnv) \
                and self.agent.rollout.env.call_reward:  # `call_reward` per call that ran
            parts["tool_calls"] = self._episodes.rewards
            reward = reward + self._episodes.rewards
        # Several processes: each scored every row; the update's batch takes each process's
        # shards from its own copy, so the copies must be the same.
        agree(f"the rewards of stage `{self.name}` (a reward must score alike on every host: "
              "no unseeded randomness, clocks or per-host state)", reward.tobytes().hex())
        return reward, parts, lengths

    def dynamic_batch(self, state: TrainState, done: int) -> tuple[
            dict[str, jax.Array], np.ndarray, dict[str, np.ndarray], np.ndarray, dict[str, float]]:
        """Draw rollout batches until B groups have differing rewards (or `max_draws`), keep those."""
        group, wanted = self.program.rl.generations, self.program.prompts_per_step
        assert isinstance(self.config, GRPOConfig), "dynamic sampling is a grpo field"
        draws: list[dict[str, np.ndarray]] = []
        rewards, parts, lengths = [], [], []
        tokens, seconds = 0, 0.0
        for draw in range(int(self.config.max_draws)):
            rollout, row_ids = self.sample(state, done, draw)
            reward, named, length = self.score_on_host(rollout, row_ids)
            tokens, seconds = tokens + self._step_tokens, seconds + self._step_s
            draws.append({**{n: np.asarray(v) for n, v in host_copy(rollout).items()}, "rewards": reward})
            rewards.append(reward)
            parts.append(named)
            lengths.append(length)
            if rl_dynamic.enough(rewards, group, wanted):
                break
        self._step_tokens, self._step_s = tokens, seconds
        chosen = rl_dynamic.select_groups(rewards, group, wanted)
        varied = sum(bool(rl_dynamic.varied_groups(rewards[d], group)[g]) for d, g in chosen)
        batch = self.program.put(rl_dynamic.gather_rows(draws, chosen, group))
        drawn = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        extra = {"dynamic/draws": float(len(draws)), "dynamic/varied_groups": float(varied),
                 "dynamic/equal_groups": float(wanted - varied)}
        return batch, np.concatenate(rewards), drawn, np.concatenate(lengths), extra

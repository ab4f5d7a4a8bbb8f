"""The loop of one RL stage: rollout → score → host rewards → update, durable like training.py.

Per step the loop dispatches the rollout and the score programs, fetches the
completions (the score program keeps running meanwhile), decodes them, scores
them on the host (`runtime/rl_rewards.py`) and dispatches the update. The
rollout's PRNG key is derived from (stage seed, step) inside the program and the
data cursor is an integer, so a run resumed from a checkpoint (policy, critic,
optimizer state, RNG state, cursor) replays exactly the steps an uninterrupted
run takes. Device metrics stay on the device until a log window or a
checkpoint, where they are checked finite before anything is saved.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from tunix_dsl.runtime import rl_dynamic
from tunix_dsl.runtime.checkpoint import StageCheckpoints
from tunix_dsl.runtime.data import BatchStream
from tunix_dsl.runtime.evaluation import completions_text
from tunix_dsl.runtime.metrics import MetricsSink
from tunix_dsl.runtime.preemption import Preempted, StopSignals
from tunix_dsl.runtime.progress import RunLog, StageProgress
from tunix_dsl.runtime.rl_rewards import StageRewards
from tunix_dsl.runtime.training import LoopResult, NonFiniteLoss, _crossed
from tunix_dsl.tokenizers import Tokenizer


@dataclass
class RLLoop:
    name: str
    config: Any
    program: Any  # compiler.rl_program.RLProgram
    stream: BatchStream  # prompts; `batch_size` = prompts per step
    rows: list[dict[str, Any]]  # the dataset's rows (reward columns), by row id
    tokenizer: Tokenizer
    rewards: StageRewards
    checkpoints: StageCheckpoints
    sink: MetricsSink
    progress: StageProgress
    log: RunLog
    signals: StopSignals
    fingerprint: str
    on_dispatch: Callable[[str, int], None] | None = None
    evaluate: Callable[[Any], dict[str, float]] | None = None  # held-out reward of a state

    def run(self, state: Any, start_step: int) -> tuple[Any, LoopResult]:
        total, every = self.config.steps, self.config.checkpoint_every
        log_every = max(1, total // 10)
        self._pending: list[tuple[dict[str, float], dict[str, jax.Array]]] = []
        self._saved_step = start_step
        self._last_good = start_step if start_step else None
        self._tokens, self._rollout_s = 0, 0.0
        started = time.perf_counter()
        minutes = self.config.checkpoint_minutes
        next_save_time = time.monotonic() + 60 * minutes if minutes > 0 else math.inf
        done = start_step
        while done < total and self.signals.requested is None:
            state, host, device = self.step(state, done)
            done += 1
            self._pending.append(({"step": done, **host}, device))
            self.progress.advance(done)
            if self.on_dispatch is not None:
                self.on_dispatch(self.name, done)
            if _crossed(log_every, done, 1) or done == start_step + 1 or done == total:
                self._flush()
            if self.evaluate is not None and (_crossed(self.config.eval_every, done, 1) or done == total):
                row = {"step": done, **self.evaluate(state)}
                self.sink.write_eval(row)
                self.log(f"  {self.name} eval at step {done}: reward={row['reward']:.4g}")
            if _crossed(every, done, 1) or time.monotonic() >= next_save_time:
                self.save(state, done)
                next_save_time = time.monotonic() + 60 * minutes if minutes > 0 else math.inf
        if self.signals.requested is not None and done < total:
            if done != self._saved_step:
                self.save(state, done)
            self.checkpoints.wait()
            saved = "checkpoint saved" if done else "nothing to save yet"
            raise Preempted(f"stopped by {self.signals.requested} in stage `{self.name}` at step "
                            f"{done}/{total}; {saved}; run the same command to resume")
        if done != self._saved_step:
            self.save(state, done)
        self.checkpoints.wait()
        wall = time.perf_counter() - started
        rate = self._tokens / max(self._rollout_s, 1e-9)
        return state, LoopResult(self.sink.history, self._tokens, wall, rate, start_step)

    def step(self, state: Any, done: int) -> tuple[Any, dict[str, float], dict[str, jax.Array]]:
        """One RL step: returns the new state, host metrics and (still on device) update metrics."""
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
        host = {
            "reward": float(reward.mean()),
            "reward_std": float(reward.std()),
            **{f"reward/{name}": float(v.mean()) for name, v in parts.items()},
            "completion_length": float(lengths.mean()),
            "completion_length_max": float(lengths.max()),
            "rollout_tokens_per_s": self._step_tokens / max(self._step_s, 1e-9),
            **extra,
        }
        return state, host, metrics

    def sample(self, state: Any, done: int, draw: int) -> tuple[dict[str, jax.Array], np.ndarray]:
        """Dispatch the rollout of the next prompts; (rollout batch on device, row id per row)."""
        program = self.program
        batch = self.stream.next_batch()
        prompts = program.put({"tokens": batch["tokens"], "attention_mask": batch["attention_mask"]})
        self._t0 = time.perf_counter()
        rollout = program.rollout(state, program.split.frozen, prompts["tokens"], prompts["attention_mask"],
                                  np.int32(done), np.int32(draw))
        return rollout, np.repeat(batch["example_ids"], program.rl.generations)

    def score_on_host(self, rollout: dict[str, jax.Array], row_ids: np.ndarray
                      ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Fetch and decode the completions, score them: (rewards, rewards by name, lengths)."""
        tokens, lengths = jax.device_get((rollout["tokens"], rollout["lengths"]))
        self._step_s = time.perf_counter() - self._t0
        completion = np.asarray(tokens)[:, -self.program.sampling.max_new_tokens:]
        lengths = np.asarray(lengths)
        self._step_tokens = int(lengths.sum())
        self._tokens += self._step_tokens
        self._rollout_s += self._step_s
        texts = completions_text(completion, lengths, self.tokenizer)
        chosen = [self.rows[int(r)] for r in row_ids]
        columns = {c: [row.get(c) for row in chosen] for c in chosen[0]}
        reward, parts = self.rewards([row["prompt"] for row in chosen], texts, lengths, columns, row_ids)
        return reward, parts, lengths

    def dynamic_batch(self, state: Any, done: int) -> tuple[dict[str, jax.Array], np.ndarray,
                                                            dict[str, np.ndarray], np.ndarray, dict[str, float]]:
        """Draw rollout batches until B groups have differing rewards (or `max_draws`), keep those."""
        group, wanted = self.program.rl.generations, self.program.prompts_per_step
        draws: list[dict[str, np.ndarray]] = []
        rewards, parts, lengths = [], [], []
        tokens, seconds = 0, 0.0
        for draw in range(int(self.config.max_draws)):
            rollout, row_ids = self.sample(state, done, draw)
            reward, named, length = self.score_on_host(rollout, row_ids)
            tokens, seconds = tokens + self._step_tokens, seconds + self._step_s
            draws.append({**jax.device_get(rollout), "rewards": reward})
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

    def save(self, state: Any, step: int) -> None:
        self._flush()  # raises on a non-finite loss: a bad state is never saved
        self.checkpoints.save(step, state, {
            "fingerprint": self.fingerprint, "cursor": self.stream.cursor, "stage": self.name,
        })
        self._saved_step = self._last_good = step

    def _flush(self) -> None:
        last = None
        for host, device in self._pending:
            row = {**host, **{n: float(v) for n, v in jax.device_get(device).items()}}
            bad = {n: row[n] for n in ("loss", "grad_norm") if n in row and not math.isfinite(row[n])}
            if row.get("skipped"):
                why = ", ".join(f"{n} = {v}" for n, v in bad.items()) or "the update overflowed"
                self.log(f"warning: stage `{self.name}`: step {row['step']}: {int(row['skipped'])} "
                         f"update(s) skipped ({why})")
            elif bad:
                self.sink.flush()
                kept = (f"the last good checkpoint is step {self._last_good}"
                        if self._last_good is not None else "no checkpoint was saved yet")
                values = ", ".join(f"{n} = {v}" for n, v in bad.items())
                raise NonFiniteLoss(f"stage `{self.name}`: {values} at step {row['step']}; stopped ({kept}); "
                                    "lower the learning rate or check the rewards")
            self.sink.write(row)
            last = row
        self._pending.clear()
        self.sink.flush()
        if last is not None:
            self.progress.window(last, self._tokens / max(self._rollout_s, 1e-9))

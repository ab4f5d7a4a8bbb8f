"""Tunix's `GRPOLearner` on the `bench/rl.py` sizes, driven one iteration at a time.

Runs in the Tunix venv (`/work/venvs/tunixpy/bin/python bench/_rl_tunix.py`), so
PyPI `google-tunix` never touches the project's environment. The line protocol
is `bench/_steps_tunix.py`'s:

    → {"build": true}      ← {"built": seconds incl. 2 warm-up iterations} or {"error": "…"}
    → {"run": n}           ← {"wall": {phase: [seconds per iteration, …]}, "cpu": {…}}
    → {"quit": true}

One iteration is one global step of the learner, run the way `RLLearner.train`
runs it (`_run_global_step`, then the global step count), on one batch of
PROMPTS prompts: the learner's own data thread generates G completions per
prompt with its vanilla rollout (Tunix's `Sampler`), scores them with the
reference model, computes rewards and advantages on the host, and the actor
trainer takes one optimizer step. Phases are timed by wrapping the cluster's
`generate` (rollout), `get_ref_per_token_logps` (reference, blocked on its
result) and `update_actor` (update) inside that real iteration; "iteration" is
the whole global step, ended when the new parameters exist.

Same work as ours: the llama3 model of `bench/_steps_tunix.py` (the
`bench/models.py` sizes), 32-token prompts (no bos, no padding), 16 new tokens
with an end id outside the vocabulary (no early stop), temperature 1 with no
top-p/top-k, β = 0.04 (a reference pass), μ = 1, the benchmark's AdamW, and the
same fixed per-completion rewards.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import _steps_common as common
import jax
import numpy as np
from _steps_tunix import llama
from jax.sharding import Mesh

warnings.simplefilter("ignore")

PROMPTS, GENERATIONS, PROMPT_LEN, NEW_TOKENS, BETA = 2, 4, 32, 16, 0.04
PHASES = ("rollout", "reference", "update", "iteration")
PAD = 0  # also bos: a false bos id makes Tunix's sampler add none
NEVER = common.VOCAB  # end-of-sequence id no model can sample: every completion is NEW_TOKENS long


class IdText:
    """A tokenizer for token ids themselves: id i is the character U+0100 + i, so a prompt of
    given ids round-trips exactly through Tunix's string-based rollout."""

    OFFSET = 0x100

    def encode(self, text: str, **_: Any) -> list[int]:
        return [ord(c) - self.OFFSET for c in text]

    def decode(self, ids: Any, **_: Any) -> str:
        return "".join(chr(self.OFFSET + int(i)) for i in ids)

    def bos_id(self) -> int:
        return PAD

    def eos_id(self) -> int:
        return NEVER

    def pad_id(self) -> int:
        return PAD


def prompt_texts(tokens: np.ndarray) -> list[str]:
    return [IdText().decode(row) for row in tokens]


def learner(prompts: np.ndarray, rewards: np.ndarray) -> Any:
    from tunix.rl import rl_cluster as rl_cluster_lib
    from tunix.rl.grpo import grpo_learner
    from tunix.rl.rollout import base_rollout

    # Auto axes, as Tunix expects (jax.make_mesh now defaults to explicit sharding)
    mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("fsdp", "tp"))
    rollout = base_rollout.RolloutConfig(
        max_tokens_to_generate=NEW_TOKENS, max_prompt_length=PROMPT_LEN, kv_cache_size=PROMPT_LEN + NEW_TOKENS,
        temperature=1.0, top_p=1.0, top_k=None, eos_tokens=[NEVER],
    )  # fmt: skip
    training = rl_cluster_lib.RLTrainingConfig(
        actor_optimizer=common.adamw(common.decays), eval_every_n_steps=10**9, max_steps=10**9,
        pbar_description=None,
    )  # fmt: skip
    cluster = rl_cluster_lib.RLCluster(
        actor=llama(0), reference=llama(0), tokenizer=IdText(),
        cluster_config=rl_cluster_lib.ClusterConfig(
            role_to_mesh={role: mesh for role in (rl_cluster_lib.Role.ACTOR, rl_cluster_lib.Role.REFERENCE,
                                                  rl_cluster_lib.Role.ROLLOUT)},
            rollout_engine="vanilla", training_config=training, rollout_config=rollout,
        ),
    )  # fmt: skip
    config = grpo_learner.GRPOConfig(num_generations=GENERATIONS, num_iterations=1, beta=BETA, epsilon=0.2)
    fixed = [float(r) for r in rewards]

    def reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return fixed[: len(completions)]

    return grpo_learner.GRPOLearner(cluster, config, reward)


class Driven:
    """A GRPO learner and its one batch; `iteration()` runs one global step, timed by phase."""

    def __init__(self, prompts: np.ndarray, rewards: np.ndarray):
        self.learner = learner(prompts, rewards)
        self.example = {"prompts": np.asarray(prompt_texts(prompts))}  # a leaf: the learner repeats it G times
        self.times: dict[str, tuple[float, float]] = {}
        cluster = self.learner.rl_cluster
        self._time(cluster, "generate", "rollout", block=False)  # returns host tokens and text
        self._time(cluster, "get_ref_per_token_logps", "reference", block=True)
        self._time(cluster, "update_actor", "update", block=False)  # the trainer waits for its loss
        # `train`'s set-up for a full batch that is one mini-batch and one micro-batch
        self.learner._rollout_micro_batch_size = PROMPTS
        self.learner._compute_logps_micro_batch_size = PROMPTS

    def _time(self, owner: Any, method: str, phase: str, block: bool) -> None:
        inner: Callable[..., Any] = getattr(owner, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start, start_cpu = time.perf_counter(), time.process_time()
            out = inner(*args, **kwargs)
            if block:
                jax.block_until_ready(out)
            self._add(phase, time.perf_counter() - start, time.process_time() - start_cpu)
            return out

        setattr(owner, method, timed)

    def _add(self, phase: str, wall: float, cpu: float) -> None:
        before = self.times.get(phase, (0.0, 0.0))
        self.times[phase] = (before[0] + wall, before[1] + cpu)

    def iteration(self) -> dict[str, tuple[float, float]]:
        """(wall, process CPU) seconds of each phase and of the whole iteration."""
        self.times = {}
        learner, cluster = self.learner, self.learner.rl_cluster
        start, start_cpu = time.perf_counter(), time.process_time()
        learner._run_global_step(PROMPTS, PROMPTS, PROMPTS, 1, itertools.repeat(self.example), None, False)
        if learner.should_sync_weights:
            cluster.sync_weights()
        else:
            cluster.global_steps += 1
        jax.block_until_ready(jax.tree.leaves(cluster.actor_trainer.model))
        self._add("iteration", time.perf_counter() - start, time.process_time() - start_cpu)
        return dict(self.times)


def serve(prompts: np.ndarray, rewards: np.ndarray) -> None:
    driven: Driven | None = None
    for line in sys.stdin:
        request = json.loads(line)
        if "build" in request:
            start = time.perf_counter()
            try:
                driven = Driven(prompts, rewards)
                for _ in range(2):  # compile + one warm iteration
                    driven.iteration()
                common.reply({"built": time.perf_counter() - start})
            except Exception as err:
                traceback.print_exc(file=sys.stderr)
                common.reply({"error": f"{type(err).__name__}: {err}"})
        elif "run" in request:
            assert driven is not None
            runs = [driven.iteration() for _ in range(int(request["run"]))]
            common.reply({clock: {phase: [r.get(phase, (0.0, 0.0))[i] for r in runs] for phase in PHASES}
                   for i, clock in enumerate(("wall", "cpu"))})
        else:
            return


def serve_the_parents_batch() -> None:
    arrays = json.loads(sys.stdin.readline())  # the parent's prompts and rewards: one batch for all sides
    serve(np.asarray(arrays["prompts"], np.int32), np.asarray(arrays["rewards"], np.float32))


if __name__ == "__main__":
    common.worker_main("tunix.rl.grpo.grpo_learner", serve_the_parents_batch)

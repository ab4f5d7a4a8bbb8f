"""RL benchmark (not a test): one GRPO iteration, ours vs a hand-written jitted baseline.

    python bench/rl.py [--rounds 5]

One iteration = 2 prompts × 4 generations, 32 prompt + 16 new tokens (no early
stop), β = 0.04 (a reference pass), μ = 1, on the `bench/models.py` sizes
(vocab 1024, 4 layers, d_model 256, 4 heads, MLP 1024, float32, untied):

- ours: the stage's own programs (`compiler.rl_program.lower_rl_stage`), built
  from the schema objects as `tnx run` builds them: rollout, score, update;
- hand: the same work written directly — `jax.jit(generate)`, a jitted
  reference forward, a jitted GRPO loss + AdamW step — the limit to match.

Phases are timed separately (each blocked on its result) and the whole
iteration without blocking between phases (the loop's real schedule: only the
completions come back to the host). Median per round, variants interleaved
round by round so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import _steps_common as common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _steps_common import table
from _steps_ours import ModelBank
from flax import nnx

from tunix_dsl.compiler import losses_rl
from tunix_dsl.compiler.rl_program import lower_rl_stage
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.models.sampler import SamplingConfig, generate
from tunix_dsl.schemas.base import ModelRef
from tunix_dsl.schemas.stages import GRPOConfig
from tunix_dsl.schemas.training import AdamW

PROMPTS, GENERATIONS, PROMPT_LEN, NEW_TOKENS, BETA = 2, 4, 32, 16, 0.04
ROWS = PROMPTS * GENERATIONS
PHASES = ("rollout", "score", "update", "iteration")


def grpo_config() -> GRPOConfig:
    return GRPOConfig(
        policy=ModelRef(kind="decl", name="m"), data="d", rewards=["r"], steps=common.TOTAL_STEPS,
        batch_size=ROWS, generations=GENERATIONS, max_prompt_len=PROMPT_LEN, max_new_tokens=NEW_TOKENS,
        beta=BETA, optimizer=AdamW(**common.optimizer_fields()),
    )  # fmt: skip


def prompts() -> tuple[np.ndarray, np.ndarray]:
    tokens = np.random.default_rng(0).integers(0, common.VOCAB, (PROMPTS, PROMPT_LEN), dtype=np.int32)
    return tokens, np.ones_like(tokens, bool)


REWARDS = np.random.default_rng(1).random(ROWS).astype(np.float32)


class Ours:
    """The GRPO stage's programs on live state: each phase a method that blocks on its output."""

    def __init__(self, bank: ModelBank):
        models = StageModels({"policy": bank.model(0), "reference": bank.model(0)})
        self.program = lower_rl_stage("bench", "grpo", grpo_config(), models, bank.mesh, stop_ids=(), pad_id=0)
        self.state = self.program.init_state()
        tokens, mask = prompts()
        self.prompts = self.program.put({"tokens": tokens, "attention_mask": mask})
        self.rewards = self.program.put({"rewards": REWARDS})
        self.batch = self.rollout()
        self.scores = self.score()

    def rollout(self) -> dict[str, jax.Array]:
        p = self.program
        out = p.rollout(self.state, p.split.frozen, self.prompts["tokens"], self.prompts["attention_mask"],
                        np.int32(0), np.int32(0))
        jax.device_get(out["tokens"])  # the loop fetches the completions for the rewards
        return out

    def score(self) -> dict[str, jax.Array]:
        return jax.block_until_ready(self.program.score(self.state, self.program.split.frozen, self.batch))

    def update(self) -> jax.Array:
        p = self.program
        self.state, metrics = p.update(self.state, p.split.frozen, {**self.batch, **self.scores, **self.rewards})
        return jax.block_until_ready(metrics["loss"])

    def iteration(self) -> jax.Array:
        p = self.program
        batch = p.rollout(self.state, p.split.frozen, self.prompts["tokens"], self.prompts["attention_mask"],
                          np.int32(1), np.int32(0))
        scores = p.score(self.state, p.split.frozen, batch)
        jax.device_get(batch["tokens"])  # host rewards happen here, while score runs
        self.state, metrics = p.update(self.state, p.split.frozen, {**batch, **scores, **self.rewards})
        return jax.block_until_ready(metrics["loss"])


class Hand:
    """The same iteration written directly with jax.jit: no stage machinery."""

    def __init__(self, bank: ModelBank):
        policy, reference = bank.model(0), bank.model(0)
        fresh = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731  (bank clones share buffers)
        self.graphdef, params, self.rest = nnx.split(policy, nnx.Param, ...)
        self.params, self.ref_params = fresh(params), fresh(nnx.state(reference, nnx.Param))
        self.tx = common.adamw(common.decays)
        self.opt = self.tx.init(self.params)
        self.sampling = SamplingConfig(NEW_TOKENS, temperature=1.0, num_samples=GENERATIONS, pad_id=0)
        tokens, mask = prompts()
        self.tokens, self.mask = jnp.asarray(tokens), jnp.asarray(mask)
        self.rewards = jnp.asarray(REWARDS)
        self._rollout = jax.jit(self._rollout_fn)
        self._score = jax.jit(self._score_fn)
        self._update = jax.jit(self._update_fn, donate_argnums=(0, 1))
        self.full = self.rollout()
        self.ref = self.score()

    def _rollout_fn(self, params, tokens, mask, key):
        out = generate(nnx.merge(self.graphdef, params, self.rest), tokens, mask, key, self.sampling)
        return jnp.concatenate([jnp.repeat(tokens, GENERATIONS, axis=0), out.tokens], axis=1)

    def _completion_logps(self, params, full):
        logps = nnx.merge(self.graphdef, params, self.rest).logps(full[:, :-1], full[:, 1:])
        return logps[:, -NEW_TOKENS:]

    def _score_fn(self, ref_params, full):
        return self._completion_logps(ref_params, full)

    def _update_fn(self, params, opt, full, ref, rewards):
        adv = losses_rl.group_advantages(rewards, GENERATIONS)[:, None]

        def loss(p):
            logps = self._completion_logps(p, full)
            ratio = jnp.exp(logps - jax.lax.stop_gradient(logps))
            kl = jnp.expm1(ref - logps) - (ref - logps)
            return jnp.mean(-adv * ratio + BETA * kl)  # every row has all NEW_TOKENS tokens

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt = self.tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, value

    def rollout(self) -> jax.Array:
        full = self._rollout(self.params, self.tokens, self.mask, jax.random.key(0))
        return jax.device_get(full)

    def score(self) -> jax.Array:
        return jax.block_until_ready(self._score(self.ref_params, self.full))

    def update(self) -> jax.Array:
        self.params, self.opt, value = self._update(self.params, self.opt, self.full, self.ref, self.rewards)
        return jax.block_until_ready(value)

    def iteration(self) -> jax.Array:
        full = self._rollout(self.params, self.tokens, self.mask, jax.random.key(1))
        ref = self._score(self.ref_params, full)
        jax.device_get(full)
        self.params, self.opt, value = self._update(self.params, self.opt, full, ref, self.rewards)
        return jax.block_until_ready(value)


def measure(variants: dict[str, object], rounds: int, per_round: int) -> dict[str, dict[str, float]]:
    fns: dict[tuple[str, str], Callable[[], object]] = {
        (name, phase): getattr(v, phase) for name, v in variants.items() for phase in PHASES}
    for fn in fns.values():  # warm-up (compiles)
        fn()
    times: dict[tuple[str, str], list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            start = time.perf_counter()
            for _ in range(per_round):
                fn()
            times[key].append((time.perf_counter() - start) / per_round)
    return {name: {phase: statistics.median(times[(name, phase)]) for phase in PHASES} for name in variants}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=3)
    args = parser.parse_args()
    bank = ModelBank()
    variants = {"ours": Ours(bank), "hand": Hand(bank)}
    result = measure(variants, args.rounds, args.per_round)
    rows = [(phase, f"{result['ours'][phase] * 1e3:.1f}", f"{result['hand'][phase] * 1e3:.1f}",
             f"{result['ours'][phase] / result['hand'][phase]:.2f}x") for phase in PHASES]
    print(f"one GRPO iteration: {PROMPTS} prompts × {GENERATIONS} generations, {PROMPT_LEN} prompt + "
          f"{NEW_TOKENS} new tokens, β = {BETA}, on {jax.devices()[0].platform} "
          f"({args.rounds} rounds × {args.per_round}, median ms)")
    table(rows, ("phase", "ours ms", "hand ms", "ours/hand"))


if __name__ == "__main__":
    main()

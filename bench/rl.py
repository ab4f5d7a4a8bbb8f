"""RL benchmark (not a test): one GRPO iteration, ours vs hand-written JAX vs Tunix's GRPOLearner.

    python bench/rl.py [--rounds 6] [--per-round 3] [--tunix-python /work/venvs/tunixpy/bin/python]

One iteration = 2 prompts × 4 generations, 32 prompt + 16 new tokens (no early
stop), β = 0.04 (a reference pass), μ = 1, on the `bench/models.py` sizes
(vocab 1024, 4 layers, d_model 256, 4 heads, MLP 1024, float32, untied), the
same prompts, initial weights, optimizer and fixed per-completion rewards on
every side:

- ours: the stage's own programs (`compiler.rl_program.lower_rl_stage`), built
  from the schema objects as `tnx run` builds them: rollout, score, update;
- hand: the same work written directly — `jax.jit(generate)`, a jitted
  reference forward, a jitted GRPO loss + AdamW step — the limit to match. Its
  forwards share each prompt's keys/values among the prompt's G completions,
  as ours do; "hand per-row" runs the plain full-row forwards instead (what
  sharing the prompt saves);
- tunix: PyPI `google-tunix`'s `GRPOLearner` with its vanilla rollout, run in
  its own venv by `bench/_rl_tunix.py`, one learner global step per iteration;
  its phases are timed inside those real iterations (rollout = `generate`,
  score = `get_ref_per_token_logps`, update = `update_actor`), and "host" is
  the rest of its iteration (text decoding, rewards, advantages, metrics).

Our and the hand-written phases are timed separately (each blocked on its
result); their "iteration" is the loop's real schedule, not blocked between
phases (only the completions come back to the host, the score runs while
rewards would). Each figure is the median over rounds of the mean of
`--per-round` calls; variants are interleaved round by round, the order
rotating, so machine noise hits all alike. Process CPU time (every thread of
the process) is printed beside wall time: on a shared machine it is the
steadier of the two.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import _steps_common as common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _steps_ours import ModelBank
from flax import nnx
from steps import TunixWorker

from tunix_dsl.compiler import losses_rl
from tunix_dsl.compiler.rl_program import lower_rl_stage
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.models.chunked import gather_logps
from tunix_dsl.models.kv_cache import init_cache
from tunix_dsl.models.sampler import SamplingConfig, generate
from tunix_dsl.schemas.base import ModelRef
from tunix_dsl.schemas.stages import GRPOConfig
from tunix_dsl.schemas.training import AdamW

PROMPTS, GENERATIONS, PROMPT_LEN, NEW_TOKENS, BETA = 2, 4, 32, 16, 0.04
ROWS = PROMPTS * GENERATIONS
PHASES = ("rollout", "score", "update", "iteration")
TUNIX_PHASES = {"rollout": "rollout", "score": "reference", "update": "update", "iteration": "iteration"}
TUNIX_TARGET, HAND_TARGET = 0.5, 1.1  # per iteration: ours ≤ 0.5x Tunix, ≤ 1.1x hand-written
TUNIX_PYTHON = "/work/venvs/tunixpy/bin/python"


def grpo_config() -> GRPOConfig:
    return GRPOConfig(
        policy=ModelRef(kind="decl", name="m"), data="d", rewards=["r"], steps=common.TOTAL_STEPS,
        batch_size=ROWS, generations=GENERATIONS, max_prompt_len=PROMPT_LEN, max_new_tokens=NEW_TOKENS,
        beta=BETA, optimizer=AdamW(**common.optimizer_fields()),
    )  # fmt: skip


# Prompt ids avoid 0, the pad id every side uses: no prompt position is masked anywhere.
PROMPT_TOKENS = np.random.default_rng(0).integers(1, common.VOCAB, (PROMPTS, PROMPT_LEN), dtype=np.int32)
REWARDS = np.random.default_rng(1).random(ROWS).astype(np.float32)


class Ours:
    """The GRPO stage's programs on live state: each phase a method that blocks on its output."""

    def __init__(self, bank: ModelBank):
        models = StageModels({"policy": bank.model(0), "reference": bank.model(0)})
        self.program = lower_rl_stage("bench", "grpo", grpo_config(), models, bank.mesh, stop_ids=(), pad_id=0)
        self.state = self.program.init_state()
        self.prompts = self.program.put({"tokens": PROMPT_TOKENS, "attention_mask": np.ones_like(PROMPT_TOKENS, bool)})
        self.rewards = self.program.put({"rewards": REWARDS})
        self.batch = self.rollout()
        self.scores = self.score()

    def rollout(self, step: int = 0) -> dict[str, jax.Array]:
        p = self.program
        out = p.rollout(self.state, p.split.frozen, self.prompts["tokens"], self.prompts["attention_mask"],
                        np.int32(step), np.int32(0))
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
    """The same iteration written directly with jax.jit: no stage machinery. `shared`: the
    prompt's forward runs once per group, its keys/values serving the G completions."""

    def __init__(self, bank: ModelBank, shared: bool):
        policy, reference = bank.model(0), bank.model(0)
        fresh = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731  (bank clones share buffers)
        self.shared = shared
        self.graphdef, params, self.rest = nnx.split(policy, nnx.Param, ...)
        self.params, self.ref_params = fresh(params), fresh(nnx.state(reference, nnx.Param))
        self.tx = common.adamw(common.decays)
        self.opt = self.tx.init(self.params)
        self.sampling = SamplingConfig(NEW_TOKENS, temperature=1.0, num_samples=GENERATIONS, pad_id=0)
        self.tokens = jnp.asarray(PROMPT_TOKENS)
        self.mask = jnp.ones_like(self.tokens, bool)
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
        model = nnx.merge(self.graphdef, params, self.rest)
        targets = full[:, -NEW_TOKENS:]
        if not self.shared:
            return model.logps(full[:, :-1], full[:, 1:])[:, -NEW_TOKENS:]
        # prompts [P rows] → cache; completions [G·P rows] attend to it (no padding anywhere)
        cache = init_cache(model.cfg, PROMPTS, PROMPT_LEN + NEW_TOKENS - 1)
        prompt_hidden, out = model.hidden(full[::GENERATIONS, :PROMPT_LEN], cache=cache)
        hidden, _ = model.hidden(full[:, PROMPT_LEN:-1], cache=out.cache.repeat(GENERATIONS))
        hidden = jnp.concatenate([jnp.repeat(prompt_hidden[:, -1:], GENERATIONS, axis=0), hidden], axis=1)
        return gather_logps(model.unembed(hidden), targets)

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


Times = dict[str, dict[str, list[float]]]  # phase -> clock ("wall", "cpu") -> seconds per call
Runner = Callable[[int], Times]


def in_process(variant: Ours | Hand) -> Runner:
    def run(n: int) -> Times:
        return {phase: common.time_steps(getattr(variant, phase), n) for phase in PHASES}

    for phase in PHASES:  # compile, then once more: a donated output may re-specialise a program
        getattr(variant, phase)()
        getattr(variant, phase)()
    return run


class TunixSide:
    """The Tunix subprocess (`_rl_tunix.py`) as a runner; `why` says why there is none."""

    def __init__(self, python: str):
        self.worker = TunixWorker(python, script="_rl_tunix.py")
        self.why = self.worker.why
        if self.worker.proc is None:
            return
        self.worker.send({"prompts": PROMPT_TOKENS.tolist(), "rewards": REWARDS.tolist()})
        self.worker.send({"build": True})  # builds and compiles while ours compile
        self.built: dict | None = None

    @property
    def ready(self) -> bool:
        if self.worker.proc is not None and self.built is None:
            self.built = self.worker.receive()
            if "error" in self.built:
                self.why = f"GRPOLearner failed: {self.built['error']} (log: {self.worker.log.name})"
                self.close()
            else:
                print(f"tunix build + 2 iterations: {self.built['built']:.0f} s")
        return self.worker.proc is not None

    def __call__(self, n: int) -> Times:
        self.worker.send({"run": n})
        reply = self.worker.receive()
        times = {ours: {clock: reply[clock][theirs] for clock in ("wall", "cpu")}
                 for ours, theirs in TUNIX_PHASES.items()}
        # the rest of Tunix's iteration: its host work around the three phases
        times["host"] = {clock: [i - r - s - u for i, r, s, u in zip(
            *(reply[clock][p] for p in ("iteration", "rollout", "reference", "update")), strict=True)]
            for clock in ("wall", "cpu")}  # fmt: skip
        return times

    def close(self) -> None:
        self.worker.close()


def interleaved(runners: dict[str, Runner], rounds: int, per_round: int) -> dict[str, Times]:
    """Per variant, phase and clock: the mean of `per_round` calls, once per round."""
    out: dict[str, Times] = {name: {} for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            for phase, clocks in runners[name](per_round).items():
                for clock, values in clocks.items():
                    out[name].setdefault(phase, {}).setdefault(clock, []).append(statistics.mean(values))
    return out


def versus(ours: float | None, other: float | None, target: float | None) -> str:
    """ours / other, and whether it meets `target` (iteration rows only)."""
    if ours is None or other is None:
        return "—"
    if target is None:
        return f"{ours / other:.2f}x"
    return f"{ours / other:.2f}x ({'met' if ours / other <= target else 'MISSED'}, ≤ {target:g})"


def report(times: dict[str, Times], clock: str, why_no_tunix: str) -> None:
    def ms(name: str, phase: str) -> float | None:
        values = times.get(name, {}).get(phase, {}).get(clock)
        return 1e3 * statistics.median(values) if values else None

    print(f"\n## {'process CPU' if clock == 'cpu' else 'wall'} time, median ms\n")
    rows = []
    for phase in (*PHASES[:3], "host", "iteration"):
        final = phase == "iteration"
        o, h, n, t = (ms(name, phase) for name in ("ours", "hand", "hand per-row", "tunix"))
        rows.append((phase, *(f"{v:.1f}" if v is not None else "—" for v in (o, h, n, t)),
                     versus(o, h, HAND_TARGET if final else None),
                     versus(o, t, TUNIX_TARGET if final else None) if why_no_tunix == "" or not final
                     else why_no_tunix))  # fmt: skip
    common.table(rows, ("phase", "ours", "hand", "hand per-row", "Tunix", "ours / hand", "ours / Tunix"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=3)
    parser.add_argument("--tunix-python", default=TUNIX_PYTHON)
    parser.add_argument("--no-tunix", action="store_true", help="skip the Tunix column")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    tunix = None if args.no_tunix else TunixSide(args.tunix_python)
    bank = ModelBank()
    runners: dict[str, Runner] = {
        "ours": in_process(Ours(bank)), "hand": in_process(Hand(bank, shared=True)),
        "hand per-row": in_process(Hand(bank, shared=False)),
    }  # fmt: skip
    if tunix is not None and tunix.ready:
        runners["tunix"] = tunix
    times = interleaved(runners, args.rounds, args.per_round)
    if tunix is not None:
        tunix.close()
    why = "skipped (--no-tunix)" if tunix is None else tunix.why
    print(f"\none GRPO iteration: {PROMPTS} prompts × {GENERATIONS} generations, {PROMPT_LEN} prompt + "
          f"{NEW_TOKENS} new tokens, β = {BETA}, μ = 1 ({args.rounds} rounds × {args.per_round} calls)")
    for clock in ("cpu", "wall"):
        report(times, clock, why)
    print(f"total {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())

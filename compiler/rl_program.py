"""Lowering an RL stage into its three programs: rollout, score, update.

    prompts [B, P] ──rollout──▶ completions [B·G, C] ──score──▶ old/ref log-probs, values
                                         │ host: decode, rewards [B·G]
                                         ▼
                 state ──update: μ passes × grad_accum micro-batches──▶ state, metrics

- *rollout*: the sampler's prefill + decode loop on the policy's current weights,
  one prefill per prompt shared by its G completions; the PRNG key is
  `fold_in(key(stage seed), step)`, so a resumed run draws the same completions.
  Its output is the assembled batch (prompt then completion, masks, positions).
- *score*: the frozen forwards of the kind (`RLStep.score`) in one program.
- *update*: advantages (`RLStep.prepare`), then μ optimizer updates, each summing
  the exact gradients of `grad_accum` micro-batches (a `lax.scan`), all in one
  program with the train state donated. Dropout is off in every RL program, so a
  ratio compares one function at two parameter values.

The train state is `compiler.train_step.TrainState`: checkpoints and restores
treat an RL stage like a supervised one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from tunix_dsl.compiler import sharding
from tunix_dsl.compiler.optim import Schedule, build_optimizer, build_schedule
from tunix_dsl.compiler.program import _state_shardings
from tunix_dsl.compiler.rl_step import Batch, Metrics, RLConfig, RLStep, Sums
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.compiler.stages.base import Container
from tunix_dsl.compiler.storage_dtype import frozen_in_compute_dtype
from tunix_dsl.compiler.train_step import (
    SplitModules,
    TrainState,
    accum_dtype,
    accumulate,
    split_modules,
)
from tunix_dsl.models.sampler import SamplingConfig, generate
from tunix_dsl.schemas.stages import GenerationConfig, TrainingConfig


def deterministic(modules: nnx.Module) -> nnx.Module:
    return nnx.view(modules, only=nnx.Dropout, deterministic=True, raise_if_not_found=False)


def assemble(prompt_tokens: jax.Array, prompt_mask: jax.Array, completion: jax.Array,
             lengths: jax.Array, generations: int) -> dict[str, jax.Array]:
    """Prompt rows repeated G times (each prompt's completions consecutive) + completions."""
    prompt_tokens = jnp.repeat(prompt_tokens, generations, axis=0)
    prompt_mask = jnp.repeat(prompt_mask, generations, axis=0)
    completion_mask = jnp.arange(completion.shape[1])[None, :] < lengths[:, None]
    mask = jnp.concatenate([prompt_mask, completion_mask], axis=1)
    return {
        "tokens": jnp.concatenate([prompt_tokens, completion], axis=1),
        "attention_mask": mask,
        "positions": jnp.maximum(jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1, 0),
        "completion_mask": completion_mask,
        "lengths": lengths,
    }


@dataclass
class RLProgram:
    """An RL stage's jitted programs and what running or planning them needs."""

    name: str
    kind: str
    rl: RLStep
    split: SplitModules
    optimizer: optax.GradientTransformation
    mesh: Mesh
    state_shardings: TrainState
    frozen_shardings: nnx.State
    sampling: SamplingConfig
    prompts_per_step: int
    rollout: Any  # jitted (state, frozen, prompt_tokens, prompt_mask, step, draw) -> batch
    score: Any  # jitted (state, frozen, batch) -> arrays (None when the kind needs no forward)
    update: Any  # jitted (state, frozen, batch) -> (state, metrics)
    fingerprint: str = ""

    def abstract_state(self) -> TrainState:
        return jax.eval_shape(
            lambda trainable, rest: TrainState(
                jnp.zeros((), jnp.int32), trainable, self.optimizer.init(trainable), rest),
            self.split.trainable, self.split.rest,
        )

    def init_state(self) -> TrainState:
        """A fresh state in its shardings; parameters copied, since the state is donated."""
        fresh = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731
        init = jax.jit(
            lambda trainable, rest: TrainState(
                jnp.zeros((), jnp.int32), fresh(trainable), self.optimizer.init(trainable), fresh(rest)),
            out_shardings=self.state_shardings,
        )
        return init(self.split.trainable, self.split.rest)

    def merged_modules(self, state: TrainState) -> Container:
        return nnx.merge(self.split.graphdef, state.trainable, self.split.frozen, state.rest)

    def put(self, arrays: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        return sharding.place(arrays, {n: sharding.batch_sharding(self.mesh, np.ndim(v)) for n, v in arrays.items()})


def sampling_config(config: GenerationConfig, generations: int, stop_ids: tuple[int, ...], pad_id: int) -> SamplingConfig:
    return SamplingConfig(
        max_new_tokens=int(config.max_new_tokens), temperature=float(config.temperature),
        top_k=int(config.top_k) or None, top_p=float(config.top_p) if config.top_p < 1 else None,
        num_samples=generations, stop_ids=tuple(stop_ids), pad_id=pad_id,
    )


def build_update(rl: RLStep, graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                 schedule: Schedule | None, micro_batches: int, skip_nonfinite: bool):
    """The update program's pure function: `(state, frozen, batch) -> (state, metrics)`."""

    def grads_of(trainable: nnx.State, frozen: nnx.State, rest: nnx.State, micro: Batch):
        def loss_of(trainable: nnx.State) -> tuple[jax.Array, Sums]:
            return rl.micro_loss(deterministic(nnx.merge(graphdef, trainable, frozen, rest)), micro)

        (loss, sums), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable)
        return grads, {**sums, "loss": loss}

    def one_pass(state: TrainState, frozen: nnx.State, micros: Batch) -> tuple[TrainState, Metrics]:
        if micro_batches == 1:
            grads, sums = grads_of(state.trainable, frozen, state.rest, {k: v[0] for k, v in micros.items()})
        else:
            def body(carry, micro):
                g, s = grads_of(state.trainable, frozen, state.rest, micro)
                total_g, total_s = carry
                return (accumulate(total_g, g), jax.tree.map(jnp.add, total_s, s)), None

            first = {k: v[0] for k, v in micros.items()}
            sum_shapes = jax.eval_shape(lambda: grads_of(state.trainable, frozen, state.rest, first)[1])
            # Gradients add up in float32 even under bf16 parameter storage (as in train_step).
            zero_grads = jax.tree.map(lambda p: jnp.zeros(p.shape, accum_dtype(p.dtype)), state.trainable)
            zero_sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sum_shapes)
            (grads, sums), _ = jax.lax.scan(body, (zero_grads, zero_sums), micros)
        grad_norm = optax.tree.norm(grads)  # of the (float32) sum
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.trainable)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        metrics = {**rl.finish(sums), "loss": sums["loss"], "grad_norm": grad_norm}
        if schedule is not None:
            metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        new = TrainState(state.step + 1, trainable, opt_state, state.rest)
        if skip_nonfinite:
            finite = (jnp.isfinite(sums["loss"]) & jnp.isfinite(metrics["grad_norm"])
                      & jnp.isfinite(optax.tree.norm(updates)))
            keep = lambda n, o: jnp.where(finite, n, o)  # noqa: E731
            kept_trainable, kept_opt = jax.tree.map(
                keep, (trainable, opt_state), (state.trainable, state.opt_state))
            new = TrainState(new.step, kept_trainable, kept_opt, state.rest)
            metrics["skipped"] = 1.0 - finite.astype(jnp.float32)
        return new, metrics

    def update(state: TrainState, frozen: nnx.State, batch: Batch) -> tuple[TrainState, Metrics]:
        prepared, pre = rl.prepare(batch)
        rows = prepared["tokens"].shape[0]
        micros = {k: v.reshape((micro_batches, rows // micro_batches, *v.shape[1:]))
                  for k, v in prepared.items() if v.ndim and v.shape[0] == rows}
        state, per_pass = jax.lax.scan(lambda s, _: one_pass(s, frozen, micros), state, None,
                                       length=rl.iterations)
        # A step's metrics: the mean over its μ passes (the first pass alone for ratio-1 checks
        # is the μ = 1 case); `skipped` counts passes dropped.
        metrics = {n: (jnp.sum(v) if n == "skipped" else jnp.mean(v)) for n, v in per_pass.items()}
        return state, {**metrics, **pre}

    return update


def lower_rl_stage(
    name: str, kind: str, config: RLConfig, models: StageModels, mesh: Mesh, *,
    stop_ids: tuple[int, ...], pad_id: int, fingerprint: str = "",
) -> RLProgram:
    """Build an RL stage's rollout, score and update programs around `models`."""
    from tunix_dsl.schemas.stages import STAGE_KINDS

    rl = STAGE_KINDS[kind].load_lowering()(config, models)
    assert isinstance(rl, RLStep), f"the lowering of RL kind `{kind}` must return an RLStep"
    split = frozen_in_compute_dtype(split_modules(rl.modules, rl.trainable), models)
    updates_total = int(config.steps) * rl.iterations  # the schedule counts optimizer updates
    schedule = build_schedule(config.optimizer, updates_total)
    base = build_optimizer(config.optimizer, schedule=schedule)
    optimizer = rl.optimizer(base, schedule) if rl.optimizer is not None else base
    state_sh = _state_shardings(split, optimizer, mesh)
    frozen_sh = sharding.state_shardings(split.frozen, mesh)
    replicated = sharding.replicated(mesh)
    graphdef = split.graphdef
    sampling = sampling_config(config, rl.generations, stop_ids, pad_id)
    seed = models.seed

    def rollout(state: TrainState, frozen: nnx.State, prompt_tokens: jax.Array, prompt_mask: jax.Array,
                step: jax.Array, draw: jax.Array) -> dict[str, jax.Array]:
        modules = nnx.merge(graphdef, state.trainable, frozen, state.rest)
        # (stage seed, step, draw): a resumed run replays the same samples; never a constant key
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), step), draw)
        out = generate(modules.policy, prompt_tokens, prompt_mask, key, sampling)
        return assemble(prompt_tokens, prompt_mask, out.tokens, out.lengths, rl.generations)

    def score(state: TrainState, frozen: nnx.State, batch: Batch) -> dict[str, jax.Array]:
        modules = deterministic(nnx.merge(graphdef, state.trainable, frozen, state.rest))
        return jax.tree.map(jax.lax.stop_gradient, rl.score(modules, batch))

    probe = jax.eval_shape(score, jax.eval_shape(lambda: TrainState(
        jnp.zeros((), jnp.int32), split.trainable, optimizer.init(split.trainable), split.rest)),
        split.frozen, _abstract_rollout(config, rl.generations, prompts_per_step(config, rl)))
    update_fn = build_update(rl, graphdef, optimizer, schedule, int(config.grad_accum),
                             config.on_nonfinite == "skip")
    return RLProgram(
        name=name, kind=kind, rl=rl, split=split, optimizer=optimizer, mesh=mesh,
        state_shardings=state_sh, frozen_shardings=frozen_sh, sampling=sampling,
        prompts_per_step=prompts_per_step(config, rl),
        rollout=jax.jit(rollout, in_shardings=(state_sh, frozen_sh, None, None, None, None)),
        score=jax.jit(score, in_shardings=(state_sh, frozen_sh, None)) if probe else None,
        update=jax.jit(update_fn, in_shardings=(state_sh, frozen_sh, None),
                       out_shardings=(state_sh, replicated), donate_argnums=(0,)),
        fingerprint=fingerprint,
    )


def prompts_per_step(config: TrainingConfig, rl: RLStep) -> int:
    """`batch_size` counts completions: prompts per step = batch_size / generations."""
    return int(config.batch_size) // rl.generations


def _abstract_rollout(config: GenerationConfig, generations: int, prompts: int,
                      width: int | None = None) -> dict[str, jax.ShapeDtypeStruct]:
    """The rollout batch's shapes; `width`: completion tokens (default `max_new_tokens`; an
    agent stage's episode is wider)."""
    rows, prompt = prompts * generations, int(config.max_prompt_len)
    new = int(config.max_new_tokens) if width is None else width
    s = jax.ShapeDtypeStruct
    return {
        "tokens": s((rows, prompt + new), jnp.int32), "attention_mask": s((rows, prompt + new), jnp.bool_),
        "positions": s((rows, prompt + new), jnp.int32), "completion_mask": s((rows, new), jnp.bool_),
        "lengths": s((rows,), jnp.int32),
    }

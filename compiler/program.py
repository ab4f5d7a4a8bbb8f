"""Lowering one stage into its `StageProgram`: the jitted, sharded step.

`lower_stage` takes a stage's config and its live (or abstract) models, asks
the stage kind's registry entry for its loss (`compiler/stages/`), splits the
models into trainable / frozen / rest state, and jits the generic step of
`compiler/train_step.py` with explicit `in_shardings`/`out_shardings` and the
train state donated. The same lowering on abstract inputs
(`jax.ShapeDtypeStruct`) is what `tnx plan` compiles ahead of time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from tunix_dsl.compiler import sharding
from tunix_dsl.compiler.optim import Schedule, build_optimizer, build_schedule
from tunix_dsl.compiler.stages import StageLoss, StageModels
from tunix_dsl.compiler.storage_dtype import frozen_in_compute_dtype
from tunix_dsl.compiler.train_step import SplitModules, TrainState, build_step, split_modules
from tunix_dsl.models.activations import rows_sharded_over
from tunix_dsl.schemas.stages import TrainingConfig

P = ParamSpec("P")
R = TypeVar("R")


def rows_pinned(fn: Callable[P, R], mesh: Mesh) -> Callable[P, R]:
    """`fn` whose trace pins the model's activation rows to the mesh's batch axes
    (models.activations: FSDP gathers weights, never the global batch)."""

    @functools.wraps(fn)
    def traced(*args: P.args, **kwargs: P.kwargs) -> R:
        with rows_sharded_over(mesh, sharding.BATCH_AXES):
            return fn(*args, **kwargs)

    return traced


@dataclass
class BatchLayout:
    """How a step's host batch is laid out: `[steps_per_call, grad_accum, micro, ...]`."""

    steps_per_call: int
    grad_accum: int
    batch_size: int  # examples per optimizer step (global)

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.grad_accum

    def reshape(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`[k, batch, ...]` host arrays → `[k, A, micro, ...]` (with several processes: this
        process's rows of each micro-batch, `[k, A, rows, ...]`)."""
        k, a = self.steps_per_call, self.grad_accum
        return {n: v.reshape((k, a, -1, *v.shape[2:])) for n, v in arrays.items()}


@dataclass
class StageProgram:
    """Everything needed to run (or plan) one stage's training steps."""

    name: str
    kind: str
    loss: StageLoss
    split: SplitModules
    optimizer: optax.GradientTransformation
    schedule: Schedule
    layout: BatchLayout
    mesh: Mesh
    state_shardings: TrainState
    frozen_shardings: nnx.State
    step: Any  # jitted (state, frozen, batch) -> (state, metrics[k])
    eval_sums: Any = None  # jitted (state, frozen, batch[B, ...]) -> additive sums, no gradients
    fingerprint: str = ""  # `compiler.fingerprint`: what the stage's output depends on

    def abstract_state(self) -> TrainState:
        """The train state as ShapeDtypeStructs (for AOT compiles and checkpoint restores)."""
        return jax.eval_shape(
            lambda trainable, rest: TrainState(
                jnp.zeros((), jnp.int32), trainable, self.optimizer.init(trainable), rest
            ),
            self.split.trainable,
            self.split.rest,
        )

    def batch_shardings(self, batch: Mapping[str, Any]) -> dict[str, NamedSharding]:
        return {n: sharding.batch_sharding(self.mesh, len(v.shape), leading=2) for n, v in batch.items()}

    def init_state(self) -> TrainState:
        """The train state, placed in its shardings (optimizer state built on device).

        Parameters are copied into fresh buffers: the state is donated to every
        step, and the models it came from (a previous stage's output, a DPO
        reference) must stay valid.
        """
        fresh = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731
        init = jax.jit(
            lambda trainable, rest: TrainState(
                jnp.zeros((), jnp.int32), fresh(trainable), self.optimizer.init(trainable), fresh(rest)
            ),
            out_shardings=self.state_shardings,
        )
        return init(self.split.trainable, self.split.rest)

    def evaluate(self, state: TrainState, batches: Any) -> dict[str, float]:
        """Held-out metrics: `from_sums` of the sums over `batches` ([B, ...] host arrays)."""
        total: dict[str, jax.Array] | None = None
        for host in batches:
            arrays = {n: v for n, v in host.items() if n not in ("example_ids", "valid")}
            placed = sharding.place(arrays, {n: sharding.batch_sharding(self.mesh, v.ndim) for n, v in arrays.items()})
            sums = self.eval_sums(state, self.split.frozen, placed)
            total = sums if total is None else jax.tree.map(jnp.add, total, sums)
        assert total is not None, "an eval set has at least one batch"
        _, metrics = self.loss.from_sums(total)
        return {name: float(value) for name, value in jax.device_get(metrics).items()}

    def put_batch(self, host: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        arrays = self.layout.reshape(host)
        shardings = self.batch_shardings(arrays)
        if jax.process_count() == 1:
            return jax.device_put(arrays, shardings)
        # Each process holds only its rows (`runtime/batches.py` LocalRows): the global batch is
        # assembled from every process's part.
        k, a, m = self.layout.steps_per_call, self.layout.grad_accum, self.layout.micro_batch
        return {n: jax.make_array_from_process_local_data(shardings[n], v, (k, a, m, *v.shape[3:]))
                for n, v in arrays.items()}

    def merged_modules(self, state: TrainState) -> nnx.Module:
        return nnx.merge(self.split.graphdef, state.trainable, self.split.frozen, state.rest)


def optimizer_for(config: TrainingConfig) -> tuple[optax.GradientTransformation, Schedule]:
    schedule = build_schedule(config.optimizer, int(config.steps))
    return build_optimizer(config.optimizer, schedule=schedule), schedule


def _state_shardings(
    split: SplitModules, optimizer: optax.GradientTransformation, mesh: Mesh
) -> TrainState:
    trainable = sharding.state_shardings(split.trainable, mesh)
    rest = sharding.state_shardings(split.rest, mesh)
    # The optimizer state mirrors the parameters: each params-shaped part of it takes the
    # parameters' shardings, everything else (step counts) is replicated. (Asking XLA for
    # the compiled init's output shardings does not work for compile-only TPU devices.)
    abstract = jax.eval_shape(optimizer.init, jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), split.trainable))
    # A masked transform (PPO's separate critic learning rate) holds MaskedNode where its
    # mask is off: that empty node stays as it is, beside the parameter's sharding.
    masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
    opt = optax.tree_map_params(optimizer, lambda leaf, placed: leaf if masked(leaf) else placed,
                                abstract, trainable, is_leaf=masked,
                                transform_non_params=lambda _leaf: sharding.replicated(mesh))
    # A TrainState-shaped tree of shardings (its step's sharding stands where an array would).
    return TrainState(cast(Any, sharding.replicated(mesh)), trainable, opt, rest)


def lower_stage(
    name: str,
    kind: str,
    config: TrainingConfig,
    models: StageModels,
    mesh: Mesh,
    *,
    batch_size: int,
    grad_accum: int = 1,
    steps_per_call: int = 1,
    fingerprint: str = "",
) -> StageProgram:
    """Build the stage's step program around `models` (concrete or abstract)."""
    if batch_size % grad_accum:
        raise ValueError(f"batch_size {batch_size} is not divisible by grad_accum {grad_accum}")
    from tunix_dsl.schemas.stages import STAGE_KINDS

    loss = STAGE_KINDS[kind].load_lowering()(config, models)
    assert isinstance(loss, StageLoss), f"the lowering of kind `{kind}` must return a StageLoss"
    split = frozen_in_compute_dtype(split_modules(loss.modules, loss.trainable), models)
    optimizer, schedule = optimizer_for(config)
    state_sh = _state_shardings(split, optimizer, mesh)
    frozen_sh = sharding.state_shardings(split.frozen, mesh)
    step_fn = build_step(
        split.graphdef, loss.counts, loss.micro_sums, loss.from_sums, optimizer, schedule,
        skip_nonfinite=config.on_nonfinite == "skip",
    )
    step = jax.jit(
        rows_pinned(step_fn, mesh),
        in_shardings=(state_sh, frozen_sh, None),  # batch: committed by put_batch
        out_shardings=(state_sh, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )

    def eval_fn(state: TrainState, frozen: nnx.State, batch: Mapping[str, jax.Array]) -> dict:
        modules = nnx.merge(split.graphdef, state.trainable, frozen, state.rest)
        # dropout off: a held-out loss is a property of the weights, not of a random mask
        modules = nnx.view(modules, only=nnx.Dropout, deterministic=True, raise_if_not_found=False)
        return loss.micro_sums(modules, batch)

    eval_sums = jax.jit(rows_pinned(eval_fn, mesh), in_shardings=(state_sh, frozen_sh, None), out_shardings=sharding.replicated(mesh))
    return StageProgram(
        name=name,
        kind=kind,
        loss=loss,
        split=split,
        optimizer=optimizer,
        schedule=schedule,
        layout=BatchLayout(steps_per_call, grad_accum, batch_size),
        mesh=mesh,
        state_shardings=state_sh,
        frozen_shardings=frozen_sh,
        step=step,
        eval_sums=eval_sums,
        fingerprint=fingerprint,
    )

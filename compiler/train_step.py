"""The one training-step program every supervised stage kind shares.

A stage kind supplies three pure functions (see `compiler/stages/`), in the
`*_sums` / `*_from_sums` form of `compiler/losses.py`:

- `counts(batch) -> dict` — the global counts of the *whole* step's batch
  (tokens with loss, preference pairs, …), computed from masks alone;
- `micro_sums(modules, micro_batch) -> dict` — additive numerators (and the
  micro-batch's own counts) of one micro-batch;
- `from_sums(sums) -> (loss, metrics)` — loss and metrics from totals.

A micro-batch's loss is `from_sums(its sums with the counts replaced by the
global ones)`, which is linear in its numerators, so summing micro-batch
gradients gives exactly the gradient of (sum of token losses / sum of token
counts) over the global batch — never a mean of micro-batch means. Logged
metrics are `from_sums` of the summed micro-batch sums.

Everything a step needs — every forward, the loss, the gradients, the
optimizer update and the metrics — is one XLA program. Batches arrive as
`[steps_per_call, grad_accum, micro_batch, ...]`; the program scans over the
first two axes, so `steps_per_call = k` runs k optimizer steps per dispatch.
The train state is donated.

Mixed precision: the model casts each parameter to its compute dtype where it
is used (`tunix_dsl.models.layers`), so gradients arrive in the parameters'
own dtype — float32 master weights in a bfloat16 run. Micro-batch gradients
are always summed in float32 (`accumulate`), also under bfloat16 storage,
and cast to the parameters' dtype only for the optimizer update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
Sums = dict[str, jax.Array]
Counts = Callable[[Batch], Sums]
MicroSums = Callable[[Any, Batch], Sums]  # (the stage's Container, micro-batch)
FromSums = Callable[[Sums], tuple[jax.Array, Metrics]]


@jax.tree_util.register_dataclass
@dataclass
class TrainState:
    """Everything that changes from step to step (and is donated)."""

    step: jax.Array  # int32 scalar: optimizer steps taken
    trainable: nnx.State  # the parameters that receive gradients
    opt_state: Any  # optax state for `trainable`
    rest: nnx.State  # RNG state (dropout streams)


@dataclass(frozen=True)
class SplitModules:
    """A stage's modules split into the pieces the step program handles."""

    graphdef: nnx.GraphDef
    trainable: nnx.State
    frozen: nnx.State  # parameters without gradients (reference, teacher, QLoRA base)
    rest: nnx.State  # RNG state (dropout streams): advances every step


def split_modules(modules: nnx.Module, trainable: nnx.filterlib.Filter) -> SplitModules:
    """Trainable parameters; everything else that does not change (frozen weights, a
    QLoRA base's quantized codes and scales); and the RNG state that does."""
    # flax types split's result as a variadic tuple; three filters give exactly three states
    graphdef, train, frozen, rest = nnx.split(modules, trainable, nnx.Not(nnx.RngState), ...)  # type: ignore[misc]
    return SplitModules(graphdef, train, frozen, rest)


def build_step(
    graphdef: nnx.GraphDef,
    counts: Counts,
    micro_sums: MicroSums,
    from_sums: FromSums,
    optimizer: optax.GradientTransformation,
    schedule: Callable[[jax.Array], jax.Array] | None = None,
    skip_nonfinite: bool = False,
) -> Callable[[TrainState, nnx.State, Batch], tuple[TrainState, Metrics]]:
    """The pure step function: `(state, frozen, batch[k, A, mb, ...]) -> (state, metrics[k])`.

    With `skip_nonfinite`, an update whose loss, gradient norm or update norm is
    NaN/Inf is dropped (parameters, optimizer state and RNG state stay as they were; the
    step counter and the data still advance) and the metric `skipped` is 1.
    """

    def grads_of_micro_batch(
        state: TrainState, frozen: nnx.State, micro: Batch, totals: Sums
    ) -> tuple[nnx.State, Sums, nnx.State]:
        def loss_of(trainable: nnx.State, rest: nnx.State) -> tuple[jax.Array, tuple[Sums, nnx.State]]:
            modules = nnx.merge(graphdef, trainable, frozen, rest)
            sums = micro_sums(modules, micro)
            loss, _ = from_sums({**sums, **totals})
            _, new_rest, _ = nnx.split(modules, nnx.RngState, ...)  # type: ignore[misc]
            return loss, (sums, new_rest)

        # `rest` (RNG counters for dropout) is traced by the gradient transform too, so
        # nnx may advance the counters inside it; its (integer, float0) gradient is dropped.
        (_, (sums, rest)), (grads, _) = jax.value_and_grad(
            loss_of, argnums=(0, 1), has_aux=True, allow_int=True
        )(state.trainable, state.rest)
        return grads, sums, rest

    def one_step(state: TrainState, frozen: nnx.State, batch: Batch) -> tuple[TrainState, Metrics]:
        # batch: [A, mb, ...]
        totals = counts({k: v.reshape((-1, *v.shape[2:])) for k, v in batch.items()})
        accum = next(iter(batch.values())).shape[0]
        if accum == 1:
            micro = {k: v[0] for k, v in batch.items()}
            grads, sums, rest = grads_of_micro_batch(state, frozen, micro, totals)
        else:

            def body(carry: tuple[nnx.State, Sums, nnx.State], micro: Batch):
                grads_total, sums_total, rest = carry
                grads, sums, rest = grads_of_micro_batch(
                    TrainState(state.step, state.trainable, state.opt_state, rest), frozen, micro, totals
                )
                add = lambda a, b: a + b  # noqa: E731
                return (accumulate(grads_total, grads), jax.tree.map(add, sums_total, sums), rest), None

            first = {k: v[0] for k, v in batch.items()}
            zero_grads = jax.tree.map(lambda p: jnp.zeros(p.shape, accum_dtype(p.dtype)), state.trainable)
            sum_shapes = jax.eval_shape(lambda: grads_of_micro_batch(state, frozen, first, totals)[1])
            zero_sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sum_shapes)
            (grads, sums, rest), _ = jax.lax.scan(body, (zero_grads, zero_sums, state.rest), batch)

        grad_norm = optax.tree.norm(grads)  # of the float32 sum
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.trainable)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        loss, metrics = from_sums(sums)
        metrics = dict(metrics)
        metrics["grad_norm"] = grad_norm
        if schedule is not None:
            metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        new = TrainState(state.step + 1, trainable, opt_state, rest)
        if skip_nonfinite:
            # the update too: a finite gradient times a huge learning rate can overflow
            finite = (jnp.isfinite(loss) & jnp.isfinite(metrics["grad_norm"])
                      & jnp.isfinite(optax.tree.norm(updates)))
            keep_old = lambda n, o: jnp.where(finite, n, o)  # noqa: E731
            new = TrainState(
                new.step,
                *jax.tree.map(keep_old, (trainable, opt_state, rest), (state.trainable, state.opt_state, state.rest)),
            )
            metrics["skipped"] = 1.0 - finite.astype(jnp.float32)
        return new, metrics

    def step(state: TrainState, frozen: nnx.State, batch: Batch) -> tuple[TrainState, Metrics]:
        # batch: [k, A, mb, ...]; k optimizer steps in one dispatch.
        k = next(iter(batch.values())).shape[0]
        if k == 1:
            state, metrics = one_step(state, frozen, {n: v[0] for n, v in batch.items()})
            return state, jax.tree.map(lambda m: m[None], metrics)
        return jax.lax.scan(lambda s, b: one_step(s, frozen, b), state, batch)

    return step


def accum_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """Gradients of floating parameters are summed in float32 (bfloat16's 8-bit mantissa
    would drop small micro-batch gradients); anything else keeps its dtype."""
    return jnp.dtype(jnp.float32) if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype(dtype)


def accumulate(total: nnx.State, grads: nnx.State) -> nnx.State:
    """total + grads, in the (float32) dtype of the running total."""
    return jax.tree.map(lambda t, g: t + g.astype(t.dtype), total, grads)


def init_state(split: SplitModules, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        trainable=split.trainable,
        opt_state=optimizer.init(split.trainable),
        rest=split.rest,
    )

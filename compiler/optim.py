"""Optimizers and learning-rate schedules from a stage's ``optimizer = …`` value (interface 5).

``spec`` is the checked schema object (``tunix_dsl.schemas.training.AdamW`` …, whose kind is
its ``call_name``) or a plain mapping with a ``name`` key, validated by that schema: defaults
and ranges live in the schema alone. Every optimizer is the same chain::

    clip_by_global_norm(clip_norm)          # if clip_norm is set
    → direction (adam | factored rms | momentum | lion)
    → add_decayed_weights(weight_decay, mask=decay_mask)   # decoupled decay, if > 0
    → scale_by_learning_rate(schedule)

so weight decay is decoupled (AdamW-style: ``p ← p − lr·(u + wd·p)``) for all four, and for
SGD it does not pass through the momentum buffer.

Weight decay skips 1-D parameters (norm scales, biases) and any parameter whose path has a
``bias`` or ``*norm*`` component. Embeddings ARE decayed: they are 2-D matmul weights and,
with tied embeddings, also the output projection (the GPT-2/nanoGPT convention).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from tunix_dsl.compiler.tree_paths import key_name
from tunix_dsl.schemas.training import OPTIMIZERS, SGD, Adafactor, AdamW, Lion, OptimizerBase

Schedule = Callable[[jax.Array | int], jax.Array]
# A checked optimizer (`AdamW` …) or a mapping with a `name` key that its schema validates.
OptimizerSpec = OptimizerBase | Mapping[str, Any]


def optimizer_spec(spec: OptimizerSpec) -> OptimizerBase:
    """The checked schema object (``AdamW`` …) for ``spec``; a mapping is validated by the
    schema named by its ``name`` key, so its defaults and ranges are the schema's own
    (one source of truth with ``tnx explain adamw`` and the linter)."""
    if isinstance(spec, OptimizerBase):
        return spec
    if not isinstance(spec, Mapping):
        raise TypeError(f"optimizer: expected a schema object or a mapping, got {type(spec).__name__}")
    name = spec.get("name")
    if name not in OPTIMIZERS:
        raise ValueError(
            f"optimizer: unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)} "
            "(e.g. `optimizer = adamw(lr = 1e-3)`)"
        )
    schema = OPTIMIZERS[name]
    fields = {k: v for k, v in spec.items() if k != "name"}
    return schema.model_validate(fields)  # type: ignore[return-value]


def optimizer_name(spec: OptimizerSpec) -> str:
    """The optimizer kind (``adamw`` …): the schema's ``call_name``."""
    return optimizer_spec(spec).call_name


# --------------------------------------------------------------------------- schedules


def _constant(progress: jax.Array, min_ratio: float) -> jax.Array:
    return jnp.ones_like(progress)


def _linear(progress: jax.Array, min_ratio: float) -> jax.Array:
    return 1.0 - (1.0 - min_ratio) * progress


def _cosine(progress: jax.Array, min_ratio: float) -> jax.Array:
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + jnp.cos(math.pi * progress))


# name → decay factor in [min_ratio, 1] as a function of post-warm-up progress in [0, 1]
DECAYS: dict[str, Callable[[jax.Array, float], jax.Array]] = {
    "constant": _constant,
    "linear": _linear,
    "cosine": _cosine,
}


def build_schedule(spec: OptimizerSpec, total_steps: int | None = None) -> Schedule:
    """``schedule(step) -> lr`` (float32), jit-friendly; ``step`` counts updates from 0.

    Warm-up: ``lr·(step + 1)/warmup`` for ``step < warmup`` (the first update already moves;
    the peak is reached at ``step = warmup − 1``). Then, with
    ``progress = clip((step − warmup) / (total_steps − warmup), 0, 1)``:
    constant ``lr``; linear ``lr·(1 − (1 − r)·progress)``; cosine
    ``lr·(r + (1 − r)·½(1 + cos(π·progress)))``, with ``r = min_lr_ratio`` — so the decay
    reaches ``lr·r`` at ``step = total_steps`` and stays there.
    """
    spec = optimizer_spec(spec)
    lr, warmup, kind, min_ratio = spec.lr, spec.warmup, spec.schedule, spec.min_lr_ratio
    # The checker guarantees these for a pipeline (schema ranges, TNX221); direct callers
    # get an assertion, not a second copy of the user-facing checks.
    assert kind == "constant" or total_steps is not None, (
        f"optimizer: a {kind!r} schedule needs the stage's total steps to decay over")
    assert total_steps is None or warmup < total_steps, (
        f"optimizer: warmup = {warmup} is not shorter than total_steps = {total_steps} (TNX221)")
    decay_steps = 1 if total_steps is None else total_steps - warmup
    decay = DECAYS[kind]

    def schedule(step: jax.Array | int) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        warm = lr * (step + 1.0) / max(warmup, 1)
        progress = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
        return jnp.where(step < warmup, warm, lr * decay(progress, min_ratio)).astype(jnp.float32)

    return schedule


# --------------------------------------------------------------------------- weight-decay mask


def _decays(path: tuple[Any, ...], leaf: Any) -> bool:
    names = [key_name(k).lower() for k in path]
    exempt = any(n == "bias" or "norm" in n for n in names)
    return jnp.ndim(leaf) >= 2 and not exempt


def decay_mask(params: Any) -> Any:
    """A pytree of bools like ``params``: True where weight decay applies (ndim ≥ 2 and no
    ``bias``/``*norm*`` path component). Works on nnx ``State`` and plain dicts."""
    return jax.tree_util.tree_map_with_path(_decays, params)


# --------------------------------------------------------------------------- optimizers

# The built-in directions (before decay and the learning rate), named by each schema's
# `implementation` in `tunix_dsl.schemas.training`, as a plugin optimizer names its own.


def adam(spec: AdamW) -> optax.GradientTransformation:
    return optax.scale_by_adam(b1=spec.b1, b2=spec.b2, eps=spec.eps)


def adafactor(spec: Adafactor) -> optax.GradientTransformation:
    # Adafactor's factored second moments and update clipping (Shazeer & Stern 2018), without
    # its relative step size: `lr` is an absolute step like the other optimizers'.
    return optax.chain(
        optax.scale_by_factored_rms(decay_rate=spec.decay_rate, epsilon=spec.eps),
        optax.clip_by_block_rms(1.0),
    )


def sgd(spec: SGD) -> optax.GradientTransformation:
    if spec.momentum == 0.0:  # nesterov without momentum is refused by the schema (TNX222)
        return optax.identity()
    return optax.trace(decay=spec.momentum, nesterov=spec.nesterov)


def lion(spec: Lion) -> optax.GradientTransformation:
    return optax.scale_by_lion(b1=spec.b1, b2=spec.b2)


def _direction(spec: OptimizerBase) -> optax.GradientTransformation:
    """The update direction, from the schema's `implementation` (`fn(spec) ->
    optax.GradientTransformation`; built-in and plugin optimizers alike); clipping, decay and
    the schedule wrap it."""
    from tunix_dsl.schemas.plugins import OPTIMIZERS_GROUP, load_implementation

    build = load_implementation(OPTIMIZERS_GROUP, type(spec))
    if not callable(build):
        raise TypeError(f"the implementation of optimizer `{spec.call_name}` is not a function")
    direction: optax.GradientTransformation = build(spec)
    return direction


def build_optimizer(
    spec: OptimizerSpec, *, schedule: Schedule | None = None, total_steps: int | None = None
) -> optax.GradientTransformation:
    """The optax chain described in the module docstring.

    ``schedule`` defaults to ``build_schedule(spec, total_steps)``; pass the same schedule the
    trainer logs. ``clip_norm`` unset (None) disables clipping.
    """
    spec = optimizer_spec(spec)
    direction = _direction(spec)
    schedule = schedule if schedule is not None else build_schedule(spec, total_steps)
    weight_decay, clip_norm = spec.weight_decay, spec.clip_norm
    parts: list[optax.GradientTransformation] = []
    if clip_norm is not None:
        parts.append(optax.clip_by_global_norm(clip_norm))
    parts.append(direction)
    if weight_decay > 0:
        parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)

"""Optimizers and learning-rate schedules from a stage's ``optimizer = …`` value (interface 5).

``spec`` is the checked schema object (``tunix_dsl.schemas.training.AdamW`` …, whose kind is
its ``call_name``) or a plain mapping with a ``name`` key; missing fields take the defaults
below, which match the schemas. Every optimizer is the same chain::

    clip_by_global_norm(clip_norm)          # if clip_norm is set and > 0
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

Schedule = Callable[[jax.Array | int], jax.Array]

# Defaults of every field any optimizer reads (identical to tunix_dsl/schemas/training.py).
_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "warmup": 0,
    "schedule": "constant",
    "min_lr_ratio": 0.0,
    "weight_decay": 0.0,
    "clip_norm": 1.0,
    "b1": 0.9,
    "b2": 0.999,
    "eps": 1e-8,
    "decay_rate": 0.8,
    "momentum": 0.0,
    "nesterov": False,
}
# Per-optimizer defaults that differ from the shared ones.
_NAME_DEFAULTS: dict[str, dict[str, Any]] = {
    "adafactor": {"eps": 1e-30},
    "lion": {"b2": 0.99},
}


def optimizer_name(spec: Any) -> str:
    """The optimizer kind: ``spec["name"]`` for a mapping, else ``spec.call_name``/``spec.name``."""
    if isinstance(spec, Mapping):
        name = spec.get("name")
    else:
        name = getattr(spec, "call_name", None) or getattr(spec, "name", None)
    if name not in DIRECTIONS:
        raise ValueError(
            f"optimizer: unknown optimizer {name!r}; expected one of {sorted(DIRECTIONS)} "
            "(e.g. `optimizer = adamw(lr = 1e-3)`)"
        )
    return str(name)


def _field(spec: Any, key: str) -> Any:
    default = _NAME_DEFAULTS.get(optimizer_name(spec), {}).get(key, _DEFAULTS[key])
    value = spec.get(key, default) if isinstance(spec, Mapping) else getattr(spec, key, default)
    return default if value is None and key != "clip_norm" else value


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


def build_schedule(spec: Any, total_steps: int | None = None) -> Schedule:
    """``schedule(step) -> lr`` (float32), jit-friendly; ``step`` counts updates from 0.

    Warm-up: ``lr·(step + 1)/warmup`` for ``step < warmup`` (the first update already moves;
    the peak is reached at ``step = warmup − 1``). Then, with
    ``progress = clip((step − warmup) / (total_steps − warmup), 0, 1)``:
    constant ``lr``; linear ``lr·(1 − (1 − r)·progress)``; cosine
    ``lr·(r + (1 − r)·½(1 + cos(π·progress)))``, with ``r = min_lr_ratio`` — so the decay
    reaches ``lr·r`` at ``step = total_steps`` and stays there.
    """
    lr = float(_field(spec, "lr"))
    warmup = int(_field(spec, "warmup"))
    kind = str(_field(spec, "schedule"))
    min_ratio = float(_field(spec, "min_lr_ratio"))
    if kind not in DECAYS:
        raise ValueError(
            f"optimizer: unknown schedule {kind!r}; expected one of {sorted(DECAYS)}"
        )
    if lr <= 0 or warmup < 0 or not 0.0 <= min_ratio <= 1.0:
        raise ValueError(
            f"optimizer: need lr > 0, warmup ≥ 0 and 0 ≤ min_lr_ratio ≤ 1 "
            f"(got lr={lr}, warmup={warmup}, min_lr_ratio={min_ratio})"
        )
    if total_steps is None:
        if kind != "constant":
            raise ValueError(
                f"optimizer: a {kind!r} schedule needs the stage's total steps to decay over"
            )
        decay_steps = 1
    else:
        if warmup >= total_steps:
            raise ValueError(
                f"optimizer: warmup = {warmup} is not shorter than the stage's steps = "
                f"{total_steps}; lower warmup or raise steps"
            )
        decay_steps = total_steps - warmup
    decay = DECAYS[kind]

    def schedule(step: jax.Array | int) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        warm = lr * (step + 1.0) / max(warmup, 1)
        progress = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
        return jnp.where(step < warmup, warm, lr * decay(progress, min_ratio)).astype(jnp.float32)

    return schedule


# --------------------------------------------------------------------------- weight-decay mask


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _decays(path: tuple[Any, ...], leaf: Any) -> bool:
    names = [_key_name(k).lower() for k in path]
    exempt = any(n == "bias" or "norm" in n for n in names)
    return jnp.ndim(leaf) >= 2 and not exempt


def decay_mask(params: Any) -> Any:
    """A pytree of bools like ``params``: True where weight decay applies (ndim ≥ 2 and no
    ``bias``/``*norm*`` path component). Works on nnx ``State`` and plain dicts."""
    return jax.tree_util.tree_map_with_path(_decays, params)


# --------------------------------------------------------------------------- optimizers


def _adam(spec: Any) -> optax.GradientTransformation:
    return optax.scale_by_adam(
        b1=float(_field(spec, "b1")), b2=float(_field(spec, "b2")), eps=float(_field(spec, "eps"))
    )


def _adafactor(spec: Any) -> optax.GradientTransformation:
    # Adafactor's factored second moments and update clipping (Shazeer & Stern 2018), without
    # its relative step size: `lr` is an absolute step like the other optimizers'.
    return optax.chain(
        optax.scale_by_factored_rms(
            decay_rate=float(_field(spec, "decay_rate")), epsilon=float(_field(spec, "eps"))
        ),
        optax.clip_by_block_rms(1.0),
    )


def _sgd(spec: Any) -> optax.GradientTransformation:
    momentum = float(_field(spec, "momentum"))
    nesterov = bool(_field(spec, "nesterov"))
    if momentum == 0.0:
        if nesterov:
            raise ValueError("optimizer: sgd(nesterov = true) needs momentum > 0")
        return optax.identity()
    return optax.trace(decay=momentum, nesterov=nesterov)


def _lion(spec: Any) -> optax.GradientTransformation:
    return optax.scale_by_lion(b1=float(_field(spec, "b1")), b2=float(_field(spec, "b2")))


# name → the optimizer's update direction (before decay and the learning rate)
DIRECTIONS: dict[str, Callable[[Any], optax.GradientTransformation]] = {
    "adamw": _adam,
    "adafactor": _adafactor,
    "sgd": _sgd,
    "lion": _lion,
}


def build_optimizer(
    spec: Any, *, schedule: Schedule | None = None, total_steps: int | None = None
) -> optax.GradientTransformation:
    """The optax chain described in the module docstring.

    ``schedule`` defaults to ``build_schedule(spec, total_steps)``; pass the same schedule the
    trainer logs. ``clip_norm`` unset (None) or ≤ 0 disables clipping.
    """
    direction = DIRECTIONS[optimizer_name(spec)](spec)
    schedule = schedule if schedule is not None else build_schedule(spec, total_steps)
    weight_decay = float(_field(spec, "weight_decay"))
    clip_norm = _field(spec, "clip_norm")
    if weight_decay < 0:
        raise ValueError(f"optimizer: weight_decay must be ≥ 0 (got {weight_decay})")
    parts: list[optax.GradientTransformation] = []
    if clip_norm is not None and float(clip_norm) > 0:
        parts.append(optax.clip_by_global_norm(float(clip_norm)))
    parts.append(direction)
    if weight_decay > 0:
        parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)

"""Where a weight is stored in which dtype: frozen weights in the compute dtype, outputs in the master dtype.

A bfloat16 run keeps float32 master weights for what trains (`ModelConfig.param_dtype`), and every
use of a parameter casts it to the activations' dtype (`tunix_dsl.models.layers`). A weight that
never trains — a LoRA stage's base, a DPO reference, a distillation teacher — needs no master copy:

    forward(cast_bf16(w_fp32)) == forward(w_bf16)   where w_bf16 = cast_bf16(w_fp32)

so `frozen_in_compute_dtype` stores frozen floating parameters in their model's compute dtype
once, when the step program is built. The step computes bit for bit what it computed before,
the frozen weights take half the memory, and XLA no longer keeps a bf16 copy of every layer's
fp32 base beside the original (it hoisted the per-layer casts out of the layer scan: ~0.8 GiB
per device for qwen3-8b LoRA on tpu-v5e-16). QLoRA's scales stay as they are: dequantisation
multiplies in float32.

A stage's output is written in the master dtype (`in_param_dtype`): a LoRA stage's merged
kernel is the compute-dtype base the adapter was trained against plus the float32 update.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.compiler.train_step import SplitModules
from tunix_dsl.models.transformer import Transformer


def _cast(value: object, dtype: jnp.dtype) -> object:
    if isinstance(value, jax.ShapeDtypeStruct):  # an abstract model (`tnx plan`)
        return jax.ShapeDtypeStruct(value.shape, dtype, sharding=value.sharding)
    return value.astype(dtype)  # type: ignore[attr-defined]


def _recast(state: nnx.State, dtype_for: Mapping[tuple, jnp.dtype | None]) -> nnx.State:
    """`state` with each floating `nnx.Param` at path p cast to `dtype_for[p]` (None: kept)."""
    flat = []
    for path, variable in nnx.to_flat_state(state):
        dtype = dtype_for.get(path)
        value = variable.get_value()
        if (dtype is not None and type(variable) is nnx.Param
                and jnp.issubdtype(value.dtype, jnp.floating) and value.dtype != dtype):
            variable = variable.replace(_cast(value, dtype))
        flat.append((path, variable))
    return nnx.from_flat_state(flat)


def frozen_in_compute_dtype(split: SplitModules, models: StageModels) -> SplitModules:
    """`split` with every frozen parameter of a model stored in that model's compute dtype.

    Frozen paths start with the role the stage's container gives the model (`policy`,
    `reference`, `teacher`, …); a stage-made module (PPO's critic trunk) takes the compute
    dtype the stage's models share.
    Only plain `nnx.Param`s are cast: LoRA adapters train, QLoRA codes and scales dequantise.
    """
    compute = {role: jnp.dtype(model.cfg.dtype) for role, model in models.models.items()}
    shared = set(compute.values())
    default = shared.pop() if len(shared) == 1 else None
    paths = {path: compute.get(str(path[0]), default) for path, _ in nnx.to_flat_state(split.frozen)}
    if not any(dtype is not None for dtype in paths.values()):
        return split
    return SplitModules(split.graphdef, split.trainable, _recast(split.frozen, paths), split.rest)


def in_param_dtype(model: Transformer) -> Transformer:
    """A copy of `model` whose floating parameters are all in its master dtype (what a stage
    output keeps); `model` itself is unchanged."""
    graphdef, state = nnx.split(model)
    dtype = jnp.dtype(model.cfg.param_dtype)
    paths = {path: dtype for path, _ in nnx.to_flat_state(state)}
    return nnx.merge(graphdef, _recast(state, paths))


def models_hold_frozen(modules: nnx.Module, split: SplitModules) -> None:
    """Point the stage's live models at `split`'s compute-dtype frozen arrays, so the float32
    originals leave device memory: the executor releases an input model once the stage has
    cloned it, and the running stage must not hold both copies of a frozen base."""
    nnx.update(modules, split.frozen)

"""Creating models straight into their shardings.

A model is never first built as a full replicated copy: its abstract shape
comes from `nnx.eval_shape`, its shardings from the logical axis rules, and
the initialiser runs under `jax.jit` with those `out_shardings`, so every
device materialises only its own shard. `abstract_model` is what `tnx plan`
uses: shapes and dtypes without a single weight allocated.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import jax
from flax import nnx
from jax.sharding import Mesh

from tunix_dsl.compiler import sharding
from tunix_dsl.models import Transformer
from tunix_dsl.models.config import ModelConfig

M = TypeVar("M", bound=nnx.Module)


def abstract_model(cfg: ModelConfig) -> Transformer:
    """The model with `jax.ShapeDtypeStruct` leaves: no memory allocated."""
    return nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))


def init_model(cfg: ModelConfig, mesh: Mesh, seed: int) -> Transformer:
    """A randomly initialised model, each parameter created in its sharding."""
    graphdef, abstract_state = nnx.split(abstract_model(cfg))
    shardings = sharding.state_shardings(abstract_state, mesh)

    @jax.jit
    def create() -> nnx.State:
        return nnx.split(Transformer(cfg, rngs=nnx.Rngs(seed)))[1]

    state = jax.jit(create, out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def load_model(directory: str | Path, mesh: Mesh, *, dtype: str, remat: bool | str = False,
               param_dtype: str = "float32") -> Transformer:
    """A Hugging Face checkpoint, each tensor read (memory-mapped) straight into its shard;
    parameters stored in `param_dtype`, computed in `dtype`."""
    from tunix_dsl.models.hf import load_hf

    return load_hf(directory, dtype=dtype, remat=remat, param_dtype=param_dtype,
                   shardings=sharding.parameter_sharding_fn(mesh))


def place(module: M, mesh: Mesh) -> M:
    """Put every array of `module` in the sharding its logical axes ask for."""
    graphdef, state = nnx.split(module)
    return nnx.merge(graphdef, jax.device_put(state, sharding.state_shardings(state, mesh)))

"""A small TrainState like the compiler's (nnx params, optax state, typed PRNG keys), for the
checkpoint tests; run as a script it checks a sharded save/restore on an 8-device CPU mesh.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python checkpoint_state.py DIR
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tunix_dsl.compiler.train_step import TrainState


class Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (8, 16)))
        self.b = nnx.Param(jnp.arange(16.0))
        self.rngs = rngs  # dropout streams: typed keys + counts, like LoRA dropout's


def make_state(seed: int = 0) -> TrainState:
    model = Tiny(nnx.Rngs(params=seed, dropout=seed + 1))
    _, params, rest = nnx.split(model, nnx.Param, ...)
    opt = optax.adamw(1e-3)
    params = jax.tree.map(lambda x: x * (1 + seed), params)
    return TrainState(jnp.asarray(seed * 10, jnp.int32), params, opt.init(params), rest)


def abstract_of(state: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


def host_leaves(state: Any) -> list[np.ndarray]:
    raw = jax.tree.map(lambda x: jax.random.key_data(x)
                       if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x, state)
    return [np.asarray(x) for x in jax.tree.leaves(raw)]


def sharded_roundtrip(directory: Path) -> None:
    from tunix_dsl.runtime.checkpoint import StageCheckpoints

    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "fsdp"))

    def sharding_of(x: Any) -> NamedSharding:
        if x.ndim == 2:
            return NamedSharding(mesh, PartitionSpec("data", "fsdp"))
        if x.ndim == 1 and x.shape[0] % 4 == 0:
            return NamedSharding(mesh, PartitionSpec("fsdp"))
        return NamedSharding(mesh, PartitionSpec())

    state = make_state(3)
    shardings = jax.tree.map(sharding_of, state)
    state = jax.device_put(state, shardings)
    checkpoints = StageCheckpoints(directory, keep=2)
    checkpoints.save(5, state, {"fingerprint": "f", "cursor": 40})
    checkpoints.wait()
    restored = checkpoints.restore_latest(abstract_of(state), shardings, "f")
    assert restored is not None and restored.step == 5 and restored.meta["cursor"] == 40
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored.state), strict=True):
        assert a.sharding == b.sharding, (a.sharding, b.sharding)
    for a, b in zip(host_leaves(state), host_leaves(restored.state), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert len(jax.tree.leaves(state)[1].sharding.device_set) == 8
    print("sharded roundtrip ok")


if __name__ == "__main__":
    assert jax.device_count() == 8, jax.devices()
    sharded_roundtrip(Path(sys.argv[1]))

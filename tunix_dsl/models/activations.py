"""Where a step's activations live on the mesh: rows of the batch split over the batch axes.

Under FSDP both the weights and the batch rows are split over the devices. Left
to its sharding propagation, XLA may then multiply *weight shards* by the
activations of the *whole global batch* and reduce the partial sums, instead of
gathering the weights: for qwen3-8b LoRA at 16 × 2048 tokens on tpu-v5e-16 each
chip held a `[32768, 12288]` float32 MLP partial sum (1.5 GiB) and its bf16
copy. Pinning the rows of each block's activations to the batch axes leaves XLA
one way to do the matmul: gather the (layer's) weights, which is what FSDP
means.

The step program names the mesh while its function is traced
(`rows_sharded_over`); model code calls `pin_rows`, which does nothing outside
such a trace (sampling, tests of the bare model) or when the rows do not split.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

_ROWS: ContextVar[tuple[Mesh, tuple[str, ...]] | None] = ContextVar("rows_sharded_over", default=None)


@contextmanager
def rows_sharded_over(mesh: Mesh, axes: Sequence[str]) -> Iterator[None]:
    """While a step function is traced: `pin_rows` splits rows over `axes` of `mesh`."""
    token = _ROWS.set((mesh, tuple(a for a in axes if a in mesh.shape)))
    try:
        yield
    finally:
        _ROWS.reset(token)


def pin_rows(x: jax.Array) -> jax.Array:
    """`x` [rows, ...] constrained to rows split over the batch axes (replicated otherwise)."""
    found = _ROWS.get()
    if found is None:
        return x
    mesh, axes = found
    ways = math.prod(mesh.shape[a] for a in axes)
    if ways == 1 or x.shape[0] % ways:
        return x
    spec = PartitionSpec(axes, *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

"""Where a step's activations live on the mesh: rows of the batch split over the batch axes.

Under FSDP both the weights and the batch rows are split over the devices. Left
to its sharding propagation, XLA may then multiply *weight shards* by the
activations of the *whole global batch* and reduce the partial sums, instead of
gathering the weights: for qwen3-8b LoRA at 16 × 2048 tokens on tpu-v5e-16 each
chip held a `[32768, 12288]` float32 MLP partial sum (1.5 GiB) and its bf16
copy. Pinning the rows of each block's activations to the batch axes leaves XLA
one way to do the matmul: gather the (layer's) weights, which is what FSDP
means.

The output head is the exception: its weight `[D, V]` is the largest single
matrix (qwen3-8b: 1.16 GiB in bf16) and the loss reads it once per sequence
chunk, so gathering it whole costs more than gathering the chunk's rows.
`head_logits` splits the head over the vocabulary instead (each device holds
`V / ways` columns, the logits stay vocabulary-split, and the log-softmax
reduces across devices): 4.98 → 4.45 GiB per chip for qwen3-8b LoRA at
16 × 2048 on tpu-v5e-16 (bench/README.md).

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


def head_logits(h: jax.Array, w: jax.Array) -> jax.Array:
    """Logits `h [.., D] @ w [D, V]` (w cast to h's dtype); in a step trace whose batch
    axes divide V, computed vocabulary-split: the rows are gathered, not the head."""
    w = w.astype(h.dtype)
    flat = h.reshape(-1, h.shape[-1])  # 2-D, as Dense multiplies
    found = _ROWS.get()
    ways = math.prod(found[0].shape[a] for a in found[1]) if found is not None else 1
    if found is None or ways == 1 or w.shape[1] % ways:
        logits = flat @ w
    else:
        mesh, axes = found
        split = NamedSharding(mesh, PartitionSpec(None, axes))
        w = jax.lax.with_sharding_constraint(w, split)
        flat = jax.lax.with_sharding_constraint(flat, NamedSharding(mesh, PartitionSpec()))
        logits = jax.lax.with_sharding_constraint(flat @ w, split)
    return logits.reshape(*h.shape[:-1], logits.shape[-1])

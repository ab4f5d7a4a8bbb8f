"""Per-token work over sequence chunks, so `[B, T, V]` logits never exist at once.

A loss or log-prob needs, per token, a reduction over the vocabulary of that
token's logits. `over_chunks` runs such a per-token function on `[B, c, ...]`
slices of the sequence axis in a `lax.map` (a scan), each slice under
`jax.checkpoint`: the forward keeps one chunk's `[B, c, V]` logits alive at a
time, and the backward recomputes them chunk by chunk from the saved `[B, c, D]`
hidden states instead of storing every chunk's logits. With a 128k vocabulary
and 8×1024 tokens that is the difference between 4 GB of float32 logits (plus
their gradient) and a few tens of MB.

When the chunk covers the whole sequence the function runs once, unscanned:
small-vocabulary models (the CPU presets) compile exactly as without chunking.

Attention on XLA's path has the same shape of problem: `[B, H, T, S]` float32
scores. Each query row's softmax reads only its own row, so the queries can be
cut into chunks the same way (`attention_chunk`): at seq 2048 with 32 heads the
scores of 4 rows are 2 GiB at once, 256 MiB per 256-query chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# float32 logits per sequence row that one chunk may hold (64 MiB per row of the batch):
# a 128k vocabulary gets 128-token chunks, a 32k one 512, a byte vocabulary no chunking.
LOGITS_PER_ROW = 2**24
MIN_CHUNK = 16
# float32 attention scores per sequence row that one query chunk may hold (64 MiB per row)
SCORES_PER_ROW = 2**24


def default_loss_chunk(vocab_size: int) -> int:
    """Tokens per chunk for a vocabulary: the largest power of two whose `[1, c, V]`
    float32 logits fit `LOGITS_PER_ROW`, at least `MIN_CHUNK`."""
    return max(MIN_CHUNK, 2 ** int(math.log2(max(1, LOGITS_PER_ROW // vocab_size))))


def attention_chunk(queries: int, keys: int, heads: int) -> int:
    """Queries per chunk so one chunk's `[1, H, c, S]` float32 scores fit `SCORES_PER_ROW`
    (a power of two, at least `MIN_CHUNK`); `queries` itself when all of them fit."""
    if heads * queries * keys <= SCORES_PER_ROW:
        return queries
    return max(MIN_CHUNK, 2 ** int(math.log2(max(1, SCORES_PER_ROW // (heads * keys)))))


def over_chunks(fn: Callable[..., Any], chunk: int, *arrays: jax.Array) -> Any:
    """`fn(*[a[:, s:s+chunk] for a in arrays])` over every chunk of the sequence axis (axis 1),
    re-assembled to `[B, T, ...]` leaves; `fn` must map `[B, c, ...]` inputs to a pytree of
    `[B, c, ...]` per-token outputs. The last chunk is padded (zeros; mask arrays pad with
    False) and its padding sliced off again."""
    B, T = arrays[0].shape[:2]
    if chunk >= T:
        return fn(*arrays)
    n = -(-T // chunk)

    def split(a: jax.Array) -> jax.Array:  # [B,T,...] -> [n,B,c,...]
        a = jnp.pad(a, [(0, 0), (0, n * chunk - T)] + [(0, 0)] * (a.ndim - 2))
        return a.reshape(B, n, chunk, *a.shape[2:]).swapaxes(0, 1)

    def join(a: jax.Array) -> jax.Array:  # [n,B,c,...] -> [B,T,...]
        return a.swapaxes(0, 1).reshape(B, n * chunk, *a.shape[3:])[:, :T]

    out = jax.lax.map(lambda xs: jax.checkpoint(fn)(*xs), tuple(split(a) for a in arrays))
    return jax.tree.map(join, out)


def gather_logps(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log softmax(logits)[targets] = logits[targets] - logsumexp(logits), in float32."""
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def chunked_logps(unembed: Callable[[jax.Array], jax.Array], hidden: jax.Array,
                  targets: jax.Array, chunk: int) -> jax.Array:
    """Per-token log p(targets) [B,T] float32 from final hidden states [B,T,D], the output
    head applied one sequence chunk at a time."""
    return over_chunks(lambda h, y: gather_logps(unembed(h), y), chunk, hidden, targets)

"""Fixed-size key/value cache for decoding.

A `KVCache` holds, per layer, keys and values `[B, K, max_len, Dh]` (heads
before slots: the layout the attention dots read), plus
`valid [B, max_len]` (slot holds a real, non-padding token) and `index`
(int32 scalar: the next slot to write; the same for every row, because
prompts are left-padded to a common length).

Use (see `Transformer.__call__`):

    cache = init_cache(cfg, batch=B, max_len=P + N)
    # prefill: the left-padded prompt, mask True on real tokens
    out = model(prompt, attention_mask=prompt_mask, cache=cache)       # slots [0, P)
    # decode: one token per call; its mask says whether the row is still real
    out = model(next_tok[:, None], attention_mask=alive[:, None], cache=out.cache)

Each call writes its T tokens at slots `[index, index + T)` and returns the
cache with `index + T`. Positions default to "number of real tokens before
this one" (so a left-padded row gets the same RoPE positions as the unpadded
sequence); pass `positions` to override. A query attends to slot `s` iff
`s <= its own slot` and `valid[b, s]`. Slots past `max_len` are not checked
under jit: size `max_len` for prompt + new tokens. `repeat(n)` copies each
row n times so G completions share one prefill.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from tunix_dsl.models.config import ModelConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    k: tuple[jax.Array, ...]  # per layer [B,K,S,Dh]
    v: tuple[jax.Array, ...]  # per layer [B,K,S,Dh]
    valid: jax.Array  # [B,S] bool: the slot holds a real token
    index: jax.Array  # int32 scalar: next slot to write

    @property
    def batch(self) -> int:
        return self.valid.shape[0]

    @property
    def max_len(self) -> int:
        return self.valid.shape[1]

    def repeat(self, n: int) -> KVCache:
        """Each row repeated n times (row b -> rows b*n .. b*n+n-1), e.g. to draw n
        completions from one prefilled prompt."""
        rep = lambda a: jnp.repeat(a, n, axis=0)  # noqa: E731
        return KVCache(tuple(map(rep, self.k)), tuple(map(rep, self.v)), rep(self.valid),
                       self.index)

    def write_mask(self, real: jax.Array) -> tuple[jax.Array, jax.Array]:
        """For T new tokens with `real [B,T]`: the attention mask [B,T,S] over cache slots
        (after the new tokens are written) and the updated `valid`."""
        T = real.shape[1]
        if not isinstance(self.index, jax.core.Tracer) and int(self.index) + T > self.max_len:
            # Only checkable outside jit; under jit dynamic_update_slice would clamp silently.
            raise ValueError(
                f"KV cache overflow: writing {T} tokens at slot {int(self.index)} exceeds "
                f"max_len={self.max_len}; create the cache with a larger max_len")
        valid = jax.lax.dynamic_update_slice(self.valid, real.astype(bool), (0, self.index))
        query_slot = self.index + jnp.arange(T)  # [T]
        causal = jnp.arange(self.max_len)[None, :] <= query_slot[:, None]  # [T,S]
        return causal[None] & valid[:, None, :], valid


def init_cache(cfg: ModelConfig, batch: int, max_len: int,
               dtype: jnp.dtype | str | None = None) -> KVCache:
    """An empty cache (no valid slots, index 0) for `batch` rows of up to `max_len` tokens."""
    dtype = jnp.dtype(dtype or cfg.dtype)
    shape = (batch, cfg.n_kv_heads, max_len, cfg.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.n_layers))
    return KVCache(k=zeros, v=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.n_layers)),
                   valid=jnp.zeros((batch, max_len), bool), index=jnp.zeros((), jnp.int32))

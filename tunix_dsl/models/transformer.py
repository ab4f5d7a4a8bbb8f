"""Decoder-only transformer for the Llama 3.x / Qwen2 / Qwen3 families.

    tokens [B,T] -> embed -> n_layers x Block -> final_norm -> lm_head (or tied embed) -> [B,T,V]
    Block: x += attn(attn_norm(x));  x += mlp(mlp_norm(x))

Parameter paths (what LoRA regexes and the HF name map see):
`embed.embedding`, `layers.{i}.attn_norm.scale`, `layers.{i}.attn.{q,k,v,o}_proj.kernel`
(+ `.bias` on q/k/v for Qwen2), `layers.{i}.attn.{q,k}_norm.scale` (Qwen3),
`layers.{i}.mlp_norm.scale`, `layers.{i}.mlp.{gate,up,down}_proj.kernel`,
`final_norm.scale`, `lm_head.kernel` (untied only). Those are the logical
paths; by default (`scan_layers`) the blocks are stored stacked, as one `Block`
whose arrays carry a leading layer axis (`layers.attn.q_proj.kernel` [L, D, H·Dh]),
and run as one scan, each block under a remat policy (`layer_stack`).

Padding: `attention_mask [B,T]` (True = real token) supports left-padded
batches. Real tokens never attend to padding keys (a padding query attends only
to itself, so no attention row is empty), and by default a token's RoPE
position counts the real tokens before it, so a left-padded row yields the
same logits at its real tokens as the unpadded sequence. Logits at padding
positions are finite but meaningless. Decoding with a KV cache: see `kv_cache`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tunix_dsl.models.activations import head_logits, pin_rows
from tunix_dsl.models.chunked import chunked_logps, default_loss_chunk, gather_logps
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.models.kv_cache import KVCache
from tunix_dsl.models.layer_stack import (
    remat_call,
    remat_policy,
    scan_stacked,
    stack,
    unstack,
)
from tunix_dsl.models.layers import (
    Attention,
    Dense,
    Embed,
    RMSNorm,
    Rope,
    SwiGLU,
    rope_inv_freq,
    rope_tables,
)

__all__ = ["Block", "ModelOutput", "Transformer", "gather_logps"]  # gather_logps: RL imports it here

LayerKV = tuple[jax.Array, jax.Array]  # one layer's cached keys and values, [B,K,S,Dh] each


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ModelOutput:
    logits: jax.Array  # [B,T,V]
    hidden_states: tuple[jax.Array, ...] | None = None  # per block output (pre final norm), [B,T,D]
    attentions: tuple[jax.Array, ...] | None = None  # per layer softmax probs, [B,H,T,S]
    cache: KVCache | None = None  # the cache after writing this call's tokens


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.param_dtype)
        self.attn_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, dtype=dtype)
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, dtype=dtype)
        self.mlp = SwiGLU(cfg, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,  # [B,T,D]
        rope: Rope,  # cos/sin tables, [B,T,1,Dh] each
        mask: jax.Array,  # [B,T,S] bool
        kv: LayerKV | None = None,
        cache_index: jax.Array | None = None,
        return_probs: bool = False,
    ) -> tuple[jax.Array, LayerKV | None, jax.Array | None]:
        x = pin_rows(x)  # FSDP: gather this layer's weights, not the batch (models.activations)
        h, kv, probs = self.attn(self.attn_norm(x), rope, mask, kv, cache_index, return_probs)
        x = pin_rows(x + h)
        x = pin_rows(x + self.mlp(self.mlp_norm(x)))
        return x, kv, probs


class Transformer(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dtype = jnp.dtype(cfg.param_dtype)
        self.embed = Embed(cfg.vocab_size, cfg.d_model, dtype=dtype,
                           compute_dtype=jnp.dtype(cfg.dtype), rngs=rngs)
        blocks = [Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)]
        # one initialisation either way: the same seed gives the same weights stacked or not
        self.layers: Block | nnx.List[Block] = stack(blocks) if cfg.scan_layers else nnx.List(blocks)
        self.final_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, dtype=dtype)
        self.lm_head = None if cfg.tie_embeddings else Dense(
            cfg.d_model, cfg.vocab_size, axes=("embed", "vocab"), dtype=dtype, rngs=rngs)

    def __call__(
        self,
        tokens: jax.Array,  # [B,T] int32
        *,
        positions: jax.Array | None = None,  # [B,T]; default: count of real tokens before
        attention_mask: jax.Array | None = None,  # [B,T] bool, True = real token
        cache: KVCache | None = None,
        return_hidden: bool = False,
        return_attention: bool = False,
    ) -> jax.Array | ModelOutput:
        """Logits [B,T,V], or a `ModelOutput` when a cache or extra outputs are involved."""
        hidden, out = self.hidden(tokens, positions=positions, attention_mask=attention_mask,
                                  cache=cache, return_hidden=return_hidden,
                                  return_attention=return_attention)
        logits = self.unembed(hidden)
        if cache is None and not return_hidden and not return_attention:
            return logits
        return dataclasses.replace(out, logits=logits)

    def hidden(
        self,
        tokens: jax.Array,
        *,
        positions: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        cache: KVCache | None = None,
        return_hidden: bool = False,
        return_attention: bool = False,
    ) -> tuple[jax.Array, ModelOutput]:
        """The final-normed hidden states [B,T,D] (input of the output head, e.g. for a value
        head) and a `ModelOutput` whose `logits` is not yet filled in."""
        B, T = tokens.shape
        real = (jnp.ones((B, T), bool) if attention_mask is None
                else jnp.asarray(attention_mask).astype(bool))
        if cache is None:
            causal = jnp.tril(jnp.ones((T, T), bool))[None]  # [1,T,T]
            # a padding query sees itself: no row is fully masked (NaN in fused kernels)
            mask = causal if attention_mask is None else (
                causal & real[:, None, :] | jnp.eye(T, dtype=bool)[None])  # [B,T,T]
            before = jnp.zeros((B, 1), jnp.int32)
        else:
            mask, valid = cache.write_mask(real)  # [B,T,S]
            before = cache.valid.sum(axis=-1, dtype=jnp.int32)[:, None]
        if positions is None and cache is None and attention_mask is None:
            positions = jnp.arange(T, dtype=jnp.int32)[None]  # [1,T]: the same for every row
        elif positions is None:  # real tokens before this one; padding slots clamp to 0
            positions = before + jnp.maximum(jnp.cumsum(real, axis=1, dtype=jnp.int32) - 1, 0)
        rope = rope_tables(positions, jnp.asarray(rope_inv_freq(self.cfg)))
        policy = remat_policy(self.cfg.remat)
        x = self.embed(tokens)  # [B,T,D]
        if cache is None and isinstance(self.layers, Block):  # stacked
            # training and scoring forwards: one traced block body for every layer
            def step(block: Block, h: jax.Array) -> tuple[jax.Array, tuple[Any, Any]]:
                h, _, probs = block(h, rope, mask, return_probs=return_attention)
                return h, (h if return_hidden else None, probs)

            x, (hs, ps) = scan_stacked(self.layers, x, policy, step)
            return self.final_norm(x), ModelOutput(
                logits=None,  # type: ignore[arg-type]  # filled in by __call__
                hidden_states=tuple(hs) if return_hidden else None,  # [L,B,T,D] -> L x [B,T,D]
                attentions=tuple(ps) if return_attention else None)

        hiddens: list[jax.Array] = []
        maps: list[jax.Array] = []  # filled only with return_attention
        ks: list[jax.Array] = []
        vs: list[jax.Array] = []
        for i, block in enumerate(self.blocks()):
            kv = (cache.k[i], cache.v[i]) if cache is not None else None
            index = cache.index if cache is not None else None
            def call(b: Block, x: jax.Array = x, kv: LayerKV | None = kv,
                     index: jax.Array | None = index) -> tuple[jax.Array, LayerKV | None,
                                                               jax.Array | None]:
                return b(x, rope, mask, kv, index, return_attention)

            x, kv, probs = remat_call(block, policy, call)
            hiddens.append(x)
            if probs is not None:
                maps.append(probs)
            if kv is not None:
                ks.append(kv[0])
                vs.append(kv[1])
        new_cache = None if cache is None else KVCache(tuple(ks), tuple(vs), valid,
                                                      cache.index + T)
        out = ModelOutput(
            logits=None,  # type: ignore[arg-type]  # filled in by __call__
            hidden_states=tuple(hiddens) if return_hidden else None,
            attentions=tuple(maps) if return_attention else None,
            cache=new_cache,
        )
        return self.final_norm(x), out

    @property
    def stacked(self) -> bool:
        """Whether the blocks are stored stacked along a leading layer axis."""
        return not isinstance(self.layers, nnx.List)

    def blocks(self) -> list[Block]:
        """One module per layer: the stored blocks, or views of the stacked arrays."""
        return unstack(self.layers) if isinstance(self.layers, Block) else list(self.layers)

    def unstack_layers(self) -> None:
        """Store the blocks one by one from now on (in place): what a model with per-layer
        differences (LoRA on some layers, LoRA dropout) needs."""
        if isinstance(self.layers, Block):
            self.layers = nnx.List(unstack(self.layers))
            self.cfg = self.cfg.replace(scan_layers=False)

    def stack_layers(self) -> None:
        """Store the blocks stacked from now on (in place); they must share one structure."""
        if isinstance(self.layers, nnx.List):
            self.layers = stack(list(self.layers))
            self.cfg = self.cfg.replace(scan_layers=True)

    def unembed(self, h: jax.Array) -> jax.Array:
        """Output head: final hidden [.., D] -> logits [.., V]; a plain (or tied) head is
        split over the vocabulary in a sharded step (`activations.head_logits`)."""
        if self.lm_head is None:
            return self.embed.attend(h)
        if type(self.lm_head) is Dense and self.lm_head.bias is None:  # not LoRA-wrapped
            return head_logits(h, self.lm_head.kernel[...])
        return self.lm_head(h)

    def logps(self, tokens: jax.Array, targets: jax.Array, *, chunk: int | None = None,
              **kwargs: Any) -> jax.Array:
        """Per-token log p(targets[b,t] | tokens[b,:t+1]) [B,T] float32.

        log p = logit[target] - logsumexp(logits): one reduction and one gather over the
        vocabulary, never a full [B,T,V] log-softmax tensor; the output head runs over
        sequence chunks of `chunk` tokens (default sized from the vocabulary,
        `chunked.default_loss_chunk`), so [B,T,V] logits never exist at once either.
        kwargs go to the forward (`attention_mask`, `positions`)."""
        h, _ = self.hidden(tokens, **kwargs)  # [B,T,D]
        return chunked_logps(self.unembed, h, targets, chunk or default_loss_chunk(self.cfg.vocab_size))

"""Building blocks of the decoder: Dense, Embed, RMSNorm, RoPE, attention, SwiGLU MLP.

Every parameter carries logical axis names (nnx sharding metadata under
`out_sharding`, created with `eager_sharding=False` so no mesh is needed at
construction); the compiler maps them to mesh axes with its logical rules:

    embed.embedding        (vocab, embed)      q_proj.kernel   (embed, heads)
    lm_head.kernel         (embed, vocab)      k_proj/v_proj   (embed, kv_heads)
    gate_proj/up_proj      (embed, mlp)        o_proj.kernel   (heads, embed)
    down_proj.kernel       (mlp, embed)        q_norm/k_norm   (head_dim,)

Mixed precision: parameters are stored in their own dtype (`ModelConfig.param_dtype`,
the float32 master weights of a bfloat16 run) and cast to the activation's dtype where
they are used, as flax's `param_dtype`/`dtype` pair does. The embedding lookup sets the
compute dtype (`ModelConfig.dtype`) for the whole forward; the gradient of a cast is the
cast back, so gradients arrive in the parameters' dtype.

Projection outputs keep heads and head_dim flattened into one axis
(`heads` = n_heads * head_dim), so every projection is a 2-D `Dense` kernel
(in, out) that LoRA can wrap by path regex.

Shapes: B batch, T query length, S key length, D d_model, H query heads,
K kv heads, G = H // K heads per kv group, Dh head_dim, F mlp_dim, V vocab.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tunix_dsl.models.activations import head_logits, pin_rows
from tunix_dsl.models.chunked import attention_chunk, over_chunks
from tunix_dsl.models.config import ModelConfig

Axes = tuple[str | None, ...]
INIT_STD = 0.02  # same scale as HF's `initializer_range` default
MASK_VALUE = float(np.finfo(np.float32).min)  # finite, so fully-masked rows stay NaN-free


def _param(init: Callable, rngs: nnx.Rngs | None, shape: tuple[int, ...], dtype: jnp.dtype,
           axes: Axes) -> nnx.Param:
    value = init(rngs.params(), shape, dtype) if rngs is not None else init(None, shape, dtype)
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


def _normal(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype) -> jax.Array:
    return INIT_STD * jax.random.normal(key, shape, dtype)


def _zeros(_key: jax.Array | None, shape: tuple[int, ...], dtype: jnp.dtype) -> jax.Array:
    return jnp.zeros(shape, dtype)


def _ones(_key: jax.Array | None, shape: tuple[int, ...], dtype: jnp.dtype) -> jax.Array:
    return jnp.ones(shape, dtype)


class Dense(nnx.Module):
    """y = x @ kernel (+ bias); kernel (in, out). The unit LoRA wraps."""

    def __init__(self, in_features: int, out_features: int, *, axes: Axes,
                 use_bias: bool = False, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.kernel = _param(_normal, rngs, (in_features, out_features), dtype, axes)
        self.bias = _param(_zeros, None, (out_features,), dtype, (axes[1],)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        # Multiply on 2-D [tokens, features]: with a 3-D activation the kernel gradient
        # contracts over (B, T) and XLA:CPU materialises a strided transpose of the
        # output gradient (a third of an SFT step at the bench sizes, bench/README.md).
        y = x.reshape(-1, x.shape[-1]) @ self.kernel[...].astype(x.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y.reshape(*x.shape[:-1], y.shape[-1])


class Embed(nnx.Module):
    """Token embedding table (V, D); `attend` is the tied output head. The lookup's output
    is in `compute_dtype`, which every later layer follows."""

    def __init__(self, vocab_size: int, d_model: int, *, dtype: jnp.dtype = jnp.float32,
                 compute_dtype: jnp.dtype | None = None, rngs: nnx.Rngs):
        self.embedding = _param(_normal, rngs, (vocab_size, d_model), dtype, ("vocab", "embed"))
        self.compute_dtype = jnp.dtype(compute_dtype or dtype)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        # gather first, then cast: only the looked-up rows are converted
        return jnp.take(self.embedding[...], tokens, axis=0).astype(self.compute_dtype)  # [B,T,D]

    def attend(self, x: jax.Array) -> jax.Array:
        return head_logits(x, self.embedding[...].T)  # [B,T,D] -> [B,T,V]


class RMSNorm(nnx.Module):
    """x / rms(x) * scale, computed in float32 and cast back (as HF does)."""

    def __init__(self, dim: int, *, eps: float, axis_name: str = "embed",
                 dtype: jnp.dtype = jnp.float32):
        self.eps = eps
        self.scale = _param(_ones, None, (dim,), dtype, (axis_name,))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(x.dtype) * x32.astype(x.dtype)


# ----------------------------------------------------------------------------- RoPE
def _default_inv_freq(head_dim: int, theta: float, _scaling: dict) -> np.ndarray:
    return 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)


def _linear_inv_freq(head_dim: int, theta: float, scaling: dict) -> np.ndarray:
    return _default_inv_freq(head_dim, theta, scaling) / scaling["factor"]


def _llama3_inv_freq(head_dim: int, theta: float, scaling: dict) -> np.ndarray:
    """Llama 3.1 frequency scaling: long wavelengths are divided by `factor`, short ones kept,
    and the band between is interpolated smoothly."""
    inv_freq = _default_inv_freq(head_dim, theta, scaling)
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return np.where(medium, smoothed, scaled).astype(np.float32)


ROPE_INV_FREQ: dict[str, Callable[[int, float, dict], np.ndarray]] = {
    "default": _default_inv_freq,
    "linear": _linear_inv_freq,
    "llama3": _llama3_inv_freq,
}


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
    """Inverse frequencies [Dh/2] (float32) for the config's RoPE type."""
    scaling = cfg.rope_scaling or {}
    return ROPE_INV_FREQ[scaling.get("rope_type", "default")](cfg.head_dim, cfg.rope_theta, scaling)


def rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


Rope = tuple[jax.Array, jax.Array]  # (cos, sin), each [B,T,1,Dh] float32


def rope_tables(positions: jax.Array, inv_freq: jax.Array) -> Rope:
    """cos/sin of position * frequency for every token, computed once per forward.
    positions [B,T], inv_freq [Dh/2] -> ([B,T,1,Dh], [B,T,1,Dh])."""
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B,T,Dh/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B,T,1,Dh]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, rope: Rope) -> jax.Array:
    """Rotary embedding in the rotate-half layout HF Llama/Qwen checkpoints use: the pair
    rotated together is (i, i + Dh/2), not (2i, 2i+1). Checkpoint q/k weights are therefore
    loaded as they are, with no permutation. x [B,T,N,Dh]."""
    cos, sin = rope[0].astype(x.dtype), rope[1].astype(x.dtype)
    return x * cos + rotate_half(x) * sin


# ----------------------------------------------------------------------------- attention
class Attention(nnx.Module):
    """Causal self-attention with grouped-query heads, optional q/k bias (Qwen2) and
    per-head q/k RMSNorm (Qwen3)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.param_dtype)
        d, hd = cfg.d_model, cfg.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, hd
        self.q_proj = Dense(d, cfg.n_heads * hd, axes=("embed", "heads"), use_bias=cfg.qkv_bias,
                            dtype=dtype, rngs=rngs)
        self.k_proj = Dense(d, cfg.n_kv_heads * hd, axes=("embed", "kv_heads"),
                            use_bias=cfg.qkv_bias, dtype=dtype, rngs=rngs)
        self.v_proj = Dense(d, cfg.n_kv_heads * hd, axes=("embed", "kv_heads"),
                            use_bias=cfg.qkv_bias, dtype=dtype, rngs=rngs)
        self.o_proj = Dense(cfg.n_heads * hd, d, axes=("heads", "embed"), dtype=dtype, rngs=rngs)
        # Assigned once, each way: nnx takes an attribute first set to None as static.
        self.q_norm: RMSNorm | None
        self.k_norm: RMSNorm | None
        if cfg.qk_norm:
            self.q_norm = RMSNorm(hd, eps=cfg.norm_eps, axis_name="head_dim", dtype=dtype)
            self.k_norm = RMSNorm(hd, eps=cfg.norm_eps, axis_name="head_dim", dtype=dtype)
        else:
            self.q_norm = self.k_norm = None

    def __call__(
        self,
        x: jax.Array,  # [B,T,D]
        rope: Rope,  # cos/sin tables for this call's positions
        mask: jax.Array,  # [B,T,S] bool, True = may attend
        kv: tuple[jax.Array, jax.Array] | None = None,  # cache ([B,K,S,Dh] x2) or None
        cache_index: jax.Array | None = None,  # first cache slot of this call's tokens
        return_probs: bool = False,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None, jax.Array | None]:
        B, T, _ = x.shape
        H, K, Dh = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_proj(x).reshape(B, T, H, Dh)
        k = self.k_proj(x).reshape(B, T, K, Dh)
        v = self.v_proj(x).reshape(B, T, K, Dh)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, rope), apply_rope(k, rope)

        if kv is None and not return_probs:
            # Training and scoring: one fused kernel per backend (no [B,H,T,S] probs kept).
            out = fused_attention(q, k, v, mask).reshape(B, T, H * Dh)
            return self.o_proj(out), None, None

        # Grouped-query attention: query head h uses kv head h // G (HF's repeat_kv order).
        q = q.reshape(B, T, K, H // K, Dh)
        if kv is not None:
            # The cache is [B,K,S,Dh] (heads before slots), the layout the attention dots
            # read: a [B,S,K,Dh] cache would be transposed whole at every decode step.
            # This call's keys/values go to slots [cache_index, cache_index + T).
            assert cache_index is not None, "a cache call passes its first slot"
            start = (0, 0, cache_index, 0)
            k_all = jax.lax.dynamic_update_slice(kv[0], k.swapaxes(1, 2).astype(kv[0].dtype), start)
            v_all = jax.lax.dynamic_update_slice(kv[1], v.swapaxes(1, 2).astype(kv[1].dtype), start)
            new_kv = (k_all, v_all)
            k, v = k_all.astype(q.dtype), v_all.astype(q.dtype)
            keys, values = "bksd", "bksd"
        else:
            new_kv = None
            keys, values = "bskd", "bskd"
        scores = jnp.einsum(f"btkgd,{keys}->bkgts", q, k,
                            preferred_element_type=jnp.float32) / math.sqrt(Dh)
        scores = jnp.where(mask[:, None, None, :, :], scores, MASK_VALUE)
        probs = jax.nn.softmax(scores, axis=-1)  # [B,K,G,T,S]
        out = jnp.einsum(f"bkgts,{values}->btkgd", probs.astype(v.dtype), v).reshape(B, T, H * Dh)
        maps = probs.reshape(B, H, T, -1) if return_probs else None
        return self.o_proj(out), new_kv, maps


def _cudnn_fits(q: jax.Array) -> bool:
    """cuDNN's fused attention takes half-precision inputs and head widths up to 128 in
    multiples of 8; anything else runs on XLA's path."""
    head_dim = q.shape[-1]
    return q.dtype in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 and head_dim <= 128


# backend -> whether its fused kernel takes these inputs, and that kernel's name for
# `jax.nn.dot_product_attention`; a backend not listed (cpu, tpu) uses "xla".
AttentionKernel = Literal["xla", "cudnn"]

FUSED_ATTENTION: dict[str, tuple[Callable[[jax.Array], bool], AttentionKernel]] = {
    "gpu": (_cudnn_fits, "cudnn"),
}


def attention_implementation(q: jax.Array) -> AttentionKernel:
    """The `jax.nn.dot_product_attention` implementation for this backend and these inputs."""
    entry = FUSED_ATTENTION.get(jax.default_backend())
    return entry[1] if entry is not None and entry[0](q) else "xla"


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """softmax(q·kᵀ/√Dh + mask)·v with grouped-query heads: q [B,T,H,Dh], k/v [B,S,K,Dh],
    mask [B,T,S] bool -> [B,T,H,Dh]. Query head h reads kv head h // (H/K), as the reference
    path does. Every query row must allow at least one key (the transformer lets padding
    queries see themselves): a fully masked row would be NaN in cuDNN's kernel."""
    kernel = attention_implementation(q)

    def attend(q: jax.Array, mask: jax.Array) -> jax.Array:
        return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None],
                                            scale=1.0 / math.sqrt(q.shape[-1]), implementation=kernel)

    if kernel != "xla":  # a flash kernel never holds the scores
        return attend(q, mask)
    # XLA's path materialises [B,H,T,S] float32 scores: long sequences attend one query
    # chunk at a time (each row's softmax is its own, so the result is the same)
    return over_chunks(attend, attention_chunk(q.shape[1], k.shape[1], q.shape[2]), q, mask)


class SwiGLU(nnx.Module):
    """down(silu(gate(x)) * up(x)) — the Llama/Qwen MLP."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.param_dtype)
        self.gate_proj = Dense(cfg.d_model, cfg.mlp_dim, axes=("embed", "mlp"), dtype=dtype,
                               rngs=rngs)
        self.up_proj = Dense(cfg.d_model, cfg.mlp_dim, axes=("embed", "mlp"), dtype=dtype,
                             rngs=rngs)
        self.down_proj = Dense(cfg.mlp_dim, cfg.d_model, axes=("mlp", "embed"), dtype=dtype,
                               rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:  # [B,T,D] -> [B,T,D]
        return self.down_proj(pin_rows(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x)))

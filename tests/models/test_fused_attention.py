"""Fused attention (`jax.nn.dot_product_attention`) equals the reference einsum path, with
causal + padding masks and grouped-query heads; the backend picks its kernel."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tunix_dsl.models import Transformer, layers
from tunix_dsl.models.config import ModelConfig

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                  mlp_dim=64, max_seq_len=32)


def left_padded(B: int = 3, T: int = 12) -> tuple[jax.Array, jax.Array]:
    tokens = jax.random.randint(jax.random.key(0), (B, T), 0, CFG.vocab_size)
    lengths = jnp.array([T, T - 4, 1])[:B]
    mask = jnp.arange(T)[None, :] >= (T - lengths)[:, None]  # left padding
    return tokens, mask


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_attention_equals_the_reference_path(dtype: str) -> None:
    model = Transformer(CFG.replace(dtype=dtype), rngs=nnx.Rngs(0))
    tokens, mask = left_padded()

    def both(m: Transformer) -> tuple[jax.Array, jax.Array]:
        fused = m(tokens, attention_mask=mask)
        # attention maps are only available from the reference (einsum + softmax) path
        reference = m(tokens, attention_mask=mask, return_attention=True).logits
        return fused, reference

    fused, reference = both(model)
    atol = 1e-5 if dtype == "float32" else 3e-2
    # every position, padding included: both paths see the same mask
    np.testing.assert_allclose(np.asarray(fused, np.float32), np.asarray(reference, np.float32),
                               atol=atol)
    if dtype == "float32":  # the gradients too
        graphdef, params = nnx.split(model, nnx.Param)

        def loss(p: nnx.State, which: int) -> jax.Array:
            out = both(nnx.merge(graphdef, p))[which]
            return jnp.sum(jnp.where(mask[..., None], out, 0.0) ** 2)

        g_fused, g_ref = jax.grad(loss)(params, 0), jax.grad(loss)(params, 1)
        for a, b in zip(jax.tree.leaves(g_fused), jax.tree.leaves(g_ref), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)


def test_padding_rows_stay_finite_and_real_tokens_match_unpadded() -> None:
    model = Transformer(CFG, rngs=nnx.Rngs(1))
    tokens, mask = left_padded()
    logits = model(tokens, attention_mask=mask)
    assert bool(jnp.isfinite(logits).all())
    unpadded = model(tokens[1:2, 4:])  # row 1 without its 4 padding tokens
    np.testing.assert_allclose(np.asarray(logits[1, 4:]), np.asarray(unpadded[0]), atol=1e-5)


@pytest.mark.parametrize(("backend", "dtype", "head_dim", "expected"), [
    ("gpu", jnp.bfloat16, 64, "cudnn"),
    ("gpu", jnp.float32, 64, "xla"),  # cuDNN's kernel takes half precision only
    ("gpu", jnp.bfloat16, 12, "xla"),  # head width not a multiple of 8
    ("cpu", jnp.bfloat16, 64, "xla"),
    ("tpu", jnp.bfloat16, 128, "xla"),
])
def test_implementation_is_chosen_per_backend(monkeypatch: pytest.MonkeyPatch, backend: str,
                                              dtype: jnp.dtype, head_dim: int, expected: str) -> None:
    monkeypatch.setattr(layers.jax, "default_backend", lambda: backend)
    q = jax.ShapeDtypeStruct((1, 4, 2, head_dim), dtype)
    assert layers.attention_implementation(q) == expected


def test_query_chunked_attention_equals_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long sequences attend a query chunk at a time on XLA's path (`attention_chunk`); the
    scores budget shrunk so 12 queries split into chunks of 4 (and a padded last chunk of 13)."""
    from tunix_dsl.models import chunked

    model = Transformer(CFG, rngs=nnx.Rngs(2))
    graphdef, params = nnx.split(model, nnx.Param)
    for T in (12, 13):
        tokens, mask = left_padded(T=T)

        def loss(p: nnx.State, tokens: jax.Array = tokens, mask: jax.Array = mask) -> jax.Array:
            out = nnx.merge(graphdef, p)(tokens, attention_mask=mask)
            return jnp.sum(jnp.where(mask[..., None], out, 0.0) ** 2)

        whole = jax.value_and_grad(loss)(params)
        heads, keys = CFG.n_heads, T
        monkeypatch.setattr(chunked, "SCORES_PER_ROW", heads * 4 * keys)
        monkeypatch.setattr(chunked, "MIN_CHUNK", 4)
        assert chunked.attention_chunk(T, keys, heads) == 4
        chunks = jax.value_and_grad(loss)(params)
        monkeypatch.undo()
        np.testing.assert_allclose(float(chunks[0]), float(whole[0]), rtol=1e-6)
        for a, b in zip(jax.tree.leaves(chunks[1]), jax.tree.leaves(whole[1]), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)

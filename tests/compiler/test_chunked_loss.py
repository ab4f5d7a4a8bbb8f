"""Chunked loss: the output head and the loss over sequence chunks equal the whole-sequence
computation (float32, within 1e-6, gradients too), and never hold `[B, T, V]` logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.compiler.test_precision import MESH, PICO, train_steps
from tunix_dsl.compiler import losses
from tunix_dsl.compiler.model_init import init_model
from tunix_dsl.compiler.program import lower_stage
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.models.chunked import default_loss_chunk, over_chunks
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.models.lora import LoraSpec, apply_lora
from tunix_dsl.models.transformer import gather_logps
from tunix_dsl.schemas.base import ModelRef
from tunix_dsl.schemas.stages import SFTConfig
from tunix_dsl.schemas.training import AdamW

B, T, V = 3, 23, 97  # T not a multiple of the chunk: the padded last chunk is exercised
# Blocks stored one by one: chunking is the subject here. With stacked (scanned) blocks the
# hidden states round differently, and the logit-distillation KL sum then differs between
# chunked and whole by 8e-6 relative (float32 noise above this file's 1e-6).
CFG = ModelConfig(vocab_size=V, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16,
                  mlp_dim=64, max_seq_len=32, tie_embeddings=False, scan_layers=False)


def batch(seed: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    tokens = jax.random.randint(k1, (B, T), 0, V)
    targets = jax.random.randint(k2, (B, T), 0, V)
    mask = jax.random.bernoulli(k3, 0.7, (B, T)).at[:, -1].set(True)
    return tokens, targets, mask


def grads_of(model: nnx.Module, loss_fn) -> nnx.State:
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p: nnx.State) -> jax.Array:
        return loss_fn(nnx.merge(graphdef, p))

    return jax.grad(loss)(params)


def assert_trees_close(a, b, atol: float = 1e-6) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 7])
def test_chunked_sft_sums_and_gradients_equal_unchunked(chunk: int) -> None:
    model = init_model(CFG, MESH, seed=0)
    tokens, targets, mask = batch()

    def whole(m: nnx.Module) -> dict:
        return losses.sft_sums(m(tokens), targets, mask)

    def chunked(m: nnx.Module) -> dict:
        hidden, _ = m.hidden(tokens)
        return losses.sft_sums_chunked(hidden, m.unembed, targets, mask, chunk=chunk)

    a, b = whole(model), chunked(model)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(float(a[key]), float(b[key]), rtol=1e-6, err_msg=key)
    mean_nll = lambda f: lambda m: f(m)["nll_sum"] / f(m)["tokens"]  # noqa: E731
    assert_trees_close(grads_of(model, mean_nll(whole)), grads_of(model, mean_nll(chunked)))


def test_chunked_token_logps_equal_unchunked_with_lora() -> None:
    """The DPO/ORPO/RL path: per-token log-probs, masked, through a LoRA-wrapped output head."""
    model = init_model(CFG, MESH, seed=1)
    apply_lora(model, LoraSpec(rank=4, alpha=8, targets=("lm_head", "q_proj")), nnx.Rngs(2))
    tokens, targets, mask = batch(1)

    def whole(m: nnx.Module) -> jax.Array:
        return losses.token_logps(m(tokens), targets, mask)

    def chunked(m: nnx.Module) -> jax.Array:
        hidden, _ = m.hidden(tokens)
        return losses.chunked_token_logps(hidden, m.unembed, targets, mask, chunk=4)

    np.testing.assert_allclose(np.asarray(whole(model)), np.asarray(chunked(model)), atol=1e-6)
    seq = lambda f: lambda m: losses.sequence_logps(f(m), mask).sum()  # noqa: E731
    assert_trees_close(grads_of(model, seq(whole)), grads_of(model, seq(chunked)))
    # the model's own log-prob API chunks the same way
    np.testing.assert_allclose(np.asarray(model.logps(tokens, targets, chunk=6)),
                               np.asarray(gather_logps(model(tokens), targets)), atol=1e-6)


def test_chunked_logit_distillation_equals_unchunked() -> None:
    student = init_model(CFG, MESH, seed=3)
    teacher = init_model(CFG.replace(d_model=48, n_layers=2), MESH, seed=4)
    tokens, targets, mask = batch(2)
    t_hidden, _ = teacher.hidden(tokens)

    def whole(m: nnx.Module) -> dict:
        return losses.logit_distill_sums(m(tokens), teacher.unembed(t_hidden), targets, mask,
                                         temperature=2.0)

    def chunked(m: nnx.Module) -> dict:
        hidden, _ = m.hidden(tokens)
        return losses.logit_distill_sums_chunked(hidden, m.unembed, t_hidden, teacher.unembed,
                                                 targets, mask, temperature=2.0, chunk=7)

    a, b = whole(student), chunked(student)
    for key in a:
        np.testing.assert_allclose(float(a[key]), float(b[key]), rtol=1e-6, err_msg=key)
    loss = lambda f: lambda m: losses.logit_distill_from_sums(f(m), temperature=2.0)[0]  # noqa: E731
    assert_trees_close(grads_of(student, loss(whole)), grads_of(student, loss(chunked)))


def test_chunks_never_hold_the_whole_logits() -> None:
    """The compiled loss+gradient with 16-token chunks needs far less scratch memory than the
    [B, T, V] float32 logits (and their gradient) it replaces."""
    b, t, d, v = 2, 512, 32, 8192
    w = jnp.zeros((d, v), jnp.float32)
    h = jnp.zeros((b, t, d), jnp.float32)
    y = jnp.zeros((b, t), jnp.int32)

    def loss(w: jax.Array, chunk: int) -> jax.Array:
        return over_chunks(lambda hc, yc: gather_logps(hc @ w, yc), chunk, h, y).sum()

    def scratch(chunk: int) -> int:
        compiled = jax.jit(jax.grad(loss), static_argnums=1).lower(w, chunk).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    logits_bytes = b * t * v * 4
    assert scratch(t) >= logits_bytes  # unchunked: at least the full logits
    assert scratch(16) < logits_bytes / 4


def test_default_chunk_is_sized_from_the_vocabulary() -> None:
    assert default_loss_chunk(256) >= 4096  # byte vocabularies: no chunking at CPU sizes
    assert default_loss_chunk(128_256) == 128
    assert default_loss_chunk(32_000) == 512
    assert default_loss_chunk(10**9) == 16


def test_sft_stage_with_small_loss_chunk_trains_with_lora() -> None:
    """The scanned chunks inside the jitted step: LoRA on every projection and the head."""
    cfg = PICO
    model = init_model(cfg, MESH, seed=0)
    apply_lora(model, LoraSpec(rank=4, alpha=8, targets=(".*",)), nnx.Rngs(1))
    config = SFTConfig(model=ModelRef(kind="decl", name="m"), data="d", steps=4, batch_size=8,
                       max_seq_len=32, optimizer=AdamW(lr=1e-2), loss_chunk=8)
    program = lower_stage("s", "sft", config, StageModels({"model": model}, lora=True), MESH,
                          batch_size=8)
    _, chunked = train_steps(program, 3)
    whole_config = config.model_copy(update={"loss_chunk": 32})
    model = init_model(cfg, MESH, seed=0)
    apply_lora(model, LoraSpec(rank=4, alpha=8, targets=(".*",)), nnx.Rngs(1))
    program = lower_stage("s", "sft", whole_config, StageModels({"model": model}, lora=True), MESH,
                          batch_size=8)
    _, whole = train_steps(program, 3)
    assert chunked == pytest.approx(whole, rel=1e-5)
    assert chunked[-1] < chunked[0]

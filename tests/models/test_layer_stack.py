"""Scanned layers equal unrolled ones (and transformers), with LoRA, under every remat policy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.models.hf_tiny import hf_logits, make_hf_model, random_tokens, save_hf_model
from tunix_dsl.models import Transformer
from tunix_dsl.models.config import REMAT_POLICIES, ModelConfig, ModelConfigError
from tunix_dsl.models.hf import load_hf
from tunix_dsl.models.lora import LoraSpec, apply_lora

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8,
                  mlp_dim=64, max_seq_len=32, qk_norm=True)
TOKENS = jax.random.randint(jax.random.key(0), (2, 10), 0, 64)
MASK = jnp.arange(10)[None, :] >= jnp.array([0, 3])[:, None]  # row 1 left-padded


def with_cfg(model: Transformer, **changes: object) -> Transformer:
    """The same weights under a changed (static) config."""
    graphdef, state = nnx.split(model)
    clone = nnx.merge(graphdef, jax.tree.map(jnp.copy, state))
    clone.cfg = model.cfg.replace(**changes)
    return clone


def loss_and_grads(model: Transformer) -> tuple[jax.Array, nnx.State]:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p: nnx.State) -> jax.Array:
        m = nnx.merge(graphdef, p, rest)
        return -m.logps(TOKENS[:, :-1], TOKENS[:, 1:], attention_mask=MASK[:, :-1]).sum()

    return jax.jit(jax.value_and_grad(loss))(params)


def assert_same(a: tuple, b: tuple, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(float(a[0]), float(b[0]), rtol=1e-6)
    for x, y in zip(jax.tree.leaves(a[1]), jax.tree.leaves(b[1]), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-5)


def test_scanned_logits_and_gradients_equal_unrolled() -> None:
    model = Transformer(CFG, rngs=nnx.Rngs(0))
    scanned, unrolled = with_cfg(model, scan_layers=True), with_cfg(model, scan_layers=False)
    assert scanned._scan() and not unrolled._scan()
    np.testing.assert_allclose(np.asarray(scanned(TOKENS, attention_mask=MASK)),
                               np.asarray(unrolled(TOKENS, attention_mask=MASK)), atol=1e-5)
    assert_same(loss_and_grads(scanned), loss_and_grads(unrolled))


def test_scan_compiles_one_block_body() -> None:
    """The scanned program traces the block once: its size does not grow with depth."""
    def ops(n_layers: int, scan: bool) -> int:
        model = Transformer(CFG.replace(n_layers=n_layers, scan_layers=scan), rngs=nnx.Rngs(0))
        return jax.jit(lambda t: model(t)).lower(TOKENS).as_text().count("dot_general")

    assert ops(6, True) == ops(2, True)
    per_two_layers = ops(4, False) - ops(2, False)  # unrolled: linear in depth
    assert per_two_layers > 0 and ops(6, False) - ops(2, False) == 2 * per_two_layers


@pytest.mark.parametrize("targets", [(".*",), ("layers.0.attn.q_proj",)], ids=["all", "one-layer"])
def test_lora_scanned_equals_unrolled(targets: tuple[str, ...]) -> None:
    model = Transformer(CFG, rngs=nnx.Rngs(1))
    apply_lora(model, LoraSpec(rank=4, alpha=8, targets=targets), nnx.Rngs(2))
    for var in jax.tree.leaves(nnx.state(model, nnx.LoRAParam)):  # non-zero B: a real delta
        var += 0.01
    scanned, unrolled = with_cfg(model, scan_layers=True), with_cfg(model, scan_layers=False)
    # adapters on every layer share one block structure; on one layer they cannot scan
    assert scanned._scan() == (targets == (".*",))
    assert_same(loss_and_grads(scanned), loss_and_grads(unrolled))


@pytest.mark.parametrize(("policy", "scan"), [
    *((p, True) for p in REMAT_POLICIES if p != "none"), ("dots", False)])
def test_remat_policies_keep_loss_and_gradients(policy: str, scan: bool) -> None:
    model = Transformer(CFG, rngs=nnx.Rngs(3))
    assert_same(loss_and_grads(with_cfg(model, scan_layers=scan, remat=policy)),
                loss_and_grads(with_cfg(model, scan_layers=scan, remat="none")))


def test_unknown_remat_policy_names_the_choices() -> None:
    with pytest.raises(ModelConfigError, match="dots_no_batch"):
        CFG.replace(remat="sometimes")


def test_scanned_hf_model_matches_transformers(tmp_path) -> None:
    hf_model = make_hf_model("qwen3-untied")
    model = load_hf(save_hf_model(hf_model, tmp_path / "ckpt"))
    tokens = random_tokens(2, 16)
    scanned = with_cfg(model, scan_layers=True)
    assert scanned._scan()
    np.testing.assert_allclose(np.asarray(scanned(tokens)), hf_logits(hf_model, tokens), atol=1e-4,
                               rtol=0)

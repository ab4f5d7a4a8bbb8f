"""Stacked blocks equal unrolled ones (and transformers), with LoRA, under every remat policy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.models.hf_tiny import hf_logits, make_hf_model, random_tokens, save_hf_model
from tunix_dsl.models import Transformer
from tunix_dsl.models.config import REMAT_POLICIES, ModelConfig, ModelConfigError
from tunix_dsl.models.hf import load_hf, save_hf
from tunix_dsl.models.lora import LoraSpec, apply_lora, merge_lora

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8,
                  mlp_dim=64, max_seq_len=32, qk_norm=True)
TOKENS = jax.random.randint(jax.random.key(0), (2, 10), 0, 64)
MASK = jnp.arange(10)[None, :] >= jnp.array([0, 3])[:, None]  # row 1 left-padded


def copy(model: Transformer, *, stacked: bool | None = None, **changes: object) -> Transformer:
    """The same weights, stored stacked or not, under a changed (static) config."""
    graphdef, state = nnx.split(model)
    clone = nnx.merge(graphdef, jax.tree.map(jnp.copy, state))
    clone.cfg = model.cfg.replace(**changes)
    if stacked is True:
        clone.stack_layers()
    elif stacked is False:
        clone.unstack_layers()
    return clone


def loss_and_grads(model: Transformer) -> tuple[jax.Array, dict[str, np.ndarray]]:
    """The loss and its gradient per *logical* parameter path, whatever the storage."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p: nnx.State) -> jax.Array:
        m = nnx.merge(graphdef, p, rest)
        return -m.logps(TOKENS[:, :-1], TOKENS[:, 1:], attention_mask=MASK[:, :-1]).sum()

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    graph = nnx.merge(graphdef, grads, rest)
    flat = {}
    for path, var in nnx.to_flat_state(nnx.state(graph, nnx.Param)):
        g = np.asarray(var.get_value())
        if path[0] == "layers" and not isinstance(path[1], int):  # stacked: one entry per layer
            for i in range(g.shape[0]):
                flat[".".join(map(str, ("layers", i, *path[1:])))] = g[i]
        else:
            flat[".".join(map(str, path))] = g
    return value, flat


def assert_same(a: tuple, b: tuple, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(float(a[0]), float(b[0]), rtol=1e-6)
    assert sorted(a[1]) == sorted(b[1])
    for name in a[1]:
        np.testing.assert_allclose(a[1][name], b[1][name], atol=atol, rtol=1e-5, err_msg=name)


def test_stacked_by_default_same_init_and_logits_as_unrolled() -> None:
    stacked = Transformer(CFG, rngs=nnx.Rngs(0))
    unrolled = Transformer(CFG.replace(scan_layers=False), rngs=nnx.Rngs(0))
    assert stacked.stacked and not unrolled.stacked
    q = nnx.state(stacked)["layers"]["attn"]["q_proj"]["kernel"]
    assert q.get_value().shape == (3, 32, 32)
    assert q.get_metadata()["out_sharding"] == ("layers", "embed", "heads")
    np.testing.assert_array_equal(np.asarray(q.get_value()[1]),
                                  np.asarray(unrolled.layers[1].attn.q_proj.kernel.get_value()))
    np.testing.assert_allclose(np.asarray(stacked(TOKENS, attention_mask=MASK)),
                               np.asarray(unrolled(TOKENS, attention_mask=MASK)), atol=1e-5)
    assert_same(loss_and_grads(stacked), loss_and_grads(unrolled))


def test_hidden_states_attention_maps_and_cache_equal_unrolled() -> None:
    stacked = Transformer(CFG, rngs=nnx.Rngs(4))
    unrolled = copy(stacked, stacked=False)
    a = stacked(TOKENS, attention_mask=MASK, return_hidden=True, return_attention=True)
    b = unrolled(TOKENS, attention_mask=MASK, return_hidden=True, return_attention=True)
    for x, y in zip([*a.hidden_states, *a.attentions], [*b.hidden_states, *b.attentions],
                    strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)
    from tunix_dsl.models.kv_cache import init_cache

    cache = init_cache(CFG, 2, 16, jnp.float32)
    a, b = (m(TOKENS, attention_mask=MASK, cache=cache) for m in (stacked, unrolled))
    np.testing.assert_allclose(np.asarray(a.logits), np.asarray(b.logits), atol=1e-5)
    for x, y in zip(a.cache.k, b.cache.k, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)


def test_stacked_program_does_not_grow_with_depth() -> None:
    """The stacked step traces the block once: its size does not grow with depth."""
    def ops(n_layers: int, scan: bool) -> int:
        model = Transformer(CFG.replace(n_layers=n_layers, scan_layers=scan), rngs=nnx.Rngs(0))
        return jax.jit(lambda t: model(t)).lower(TOKENS).as_text().count("dot_general")

    assert ops(6, True) == ops(2, True)
    per_two_layers = ops(4, False) - ops(2, False)  # unrolled: linear in depth
    assert per_two_layers > 0 and ops(6, False) - ops(2, False) == 2 * per_two_layers


@pytest.mark.parametrize(("targets", "dropout", "stays_stacked"), [
    ((".*",), 0.0, True),
    (("layers.0.attn.q_proj",), 0.0, False),  # one layer differs: unstacked
    ((r"mlp\.",), 0.1, False),  # dropout's RNG counter cannot be scanned: unstacked
], ids=["all", "one-layer", "dropout"])
def test_lora_on_stacked_equals_lora_on_unrolled(targets: tuple[str, ...], dropout: float,
                                                 stays_stacked: bool) -> None:
    base = Transformer(CFG, rngs=nnx.Rngs(1))
    models = []
    for model in (copy(base), copy(base, stacked=False)):
        apply_lora(model, LoraSpec(rank=4, alpha=8, targets=targets, dropout=dropout), nnx.Rngs(2))
        model.eval()  # dropout off: the two draw different masks
        models.append(model)
    stacked, unrolled = models
    assert stacked.stacked == stays_stacked
    _same_adapters(stacked, unrolled)  # (their draws differ with the layout)
    assert_same(loss_and_grads(stacked), loss_and_grads(unrolled))
    np.testing.assert_allclose(np.asarray(merge_lora(stacked)(TOKENS)),
                               np.asarray(merge_lora(unrolled)(TOKENS)), atol=1e-5)


def _same_adapters(stacked: Transformer, unrolled: Transformer) -> None:
    """Give both models the same adapters, layer by layer; non-zero B: a real delta."""
    key = jax.random.key(7)
    for _, var in nnx.to_flat_state(nnx.state(unrolled, nnx.LoRAParam)):
        key, sub = jax.random.split(key)
        var.set_value(0.05 * jax.random.normal(sub, var.get_value().shape))
    if not stacked.stacked:
        nnx.update(stacked, nnx.state(unrolled, nnx.LoRAParam))
        return
    per_layer = nnx.state(unrolled, nnx.LoRAParam)["layers"]
    for path, var in nnx.to_flat_state(nnx.state(stacked, nnx.LoRAParam)["layers"]):
        layers = [per_layer[i] for i in range(CFG.n_layers)]
        for part in path:
            layers = [layer[part] for layer in layers]
        var.set_value(jnp.stack([v.get_value() for v in layers]))


@pytest.mark.parametrize("quantize", ["nf4", "int8"])
def test_qlora_on_stacked_equals_unrolled(quantize: str) -> None:
    base = Transformer(CFG.replace(d_model=64, head_dim=16, mlp_dim=128), rngs=nnx.Rngs(5))
    spec = LoraSpec(rank=4, alpha=8, quantize=quantize)
    stacked = apply_lora(copy(base), spec, nnx.Rngs(2))
    unrolled = apply_lora(copy(base, stacked=False), spec, nnx.Rngs(2))
    assert stacked.stacked
    codes = nnx.state(stacked)["layers"]["mlp"]["down_proj"]["codes"]
    assert codes.get_metadata()["out_sharding"][0] == "layers"
    np.testing.assert_allclose(np.asarray(stacked(TOKENS)), np.asarray(unrolled(TOKENS)),
                               atol=1e-5)


@pytest.mark.parametrize(("policy", "stacked"), [
    *((p, True) for p in REMAT_POLICIES if p != "none"), ("dots", False)])
def test_remat_policies_keep_loss_and_gradients(policy: str, stacked: bool) -> None:
    model = Transformer(CFG.replace(scan_layers=stacked), rngs=nnx.Rngs(3))
    assert_same(loss_and_grads(copy(model, remat=policy)), loss_and_grads(copy(model, remat="none")))


def test_unknown_remat_policy_names_the_choices() -> None:
    with pytest.raises(ModelConfigError, match="dots_no_batch"):
        CFG.replace(remat="sometimes")


def test_stacked_hf_model_matches_transformers_and_round_trips(tmp_path) -> None:
    hf_model = make_hf_model("qwen3-untied")
    model = load_hf(save_hf_model(hf_model, tmp_path / "ckpt"))
    assert model.stacked
    tokens = random_tokens(2, 16)
    np.testing.assert_allclose(np.asarray(model(tokens)), hf_logits(hf_model, tokens), atol=1e-4,
                               rtol=0)
    saved = save_hf(model, tmp_path / "out")
    for a, b in zip(jax.tree.leaves(nnx.state(load_hf(saved))), jax.tree.leaves(nnx.state(model)),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # stacked round trip: exact
    unrolled = load_hf(saved, scan_layers=False)
    assert not unrolled.stacked
    np.testing.assert_allclose(np.asarray(unrolled(tokens)), np.asarray(model(tokens)), atol=1e-4,
                               rtol=0)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("policy", ["full", "dots"])
def test_remat_with_lora_differentiates_the_adapters(policy: str, dropout: float) -> None:
    """Adapters on one layer (so the blocks run unrolled, each under remat) with the frozen base
    outside the differentiated state: `nnx.remat` raised flax's TraceContextError here."""
    model = Transformer(CFG, rngs=nnx.Rngs(6))
    apply_lora(model, LoraSpec(rank=4, alpha=8, targets=("layers.1.attn",), dropout=dropout),
               nnx.Rngs(2))
    assert not model.stacked
    for _, var in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam)):  # B != 0: dropout matters
        var.set_value(var.get_value() + 0.1)

    def adapter_grads(m: Transformer) -> tuple[jax.Array, nnx.State]:
        # split as the train step splits: RNG counters traced by the gradient transform too
        graphdef, lora, frozen, rngs = nnx.split(m, nnx.LoRAParam, nnx.Not(nnx.RngState), ...)

        def loss(p: nnx.State, r: nnx.State) -> jax.Array:
            return -nnx.merge(graphdef, p, frozen, r).logps(TOKENS[:, :-1], TOKENS[:, 1:]).sum()

        value, (grads, _) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), allow_int=True))(
            lora, rngs)
        return value, grads

    (value, grads), (want, want_grads) = (adapter_grads(copy(model, remat=r)) for r in (policy, "none"))
    np.testing.assert_allclose(float(value), float(want), rtol=1e-6)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-5, rtol=1e-5)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))
    if dropout:  # the RNG counter comes back out of the checkpointed block: masks change per call
        remat = copy(model, remat=policy)
        assert not np.array_equal(np.asarray(remat(TOKENS)), np.asarray(remat(TOKENS)))

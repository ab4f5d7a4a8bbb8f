"""The transformer against itself and plain numpy: padding, KV cache, remat, extra outputs."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tunix_dsl.models import ModelOutput, Transformer, init_cache
from tunix_dsl.models.config import PRESETS, ModelConfig

VOCAB = 67
LOGICAL_AXES = {"vocab", "embed", "heads", "kv_heads", "head_dim", "mlp", "layers"}
CONFIGS = {
    "llama": ModelConfig.from_preset(
        "pico", VOCAB, tie_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "qwen3": ModelConfig.from_preset("pico", VOCAB, family="qwen3", qk_norm=True, head_dim=24,
                                     n_kv_heads=1),
    "qwen2": ModelConfig.from_preset("pico", VOCAB, family="qwen2", qkv_bias=True),
}


def _model(name: str, **changes) -> Transformer:
    """A model with weights drawn in numpy (no per-shape jax compiles), larger than the 0.02
    init so that mistakes are visible above float noise; norm scales around 1."""
    cfg = CONFIGS[name].replace(**changes)
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        shape = var.get_value().shape
        base = 1.0 if path[-1] == "scale" else 0.0
        var.set_value(jnp.asarray(base + 0.2 * rng.standard_normal(shape), cfg.dtype))
    return model


@nnx.jit(static_argnames=("return_hidden", "return_attention"))
def forward(model, tokens, attention_mask=None, cache=None, return_hidden=False,
            return_attention=False):
    return model(tokens, attention_mask=attention_mask, cache=cache, return_hidden=return_hidden,
                 return_attention=return_attention)


@nnx.jit
def logps(model, tokens, targets):
    return model.logps(tokens, targets)


def _tokens(batch: int, length: int, seed: int = 0) -> np.ndarray:
    # numpy data: eager jax ops would each compile a small program for every new shape
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, length), dtype=np.int32)


def _flat_params(model: nnx.Module) -> dict[str, nnx.Variable]:
    return {".".join(map(str, p)): v for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


# ----------------------------------------------------------------------------- structure
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_parameter_has_logical_axes_and_count_matches(name):
    model = _model(name)
    params = _flat_params(model)
    for path, var in params.items():
        axes = var.get_metadata().get("out_sharding")
        assert axes is not None and len(axes) == var.get_value().ndim, path
        assert set(axes) <= LOGICAL_AXES, (path, axes)
    assert sum(v.get_value().size for v in params.values()) == model.cfg.param_count()
    assert params["layers.attn.q_proj.kernel"].get_value().shape == (  # stacked blocks
        model.cfg.n_layers, 64, 4 * model.cfg.head_dim)
    assert ("lm_head.kernel" in params) == (not model.cfg.tie_embeddings)


def test_presets_match_the_agreed_sizes():
    assert PRESETS["pico"] == dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                                   mlp_dim=192, max_seq_len=128)
    nano, micro = ModelConfig.from_preset("nano", 259), ModelConfig.from_preset("micro", 259)
    assert (nano.d_model, nano.n_layers, nano.head_dim, nano.mlp_dim) == (128, 4, 32, 384)
    assert (micro.d_model, micro.n_layers, micro.n_heads, micro.n_kv_heads) == (256, 6, 8, 4)


def test_hf_config_defaults_follow_transformers():
    base = dict(vocab_size=10, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                intermediate_size=32)
    qwen3 = ModelConfig.from_hf_config({**base, "architectures": ["Qwen3ForCausalLM"]})
    llama = ModelConfig.from_hf_config({**base, "architectures": ["LlamaForCausalLM"]})
    assert (qwen3.head_dim, qwen3.qk_norm, qwen3.qkv_bias) == (128, True, False)
    assert (llama.head_dim, llama.n_kv_heads, llama.tie_embeddings) == (16, 4, False)
    assert llama.rope_scaling is None and llama.rope_theta == 10000.0


def test_model_config_imports_without_jax():
    code = "import sys, tunix_dsl.models.config; assert 'jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- outputs
def test_logps_equal_numpy_log_softmax():
    model = _model("llama")
    tokens = _tokens(2, 9)
    logits = np.asarray(forward(model, tokens[:, :-1], np.ones((2, 8), bool)), np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    ref = np.take_along_axis(log_softmax, np.asarray(tokens[:, 1:])[..., None], -1)[..., 0]
    ours = np.asarray(logps(model, tokens[:, :-1], tokens[:, 1:]))
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=1e-5)


def test_hidden_states_and_attention_maps():
    model = _model("llama")
    tokens = _tokens(2, 8)
    mask = np.array([[True] * 8, [False] * 3 + [True] * 5])
    out = forward(model, tokens, mask, return_hidden=True, return_attention=True)
    assert isinstance(out, ModelOutput) and out.cache is None
    assert len(out.hidden_states) == len(out.attentions) == 2
    assert out.hidden_states[0].shape == (2, 8, 64) and out.attentions[0].shape == (2, 4, 8, 8)
    np.testing.assert_allclose(model.unembed(model.final_norm(out.hidden_states[-1])),
                               out.logits, atol=1e-5)
    probs = np.asarray(out.attentions[1])
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    # queries at real tokens (padding queries see only padding: their row is meaningless)
    assert np.all(np.triu(probs[0], k=1) == 0), "a token attended to the future"
    assert np.all(np.triu(probs[1, :, 3:, 3:], k=1) == 0), "a token attended to the future"
    assert np.all(probs[1, :, 3:, :3] == 0), "a real token attended to left padding"


# ----------------------------------------------------------------------------- padding, cache
# These tests share shapes ([2,8] full forwards with a mask) so that jit compiles are reused.
def _right_padded(rows: list[np.ndarray], length: int) -> np.ndarray:
    """Rows padded at the end: in a causal model the logits at the real tokens are those of
    the unpadded row."""
    return np.stack([np.pad(r, (0, length - r.shape[0])) for r in rows])


def test_left_padding_gives_the_unpadded_logits():
    model = _model("llama")
    rows = [_tokens(1, 8, seed=1)[0], _tokens(1, 5, seed=2)[0]]
    left = np.stack([rows[0], np.pad(rows[1], (3, 0))])
    left_mask = np.array([[True] * 8, [False] * 3 + [True] * 5])
    ours = np.asarray(forward(model, left, left_mask))
    ref = np.asarray(forward(model, _right_padded(rows, 8), np.ones((2, 8), bool)))
    np.testing.assert_allclose(ours[0], ref[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(ours[1, 3:], ref[1, :5], atol=1e-5, rtol=1e-5)


def test_cached_decode_equals_full_forward_with_left_padded_prompts():
    model = _model("llama")
    lengths, prompt_len, steps = [5, 2], 5, 4
    seqs = [_tokens(1, n + steps - 1, seed=i)[0] for i, n in enumerate(lengths)]
    prompt = np.stack([np.pad(s[:n], (prompt_len - n, 0)) for s, n in zip(seqs, lengths,
                                                                             strict=True)])
    prompt_mask = np.arange(prompt_len)[None] >= prompt_len - np.array(lengths)[:, None]

    out = forward(model, prompt, prompt_mask, init_cache(model.cfg, 2, prompt_len + steps))
    prefilled = out.cache
    decoded = [np.asarray(out.logits[:, -1])]
    for t in range(steps - 1):
        nxt = np.stack([s[n + t] for s, n in zip(seqs, lengths, strict=True)])[:, None]
        out = forward(model, nxt, np.ones((2, 1), bool), out.cache)
        decoded.append(np.asarray(out.logits[:, -1]))
    decoded = np.stack(decoded, axis=1)  # [B, steps, V]: logits predicting token n + t
    assert int(out.cache.index) == prompt_len + steps - 1

    full = np.asarray(forward(model, _right_padded(seqs, 8), np.ones((2, 8), bool)))
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(decoded[b], full[b, n - 1: n - 1 + steps], atol=1e-5,
                                   rtol=1e-5)

    # G completions per prompt share one prefill: row b of the repeated cache is row b // G.
    first = np.stack([s[n] for s, n in zip(seqs, lengths, strict=True)])[:, None]
    shared = forward(model, np.repeat(first, 2, axis=0), np.ones((4, 1), bool),
                     prefilled.repeat(2))
    np.testing.assert_allclose(shared.logits[:, 0], np.repeat(decoded[:, 1], 2, axis=0),
                               atol=1e-5, rtol=1e-5)


def test_cache_overflow_is_an_error():
    model = _model("llama")
    with pytest.raises(ValueError, match="max_len=4"):
        model(_tokens(1, 5), cache=init_cache(model.cfg, 1, 4))


# ----------------------------------------------------------------------------- remat, dtype
def test_remat_gives_same_loss_and_grads():
    tokens = _tokens(2, 9)
    plain, remat = _model("qwen3", n_layers=1), _model("qwen3", n_layers=1, remat=True)

    def loss(m):
        return -m.logps(tokens[:, :-1], tokens[:, 1:]).mean()

    results = [nnx.jit(nnx.value_and_grad(loss))(m) for m in (plain, remat)]
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-6, rtol=0)
    for g_plain, g_remat in zip(jax.tree.leaves(results[0][1]), jax.tree.leaves(results[1][1]),
                                strict=True):
        np.testing.assert_allclose(g_plain, g_remat, atol=1e-6, rtol=1e-5)
    # remat changes the program, not only a flag: the backward recomputes each block
    graphdef, state = nnx.split(remat)
    jaxpr = str(jax.make_jaxpr(lambda s: nnx.grad(loss)(nnx.merge(graphdef, s)))(state))
    assert "remat" in jaxpr or "checkpoint" in jaxpr


def test_bfloat16_parameters_and_activations():
    tokens = _tokens(2, 8)
    model32, model16 = _model("llama"), _model("llama", dtype="bfloat16")
    assert model16.blocks()[0].mlp.up_proj.kernel.get_value().dtype == jnp.bfloat16
    mask = np.ones((2, 8), bool)
    logits = forward(model16, tokens, mask)
    assert logits.dtype == jnp.bfloat16
    ref = np.asarray(forward(model32, tokens, mask))
    err = np.abs(np.asarray(logits, np.float32) - ref).max()
    assert err < 0.1 * np.abs(ref).max(), err

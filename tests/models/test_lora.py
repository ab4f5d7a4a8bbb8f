"""LoRA / QLoRA: exactness of zero-init, merge and adapters-off; gradients; quantization."""

from __future__ import annotations

from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tunix_dsl.models.config import ModelConfig
from tunix_dsl.models.layers import Dense
from tunix_dsl.models.lora import (
    LoraError,
    LoRAParam,
    LoraSpec,
    QuantizedWeight,
    adapters_disabled,
    apply_lora,
    lora_modules,
    merge_lora,
)
from tunix_dsl.models.quant import (
    NF4_LEVELS,
    dequantize_int8,
    dequantize_nf4,
    quantize_int8,
    quantize_nf4,
)
from tunix_dsl.models.transformer import Transformer

VOCAB = 259


def make_model(seed: int = 0, **overrides) -> Transformer:
    """Blocks stored one by one (these tests address `layers[i]`); LoRA on stacked blocks is
    compared with this layout in test_layer_stack.py."""
    overrides.setdefault("scan_layers", False)
    cfg = ModelConfig.from_preset("pico", VOCAB, **overrides)
    return Transformer(cfg, rngs=nnx.Rngs(seed))


def tokens(batch: int = 2, length: int = 12, seed: int = 1) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, VOCAB)


def randomize_b(model: nnx.Module, seed: int = 3) -> None:
    """Give every adapter a nonzero B so merge / adapters-off tests can fail."""
    for n, (_, module) in enumerate(lora_modules(model)):
        shape = module.lora_b[...].shape
        module.lora_b[...] = 0.05 * jax.random.normal(jax.random.key(seed + n), shape)


def test_zero_init_adapter_leaves_logits_unchanged() -> None:
    model, x = make_model(), tokens()
    before = model(x)
    apply_lora(model, LoraSpec(rank=4, alpha=8.0), rngs=nnx.Rngs(1))
    assert len(lora_modules(model)) == 2 * 7  # q k v o gate up down per layer
    assert jnp.array_equal(model(x), before)


def test_targets_select_modules_and_keep_base_paths() -> None:
    model = make_model(tie_embeddings=False)
    base_paths = {p for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    apply_lora(model, LoraSpec(rank=2, alpha=2.0, targets=[r"q_proj", r"v_proj"]), nnx.Rngs(0))
    names = [p for p, _ in lora_modules(model)]
    assert names == [f"layers.{i}.attn.{n}_proj" for i in range(2) for n in ("q", "v")]
    lora_paths = {p for p, _ in nnx.to_flat_state(nnx.state(model, LoRAParam))}
    frozen_paths = {p for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))} - lora_paths
    assert frozen_paths == base_paths  # the base weights kept their paths
    assert ("layers", 0, "attn", "q_proj", "lora_a") in lora_paths
    assert nnx.state(model, LoRAParam)["layers"][0]["attn"]["q_proj"]["lora_a"].get_metadata()[
        "out_sharding"
    ] == ("embed", None)


def test_merge_equals_unmerged_forward_and_is_plain() -> None:
    model, x = make_model(), tokens()
    apply_lora(model, LoraSpec(rank=4, alpha=16.0), nnx.Rngs(1))
    randomize_b(model)
    merged = merge_lora(model)
    assert not lora_modules(merged) and lora_modules(model)  # the original keeps its adapters
    assert not nnx.state(merged, LoRAParam)
    np.testing.assert_allclose(merged(x), model(x), atol=1e-5, rtol=0)
    assert float(jnp.max(jnp.abs(merged(x) - make_model()(x)))) > 1e-3  # the adapters mattered
    # independent reference for one kernel: W + alpha/rank * A @ B in numpy
    lora = model.layers[0].attn.q_proj
    expected = np.asarray(lora.kernel[...]) + 4.0 * (
        np.asarray(lora.lora_a[...]) @ np.asarray(lora.lora_b[...])
    )
    np.testing.assert_allclose(merged.layers[0].attn.q_proj.kernel[...], expected, atol=1e-6)
    assert isinstance(merged.layers[0].attn.q_proj, Dense)


@pytest.mark.parametrize("remat", [False, True])
def test_adapters_disabled_equals_base_inside_jit(remat: bool) -> None:
    base, x = make_model(remat=remat), tokens()
    model = nnx.clone(base)
    apply_lora(model, LoraSpec(rank=4, alpha=8.0), nnx.Rngs(1))
    randomize_b(model)

    @nnx.jit
    def policy_and_reference(m: nnx.Module, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        with adapters_disabled(m):
            reference = m(t)
        return m(t), reference

    policy, reference = policy_and_reference(model, x)
    np.testing.assert_allclose(reference, base(x), atol=1e-6, rtol=0)
    assert float(jnp.max(jnp.abs(policy - reference))) > 1e-3
    with adapters_disabled(model):  # eagerly too, and switched back on afterwards
        np.testing.assert_allclose(model(x), base(x), atol=1e-6, rtol=0)
    np.testing.assert_allclose(model(x), policy, atol=1e-5, rtol=0)


def test_only_lora_params_get_gradients_and_train() -> None:
    model, x = make_model(), tokens()
    apply_lora(model, LoraSpec(rank=4, alpha=8.0), nnx.Rngs(1))
    frozen_before = nnx.state(model, nnx.Not(LoRAParam))

    def loss_fn(m: nnx.Module) -> jax.Array:
        return jnp.mean(m.logps(x[:, :-1], x[:, 1:]))

    grads = nnx.jit(nnx.grad(loss_fn, argnums=nnx.DiffState(0, LoRAParam)))(model)
    flat = nnx.to_flat_state(grads)
    assert {path[-1] for path, _ in flat} == {"lora_a", "lora_b"}
    assert len(flat) == 2 * len(lora_modules(model))
    # B starts at zero, so A's gradient is zero at step 0 but B's is not
    assert all(float(jnp.abs(v[...]).max()) > 0 for p, v in flat if p[-1] == "lora_b")

    optimizer = nnx.Optimizer(model, __import__("optax").sgd(1.0), wrt=LoRAParam)
    before = model(x)
    optimizer.update(model, grads)
    assert float(jnp.max(jnp.abs(model(x) - before))) > 0
    for (p, old), (_, new) in zip(
        nnx.to_flat_state(frozen_before),
        nnx.to_flat_state(nnx.state(model, nnx.Not(LoRAParam))),
        strict=True,
    ):
        if isinstance(old, nnx.Param):
            assert jnp.array_equal(old[...], new[...]), p


def test_dropout_in_train_mode_only() -> None:
    model, x = make_model(), tokens()
    apply_lora(model, LoraSpec(rank=4, alpha=8.0, dropout=0.5), nnx.Rngs(1, dropout=2))
    randomize_b(model)
    first, second = model(x), model(x)
    assert float(jnp.max(jnp.abs(first - second))) > 0  # fresh masks each call
    model.eval()
    evaluated = model(x)
    np.testing.assert_array_equal(evaluated, model(x))
    with adapters_disabled(model):
        base = model(x)
    np.testing.assert_allclose(evaluated, merge_lora(model)(x), atol=1e-5, rtol=0)
    assert float(jnp.max(jnp.abs(evaluated - base))) > 1e-3


@pytest.mark.parametrize("fmt", ["nf4", "int8"])
def test_qlora_memory_and_forward(fmt: str) -> None:
    model, x = make_model(), tokens()
    float_bytes = sum(
        m.kernel[...].nbytes for _, m in nnx.iter_modules(model) if isinstance(m, Dense)
    )
    apply_lora(model, LoraSpec(rank=4, alpha=8.0, quantize=fmt), nnx.Rngs(1))
    quant_bytes = sum(
        v[...].nbytes for _, v in nnx.to_flat_state(nnx.state(model, QuantizedWeight))
    )
    assert quant_bytes <= 0.30 * float_bytes
    assert not any(p[-1] == "kernel" for p, _ in nnx.to_flat_state(nnx.state(model)))
    randomize_b(model)
    merged = merge_lora(model)  # dequantized base + adapters, plain Dense
    np.testing.assert_allclose(merged(x), model(x), atol=1e-5, rtol=0)
    with adapters_disabled(model):
        quantized_base = model(x)
    # reference: the float model with every kernel round-tripped through numpy quantization
    reference = make_model()
    for _, dense in nnx.iter_modules(reference):
        if isinstance(dense, Dense):
            dense.kernel[...] = NUMPY_QUANT[fmt](np.asarray(dense.kernel[...]))
    # ours vs the numpy round trip: 10x closer than either is to the float model (a rare
    # rounding tie may land on the other code, so not bit-exact)
    ours_vs_numpy = float(jnp.max(jnp.abs(quantized_base - reference(x))))
    quantization_error = float(jnp.max(jnp.abs(quantized_base - make_model()(x))))
    assert ours_vs_numpy < 0.1 * quantization_error, (ours_vs_numpy, quantization_error)


def numpy_nf4(w: np.ndarray) -> np.ndarray:
    """Reference NF4 round trip: 64-value blocks along axis 0, nearest level by brute force."""
    n_in, n_out = w.shape
    padded = np.zeros((-(-n_in // 64) * 64, n_out), np.float32)
    padded[:n_in] = w
    blocks = padded.reshape(-1, 64, n_out)
    absmax = np.abs(blocks).max(axis=1, keepdims=True)
    normalised = blocks / np.where(absmax > 0, absmax, 1)
    nearest = np.abs(normalised[..., None] - NF4_LEVELS).argmin(axis=-1)
    return (NF4_LEVELS[nearest] * absmax).reshape(padded.shape)[:n_in]


def numpy_int8(w: np.ndarray) -> np.ndarray:
    """Reference int8 round trip: per-output-channel absmax / 127."""
    scale = np.abs(w).max(axis=0) / 127
    return np.round(w / scale) * scale


NUMPY_QUANT = {"nf4": numpy_nf4, "int8": numpy_int8}


def test_nf4_levels_are_normal_quantiles() -> None:
    normal = NormalDist()
    positive = [normal.inv_cdf(p) for p in np.linspace(0.9677083, 0.5, 9)[:-1]]
    negative = [-normal.inv_cdf(p) for p in np.linspace(0.9677083, 0.5, 8)[:-1]]
    levels = np.sort(np.array([*positive, 0.0, *negative]))
    np.testing.assert_allclose(NF4_LEVELS, levels / np.abs(levels).max(), atol=1e-6)


@pytest.mark.parametrize("shape", [(128, 48), (100, 7)])  # 100: a padded last block
def test_nf4_matches_numpy_and_error_bound(shape: tuple[int, int]) -> None:
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    w[:64, 0] = 0.0  # an all-zero block stays zero
    q = quantize_nf4(jnp.asarray(w))
    assert q.codes.dtype == jnp.uint8 and q.codes.shape == (-(-shape[0] // 64) * 32, shape[1])
    ours = np.asarray(dequantize_nf4(q))
    reference = numpy_nf4(w)
    assert np.mean(np.isclose(ours, reference, atol=1e-6)) > 0.999  # ties may round either way
    absmax = np.repeat(np.asarray(q.scales), 64, axis=0)[: shape[0]]
    half_gap = np.max(np.diff(NF4_LEVELS)) / 2
    assert np.all(np.abs(ours - w) <= absmax * half_gap + 1e-6)
    assert np.all(ours[:64, 0] == 0.0)


def test_int8_matches_numpy_and_error_bound() -> None:
    w = np.random.default_rng(1).standard_normal((96, 40)).astype(np.float32)
    q = quantize_int8(jnp.asarray(w))
    assert q.codes.dtype == jnp.int8
    scale = np.abs(w).max(axis=0) / 127
    reference = numpy_int8(w)
    ours = np.asarray(dequantize_int8(q))
    np.testing.assert_allclose(ours, reference, atol=1e-6)
    assert np.all(np.abs(ours - w) <= scale / 2 + 1e-6)


def test_errors_name_the_fix() -> None:
    with pytest.raises(LoraError, match="rank must be a positive integer"):
        LoraSpec(rank=0, alpha=1.0)
    with pytest.raises(LoraError, match="unknown LoRA quantize 'fp4'"):
        LoraSpec(rank=2, alpha=1.0, quantize="fp4")
    with pytest.raises(LoraError, match="not a valid regex"):
        LoraSpec(rank=2, alpha=1.0, targets=["q_proj("])
    model = make_model()
    with pytest.raises(LoraError, match="'qq_proj' matches no Dense kernel; paths look like"):
        apply_lora(model, LoraSpec(rank=2, alpha=1.0, targets=["qq_proj"]), nnx.Rngs(0))
    with pytest.raises(LoraError, match="no LoRA adapters"):
        with adapters_disabled(model):
            pass
    apply_lora(model, LoraSpec(rank=2, alpha=1.0), nnx.Rngs(0))
    with pytest.raises(LoraError, match="already has LoRA adapters"):
        apply_lora(model, LoraSpec(rank=2, alpha=1.0), nnx.Rngs(0))

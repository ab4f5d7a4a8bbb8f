"""compiler/optim.py: schedules, weight-decay masking, clipping and the four optimizers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from pydantic import ValidationError

from tests.compiler import numpy_ref as ref
from tunix_dsl.compiler.optim import build_optimizer, build_schedule, decay_mask, optimizer_spec
from tunix_dsl.schemas.training import OPTIMIZERS, SGD, Adafactor, AdamW, Lion


def _params() -> dict:
    rng = np.random.default_rng(0)
    return {
        "embed": {"embedding": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)},
        "layers": {
            "0": {
                "attn": {"q_proj": {"kernel": jnp.asarray(rng.normal(size=(4, 4)), jnp.float32),
                                    "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}},
                "input_norm": {"scale": jnp.asarray(rng.normal(size=(4,)), jnp.float32)},
            }
        },
        # a 2-D parameter under a norm path component is still exempt
        "final_norm": {"weight": jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)},
    }


EXPECTED_DECAY = {
    "embed": {"embedding": True},
    "layers": {"0": {"attn": {"q_proj": {"kernel": True, "bias": False}},
                     "input_norm": {"scale": False}}},
    "final_norm": {"weight": False},
}


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_schedule_warmup_then_decay_to_min(kind):
    spec = AdamW(lr=0.5, warmup=3, schedule=kind, min_lr_ratio=0.1)
    schedule = build_schedule(spec, total_steps=12)
    jitted = jax.jit(schedule)
    for step in range(15):
        expected = ref.learning_rate(step, 0.5, 3, 12, kind, 0.1)
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-6)
        np.testing.assert_allclose(float(jitted(jnp.int32(step))), expected, rtol=1e-6)
    assert float(schedule(0)) > 0  # the first update already moves
    if kind != "constant":
        np.testing.assert_allclose(float(schedule(12)), 0.05, rtol=1e-6)


def test_mapping_specs_are_validated_by_the_schema():
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        build_optimizer({"name": "adam"}, total_steps=10)
    with pytest.raises(ValidationError, match="schedule"):
        build_schedule({"name": "adamw", "schedule": "step"}, total_steps=10)
    with pytest.raises(ValidationError, match="Nesterov momentum needs `momentum` > 0"):
        build_optimizer({"name": "sgd", "nesterov": True})
    with pytest.raises(ValidationError, match="finite"):
        build_optimizer({"name": "adamw", "lr": float("inf")})


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_defaults_come_from_the_schema(name):
    spec = optimizer_spec({"name": name})
    schema = OPTIMIZERS[name]
    assert spec == schema()
    for field, info in schema.model_fields.items():
        assert getattr(spec, field) == info.default, field


def test_schedule_preconditions_are_assertions():
    # the checker refuses these (TNX221, schema ranges); the compiler only asserts them
    with pytest.raises(AssertionError, match="needs the stage's total steps"):
        build_schedule({"name": "adamw", "schedule": "cosine"})
    with pytest.raises(AssertionError, match="TNX221"):
        build_schedule(AdamW(warmup=10), total_steps=10)


def test_decay_mask_skips_one_dimensional_norm_and_bias_params():
    assert decay_mask(_params()) == EXPECTED_DECAY


@pytest.mark.parametrize("spec", [
    AdamW(lr=0.1, weight_decay=0.5, clip_norm=None),
    SGD(lr=0.1, weight_decay=0.5, momentum=0.9),
    Lion(lr=0.1, weight_decay=0.5),
    Adafactor(lr=0.1, weight_decay=0.5),
], ids=lambda s: s.call_name)
def test_weight_decay_is_decoupled_and_masked(spec):
    params = _params()
    tx = build_optimizer(spec, total_steps=5)
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    # with zero gradients the update is exactly −lr·wd·p where decay applies, else 0
    expected = jax.tree.map(
        lambda p, decays: -0.1 * 0.5 * p if decays else jnp.zeros_like(p), params, EXPECTED_DECAY
    )
    jax.tree.map(lambda u, e: np.testing.assert_allclose(u, e, rtol=1e-6, atol=1e-8),
                 updates, expected)


def test_adamw_matches_a_numpy_adamw():
    spec = {"name": "adamw", "lr": 0.01, "warmup": 2, "schedule": "linear", "weight_decay": 0.1,
            "b1": 0.8, "b2": 0.9, "eps": 1e-6, "clip_norm": None}
    tx = build_optimizer(spec, total_steps=6)
    rng = np.random.default_rng(1)
    param = rng.normal(size=(3, 2))
    params = {"w": jnp.asarray(param, jnp.float32)}
    state = tx.init(params)
    m = v = np.zeros_like(param)
    for step in range(4):
        grad = rng.normal(size=(3, 2))
        updates, state = tx.update({"w": jnp.asarray(grad, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
        lr = ref.learning_rate(step, 0.01, 2, 6, "linear", 0.0)
        m = 0.8 * m + 0.2 * grad
        v = 0.9 * v + 0.1 * grad**2
        m_hat, v_hat = m / (1 - 0.8 ** (step + 1)), v / (1 - 0.9 ** (step + 1))
        param = param - lr * (m_hat / (np.sqrt(v_hat) + 1e-6) + 0.1 * param)
        np.testing.assert_allclose(params["w"], param, rtol=1e-5, atol=1e-7)


def test_lion_sgd_and_adafactor_match_optax_builtins():
    rng = np.random.default_rng(2)
    params = {"w": jnp.asarray(rng.normal(size=(130, 129)), jnp.float32)}  # factored by Adafactor
    pairs = [
        (Lion(lr=0.01, b1=0.8, b2=0.95, weight_decay=0.1, clip_norm=None),
         optax.lion(0.01, b1=0.8, b2=0.95, weight_decay=0.1, mask=decay_mask)),
        (SGD(lr=0.1, momentum=0.9, nesterov=True, clip_norm=None),
         optax.sgd(0.1, momentum=0.9, nesterov=True)),
        (Adafactor(lr=0.01, decay_rate=0.7, clip_norm=None),
         optax.adafactor(0.01, decay_rate=0.7, multiply_by_parameter_scale=False)),
    ]
    for ours, theirs in pairs:
        tx = build_optimizer(ours, total_steps=5)
        p_ours = p_theirs = params
        s_ours, s_theirs = tx.init(params), theirs.init(params)
        for _ in range(3):
            grads = {"w": jnp.asarray(rng.normal(size=(130, 129)), jnp.float32)}
            u, s_ours = tx.update(grads, s_ours, p_ours)
            p_ours = optax.apply_updates(p_ours, u)
            u, s_theirs = theirs.update(grads, s_theirs, p_theirs)
            p_theirs = optax.apply_updates(p_theirs, u)
        np.testing.assert_allclose(p_ours["w"], p_theirs["w"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("clip_norm,scale", [(1.0, 0.1), (100.0, 1.0), (None, 1.0)])
def test_global_norm_clipping(clip_norm, scale):
    grads = {"a": jnp.full((2, 2), 3.0), "b": jnp.full((4,), 3.0)}  # global norm 3·√8 ≈ 8.5
    grads = jax.tree.map(lambda g: g * 10.0 / (3.0 * np.sqrt(8)), grads)  # global norm 10
    tx = build_optimizer(SGD(lr=1.0, clip_norm=clip_norm))
    updates, _ = tx.update(grads, tx.init(grads), grads)
    jax.tree.map(lambda u, g: np.testing.assert_allclose(u, -g * scale, rtol=1e-6),
                 updates, grads)


def test_works_on_nnx_state_with_nnx_optimizer():
    class Tiny(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.proj = nnx.Linear(3, 3, rngs=rngs)
            self.norm = nnx.RMSNorm(3, rngs=rngs)

    model = Tiny(nnx.Rngs(0))
    model.proj.bias[...] = jnp.ones(3)
    before = nnx.clone(model)
    tx = build_optimizer(AdamW(lr=0.1, weight_decay=0.5), total_steps=3)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    grads = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    optimizer.update(model, grads)
    np.testing.assert_allclose(model.proj.kernel[...], before.proj.kernel[...] * (1 - 0.05),
                               rtol=1e-6)
    np.testing.assert_array_equal(model.proj.bias[...], before.proj.bias[...])
    np.testing.assert_array_equal(model.norm.scale[...], before.norm.scale[...])

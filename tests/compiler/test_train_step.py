"""The generic step: LoRA dropout RNG state advances inside the step; non-finite updates skip."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tunix_dsl.compiler import sharding
from tunix_dsl.compiler.model_init import init_model
from tunix_dsl.compiler.program import lower_stage
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.compiler.train_step import build_step, init_state, split_modules
from tunix_dsl.data.datasets import synthetic_rows
from tunix_dsl.data.tokenizers import ByteTokenizer
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.models.lora import LoraSpec, apply_lora
from tunix_dsl.runtime.batches import BatchStream
from tunix_dsl.runtime.data import tokenize_rows
from tunix_dsl.schemas.base import ModelRef
from tunix_dsl.schemas.stages import SFTConfig
from tunix_dsl.schemas.training import AdamW, Lora


def lora_sft_losses(dropout: float, steps: int = 3) -> tuple[list[float], list]:
    tok = ByteTokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1,
                      head_dim=16, mlp_dim=64, max_seq_len=32)
    mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
    policy = init_model(cfg, mesh, seed=0)
    apply_lora(policy, LoraSpec(4, 8.0, dropout=dropout), nnx.Rngs(params=1, dropout=2))
    config = SFTConfig(model=ModelRef(kind="decl", name="m"), data="d", steps=steps, batch_size=8,
                       optimizer=AdamW(lr=1e-2), max_seq_len=32, lora=Lora(rank=4, dropout=dropout))
    program = lower_stage("s", "sft", config, StageModels({"model": policy}, lora=True), mesh, batch_size=8)
    rows = synthetic_rows("addition", count=64, seed=1)
    stream = BatchStream(tokenize_rows(rows, "prompt_completion", tok, 32), 8, seed=0, buckets=(32,))
    state, losses = program.init_state(), []
    for _ in range(steps):
        batch = stream.next_batches(1)
        batch.pop("example_ids")
        state, metrics = program.step(state, program.split.frozen, program.put_batch(batch))
        losses.append(float(metrics["loss"][0]))
    return losses, jax.tree.leaves(jax.device_get(state.rest))


def test_lora_dropout_trains_deterministically_and_advances_its_rng() -> None:
    with_dropout, rest = lora_sft_losses(0.5)
    again, rest_again = lora_sft_losses(0.5)
    without, _ = lora_sft_losses(0.0)
    assert with_dropout == again  # same seed, same masks
    counts = [int(x) for x in rest if jnp.issubdtype(x.dtype, jnp.integer)]
    assert counts and all(c > 0 for c in counts)  # the dropout stream was drawn from in the step
    assert with_dropout[0] == without[0]  # B starts at zero: the adapter path adds nothing yet
    assert with_dropout[1:] != without[1:]  # then dropout changes the updates


class Toy(nnx.Module):
    def __init__(self) -> None:
        self.w = nnx.Param(jnp.ones((3,)))


def test_nonfinite_update_is_skipped_when_asked() -> None:
    def micro_sums(m: Toy, mb: dict) -> dict:
        loss = jnp.sum(m.w[...] * mb["x"]) * jnp.where(mb["poison"].sum() > 0, jnp.nan, 1.0)
        return {"loss_sum": loss, "n": jnp.float32(1.0)}

    def from_sums(sums: dict):
        return sums["loss_sum"] / sums["n"], {"loss": sums["loss_sum"] / sums["n"]}

    split = split_modules(Toy(), nnx.Param)
    tx = optax.sgd(0.1)
    step = jax.jit(build_step(split.graphdef, lambda b: {"n": jnp.float32(1.0)}, micro_sums, from_sums,
                              tx, skip_nonfinite=True))
    state = init_state(split, tx)
    batch = lambda poison: {"x": jnp.ones((1, 1, 1, 3)), "poison": jnp.full((1, 1, 1), poison)}  # noqa: E731
    poisoned, metrics = step(state, split.frozen, batch(1.0))
    assert float(metrics["skipped"][0]) == 1.0
    np.testing.assert_array_equal(poisoned.trainable["w"][...], np.ones(3))
    assert int(poisoned.step) == 1  # the step and its data still count
    clean, metrics = step(poisoned, split.frozen, batch(0.0))
    assert float(metrics["skipped"][0]) == 0.0
    np.testing.assert_allclose(clean.trainable["w"][...], np.full(3, 0.9))

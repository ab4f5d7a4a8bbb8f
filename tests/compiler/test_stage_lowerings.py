"""Every supervised lowering compiles, trains what it should, and leaves the rest frozen."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from tunix_dsl.compiler import sharding
from tunix_dsl.compiler.model_init import init_model
from tunix_dsl.compiler.program import lower_stage
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.data.datasets import synthetic_rows
from tunix_dsl.data.tokenizers import ByteTokenizer
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.models.lora import LoraSpec, apply_lora
from tunix_dsl.runtime.batches import BatchStream
from tunix_dsl.runtime.data import tokenize_rows
from tunix_dsl.schemas.base import ModelRef
from tunix_dsl.schemas.stages import DistillConfig, ORPOConfig, SFTConfig
from tunix_dsl.schemas.training import (
    AdamW,
    AttentionStrategy,
    FeatureProjectionStrategy,
    LogitStrategy,
    QLora,
)

TOK = ByteTokenizer()
REF = ModelRef(kind="decl", name="m")
MESH = sharding.make_mesh({"data": 1}, jax.devices()[:1])


def model(layers: int, heads: int, d_model: int, seed: int):
    cfg = ModelConfig(vocab_size=TOK.vocab_size, d_model=d_model, n_layers=layers, n_heads=heads,
                      n_kv_heads=heads, head_dim=16, mlp_dim=2 * d_model, max_seq_len=32)
    return init_model(cfg, MESH, seed=seed)


def train(kind: str, config, models: StageModels, task: str, consumer: str, steps: int = 12):
    program = lower_stage("s", kind, config, models, MESH, batch_size=8)
    frozen_before = jax.device_get(program.split.frozen)
    stream = BatchStream(tokenize_rows(synthetic_rows(task, count=64, seed=1), consumer, TOK, 32), 8,
                         seed=0, buckets=(32,))
    state, losses = program.init_state(), []
    for _ in range(steps):
        batch = stream.next_batches(1)
        batch.pop("example_ids")
        state, metrics = program.step(state, program.split.frozen, program.put_batch(batch))
        losses.append(float(metrics["loss"][0]))
    return program, state, losses, frozen_before


def assert_learns(losses: list[float]) -> None:
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


@pytest.mark.parametrize(
    "strategy", [LogitStrategy(), AttentionStrategy(), FeatureProjectionStrategy()], ids=lambda s: s.call_name
)
def test_distill_strategies_train_the_student_only(strategy) -> None:
    teacher, student = model(2, 4, 64, seed=1), model(1, 2, 32, seed=2)
    config = DistillConfig(teacher=REF, student=REF, data="d", steps=12, batch_size=8, max_seq_len=32,
                           optimizer=AdamW(lr=1e-2), strategy=strategy)
    program, state, losses, frozen = train(
        "distill", config, StageModels({"teacher": teacher, "student": student}), "addition", "lm")
    assert_learns(losses)
    trained_paths = {p[0] for p, _ in nnx.to_flat_state(state.trainable)}
    expected = {"student", "projection"} if strategy.call_name == "feature_projection" else {"student"}
    assert trained_paths == expected
    # the teacher is frozen input, untouched by training
    for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(jax.device_get(program.split.frozen)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_orpo_learns_to_prefer_chosen() -> None:
    config = ORPOConfig(policy=REF, data="d", steps=12, batch_size=8, max_seq_len=32, optimizer=AdamW(lr=1e-2))
    _, _, losses, _ = train("orpo", config, StageModels({"policy": model(1, 2, 32, 3)}),
                            "addition_preferences", "preference")
    assert_learns(losses)


@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_qlora_sft_trains_adapters_over_a_quantized_base(quant: str) -> None:
    base = model(1, 2, 32, 4)
    apply_lora(base, LoraSpec(4, 8.0, quantize=quant), nnx.Rngs(params=0))
    config = SFTConfig(model=REF, data="d", steps=12, batch_size=8, max_seq_len=32,
                       optimizer=AdamW(lr=1e-2), lora=QLora(rank=4, quant=quant))
    program, state, losses, _ = train("sft", config, StageModels({"model": base}, lora=True),
                                      "addition", "prompt_completion")
    assert_learns(losses)
    names = {p[-1] for p, _ in nnx.to_flat_state(state.trainable)}
    assert names == {"lora_a", "lora_b"}
    frozen_dtypes = {v.dtype for v in jax.tree.leaves(program.split.frozen)}
    assert np.dtype("uint8") in frozen_dtypes or np.dtype("int8") in frozen_dtypes

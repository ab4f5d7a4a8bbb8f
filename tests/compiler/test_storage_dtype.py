"""Frozen weights are held in the compute dtype; stage outputs are written in the master dtype.

A bfloat16 LoRA step computes the same losses bit for bit whether its frozen base is held in
float32 (cast at every use) or in bfloat16 (cast once), and the merged output is float32.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from safetensors.numpy import load_file

from tests.compiler.test_precision import MESH, PICO, RESUMABLE, floating_dtypes, run, train_steps
from tunix_dsl.compiler.model_init import init_model
from tunix_dsl.compiler.program import StageProgram, lower_stage
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.compiler.storage_dtype import in_param_dtype
from tunix_dsl.models.lora import LoRAParam, LoraSpec, apply_lora, merge_lora
from tunix_dsl.schemas.base import ModelRef
from tunix_dsl.schemas.stages import DPOConfig, SFTConfig
from tunix_dsl.schemas.training import AdamW

BF16 = PICO.replace(dtype="bfloat16", n_layers=2)


def lora_program() -> StageProgram:
    model = init_model(BF16, MESH, seed=0)
    apply_lora(model, LoraSpec(rank=4, alpha=8, targets=(".*",)), nnx.Rngs(1))
    config = SFTConfig(model=ModelRef(kind="decl", name="m"), data="d", steps=4, batch_size=8,
                       max_seq_len=32, optimizer=AdamW(lr=1e-2))
    return lower_stage("s", "sft", config, StageModels({"model": model}, lora=True), MESH, batch_size=8)


def test_lora_base_is_held_in_bfloat16_and_computes_the_same_losses() -> None:
    program = lora_program()
    assert floating_dtypes(program.split.frozen) == {"bfloat16"}  # base kernels, embedding, norms
    assert floating_dtypes(program.split.trainable) == {"float32"}  # the adapters keep a master
    as_float32 = jax.tree.map(lambda x: x.astype(jnp.float32), program.split.frozen)
    _, held_bf16 = train_steps(program, 3)
    _, held_f32 = train_steps(program, 3, as_float32)
    assert held_bf16 == held_f32  # the forward casts to bf16 at every use either way
    assert held_bf16[-1] < held_bf16[0]


def test_lora_output_is_float32_base_plus_the_update() -> None:
    program = lora_program()
    state, _ = train_steps(program, 2)
    trained = program.merged_modules(state).model
    output = merge_lora(in_param_dtype(trained))
    assert floating_dtypes(nnx.state(output, nnx.Param)) == {"float32"}
    # the merged kernel: the bf16 base the adapter was trained against, plus scale * A @ B in f32
    layer = trained.layers.attn.q_proj if hasattr(trained.layers, "attn") else trained.layers[0].attn.q_proj
    merged = output.layers.attn.q_proj if hasattr(output.layers, "attn") else output.layers[0].attn.q_proj
    expected = np.asarray(layer.kernel[...], np.float32) + np.asarray(layer.delta(), np.float32)
    np.testing.assert_allclose(np.asarray(merged.kernel[...]), expected, rtol=0, atol=1e-7)
    assert floating_dtypes(nnx.state(trained, LoRAParam)) == {"float32"}  # trained itself unchanged


def test_dpo_reference_is_held_in_bfloat16_policy_trains_in_float32() -> None:
    policy, reference = init_model(BF16, MESH, seed=0), init_model(BF16, MESH, seed=0)
    config = DPOConfig(policy=ModelRef(kind="decl", name="m"), reference=ModelRef(kind="decl", name="m"),
                       data="d", steps=2, batch_size=4, max_seq_len=32, optimizer=AdamW(lr=1e-3))
    program = lower_stage("p", "dpo", config, StageModels({"policy": policy, "reference": reference}),
                          MESH, batch_size=4)
    assert floating_dtypes(program.split.frozen) == {"bfloat16"}
    assert floating_dtypes(program.split.trainable) == {"float32"}
    # the models the stage was given (a previous stage's output) keep their float32 weights
    assert floating_dtypes(nnx.state(reference, nnx.Param)) == {"float32"}


def test_float32_run_keeps_everything_float32() -> None:
    model = init_model(PICO, MESH, seed=0)
    apply_lora(model, LoraSpec(rank=4, alpha=8, targets=("q_proj",)), nnx.Rngs(1))
    config = SFTConfig(model=ModelRef(kind="decl", name="m"), data="d", steps=2, batch_size=8,
                       max_seq_len=32, optimizer=AdamW(lr=1e-2))
    program = lower_stage("s", "sft", config, StageModels({"model": model}, lora=True), MESH, batch_size=8)
    assert floating_dtypes(program.split.frozen) == {"float32"}


# test_precision's bf16 pretrain, then a LoRA stage on its output
LORA_PIPELINE = RESUMABLE[: RESUMABLE.index("export")] + """
stage tune: sft {
  model       = base.model
  data        = sums
  steps       = 3
  batch_size  = 4
  max_seq_len = 16
  lora        = lora(rank = 2, alpha = 4)
  optimizer   = adamw(lr = 1e-2)
}
"""


def test_bfloat16_lora_stage_writes_float32_base_plus_update(tmp_path: Path) -> None:
    """Through the executor: the base is held in bf16 while the stage runs, its output is f32."""
    run_dir = run(LORA_PIPELINE, tmp_path)
    base = load_file(run_dir / "stages" / "base" / "output" / "model.safetensors")
    tuned = load_file(run_dir / "stages" / "tune" / "output" / "model.safetensors")
    assert {str(t.dtype) for t in tuned.values()} == {"float32"}
    for name, weight in tuned.items():
        held = base[name].astype(ml_dtypes.bfloat16).astype(np.float32)
        if "proj" in name:  # base (as held) + update: the adapter moved it
            assert not np.array_equal(weight, held), name
        else:  # not adapted: the base as the stage held it
            np.testing.assert_array_equal(weight, held, err_msg=name)

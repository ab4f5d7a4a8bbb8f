"""Mixed precision: bfloat16 compute over float32 master weights.

A `precision = "bfloat16"` run keeps parameters, Adam's moments and the
gradient accumulator in float32 and casts parameters to bfloat16 where they are
used; it learns as well as a float32 run, resumes bit-identically, saves its
stage outputs at full precision and exports bfloat16 weights.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from tunix_dsl.api import parse
from tunix_dsl.compiler import sharding
from tunix_dsl.compiler.model_init import init_model
from tunix_dsl.compiler.program import lower_stage
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.data.datasets import synthetic_rows
from tunix_dsl.data.tokenizers import ByteTokenizer
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.runtime.batches import BatchStream
from tunix_dsl.runtime.data import tokenize_rows
from tunix_dsl.runtime.executor import Executor
from tunix_dsl.runtime.preemption import Preempted
from tunix_dsl.schemas.base import ModelRef
from tunix_dsl.schemas.stages import SFTConfig
from tunix_dsl.schemas.training import AdamW

EXAMPLE = Path(__file__).parents[2] / "examples" / "supervised.tnx"
MESH = sharding.make_mesh({"data": 1}, jax.devices()[:1])
TOK = ByteTokenizer()


def floating_dtypes(tree: object) -> set[str]:
    return {str(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def run(text: str, work: Path, **executor_kwargs: object) -> Path:
    pipeline = parse(text, str(work / "p.tnx"))
    assert pipeline.ok, [d.message for d in pipeline.diagnostics]
    Executor(pipeline, work / "run", log=lambda _line: None, **executor_kwargs).run()
    return work / "run"


def final_loss(run_dir: Path, stage: str, last: int = 10) -> float:
    rows = [json.loads(line) for line in (run_dir / "stages" / stage / "metrics.jsonl").open()]
    return float(np.mean([r["loss"] for r in rows[-last:]]))


def example_base_stage(precision: str, steps: int) -> str:
    """examples/supervised.tnx cut to its pretrain stage (nano, batch 32), `steps` long."""
    text = EXAMPLE.read_text()
    text = text[: text.index("stage tune:")].replace('precision = "float32"', f'precision = "{precision}"')
    text = text.replace("steps       = 600 * scale", f"steps       = {steps}")
    return text + 'export base.model to "exported" as "hf"\n'


def test_bfloat16_example_learns_like_float32_and_exports_bfloat16(tmp_path: Path) -> None:
    losses = {}
    for precision in ("float32", "bfloat16"):
        # 50 steps: past the loss spike the example's learning rate causes around step 23
        run_dir = run(example_base_stage(precision, 50), tmp_path / precision)
        losses[precision] = final_loss(run_dir, "base")
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.05), losses
    # the stage output keeps the float32 master weights (exact hand-off to the next stage) ...
    output = tmp_path / "bfloat16" / "run" / "stages" / "base" / "output"
    assert {str(t.dtype) for t in load_file(output / "model.safetensors").values()} == {"float32"}
    # ... and the export is written in the run's precision, named in config.json
    exported = tmp_path / "bfloat16" / "exported"
    assert {str(t.dtype) for t in load_file(exported / "model.safetensors").values()} == {"bfloat16"}
    assert json.loads((exported / "config.json").read_text())["torch_dtype"] == "bfloat16"


def sft_program(cfg: ModelConfig, grad_accum: int = 1):
    config = SFTConfig(model=ModelRef(kind="decl", name="m"), data="d", steps=4, batch_size=8,
                       max_seq_len=32, optimizer=AdamW(lr=1e-2))
    models = StageModels({"model": init_model(cfg, MESH, seed=0)})
    return lower_stage("s", "sft", config, models, MESH, batch_size=8, grad_accum=grad_accum)


def train_steps(program, steps: int, frozen: nnx.State | None = None) -> tuple[object, list[float]]:
    """`steps` steps on one-digit sums; `frozen` replaces the program's own frozen weights."""
    stream = BatchStream(tokenize_rows(synthetic_rows("addition", count=64, seed=1), "lm", TOK, 32), 8,
                         seed=0, buckets=(32,))
    state, losses = program.init_state(), []
    for _ in range(steps):
        batch = stream.next_batches(1)
        batch.pop("example_ids")
        state, metrics = program.step(state, program.split.frozen if frozen is None else frozen,
                                      program.put_batch(batch))
        losses.append(float(metrics["loss"][0]))
    return state, losses


PICO = ModelConfig.from_preset("pico", TOK.vocab_size, n_layers=1, max_seq_len=32)


def test_bfloat16_train_state_is_float32_and_compute_is_bfloat16() -> None:
    cfg = PICO.replace(dtype="bfloat16")
    program = sft_program(cfg, grad_accum=2)
    abstract = program.abstract_state()
    assert floating_dtypes(abstract.trainable) == {"float32"}
    assert floating_dtypes(abstract.opt_state) == {"float32"}  # Adam's mu and nu
    model = program.merged_modules(program.init_state()).model
    assert model(jnp.zeros((1, 4), jnp.int32)).dtype == jnp.bfloat16  # activations and logits
    state, losses = train_steps(program, 3)
    assert floating_dtypes(state.trainable) == floating_dtypes(state.opt_state) == {"float32"}
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_bfloat16_storage_keeps_a_float32_gradient_sum() -> None:
    """param_dtype = bfloat16: parameters and moments are bfloat16; micro-batch gradients are
    still summed in float32, so accumulation over 2 micro-batches matches one big batch."""
    cfg = PICO.replace(dtype="bfloat16", param_dtype="bfloat16")
    one = sft_program(cfg, grad_accum=1)
    assert floating_dtypes(one.abstract_state().trainable) == {"bfloat16"}
    assert floating_dtypes(one.abstract_state().opt_state) == {"bfloat16"}
    state_one, losses_one = train_steps(one, 2)
    state_two, losses_two = train_steps(sft_program(cfg, grad_accum=2), 2)
    assert losses_two == pytest.approx(losses_one, rel=1e-2)
    for a, b in zip(jax.tree.leaves(state_one.trainable), jax.tree.leaves(state_two.trainable), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=2e-2)


RESUMABLE = """
pipeline mp {
  seed      = 0
  precision = "bfloat16"
}

tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars, n_layers = 1)
dataset sums = synthetic("addition", digits = 1, count = 200, seed = 1)

stage base: pretrain {
  model            = tiny
  data             = sums
  steps            = 9
  batch_size       = 4
  max_seq_len      = 16
  checkpoint_every = 3
  optimizer        = adamw(lr = 1e-2, warmup = 2)
}

export base.model to "exported" as "hf"
"""


def test_bfloat16_resume_is_bit_identical(tmp_path: Path) -> None:
    whole = run(RESUMABLE, tmp_path / "whole")

    def preempt_at_step_5(_stage: str, done: int) -> None:
        if done == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # StopSignals records it; the loop saves and stops

    with pytest.raises(Preempted):
        run(RESUMABLE, tmp_path / "resumed", on_dispatch=preempt_at_step_5)
    resumed = run(RESUMABLE, tmp_path / "resumed")
    left = load_file(whole / "stages" / "base" / "output" / "model.safetensors")
    right = load_file(resumed / "stages" / "base" / "output" / "model.safetensors")
    assert left.keys() == right.keys()
    for name in left:
        assert left[name].dtype == np.float32, name
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


def test_float32_model_is_unchanged_by_the_cast() -> None:
    """precision float32: every cast is a no-op, parameters and logits stay float32."""
    model = init_model(PICO, MESH, seed=0)
    assert floating_dtypes(nnx.state(model, nnx.Param)) == {"float32"}
    assert model(jnp.zeros((1, 4), jnp.int32)).dtype == jnp.float32

"""Our compiled stage programs (`compiler.program.lower_stage`) on the benchmark sizes.

Built straight from the checked schema objects, as `tnx run` would build them
from a `.tnx` file (see `tests/compiler/sharded_run.py`), on a one-device mesh.
"""

from __future__ import annotations

from typing import Any

import _steps_common as common
import jax
import numpy as np
from flax import nnx

from tunix_dsl.compiler import sharding
from tunix_dsl.compiler.model_init import init_model, place
from tunix_dsl.compiler.program import StageProgram, lower_stage
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.models.lora import LoraSpec, apply_lora
from tunix_dsl.schemas.base import ModelRef
from tunix_dsl.schemas.stages import DistillConfig, DPOConfig, SFTConfig
from tunix_dsl.schemas.training import AdamW, LogitStrategy, Lora

LORA_TARGETS = ("attn.*_proj", "mlp.*_proj")  # the DSL's default targets: every projection


def bench_config() -> ModelConfig:
    return ModelConfig(
        vocab_size=common.VOCAB, d_model=common.D_MODEL, n_layers=common.LAYERS,
        n_heads=common.HEADS, n_kv_heads=common.HEADS, head_dim=common.HEAD_DIM,
        mlp_dim=common.MLP, max_seq_len=common.SEQ, tie_embeddings=False,
    )  # fmt: skip


def one_device_mesh() -> jax.sharding.Mesh:
    return sharding.make_mesh({"data": 1}, jax.devices()[:1])


def with_lora(model: nnx.Module, mesh: jax.sharding.Mesh) -> nnx.Module:
    spec = LoraSpec(common.LORA_RANK, common.LORA_ALPHA, targets=list(LORA_TARGETS))
    return place(apply_lora(model, spec, nnx.Rngs(params=1, dropout=2)), mesh)


def stage_config(kind: str, *, lora: bool, batch_size: int, steps_per_call: int = 1) -> Any:
    ref = ModelRef(kind="decl", name="m")
    common_fields = {
        "data": "d", "steps": common.TOTAL_STEPS, "batch_size": batch_size,
        "optimizer": AdamW(**common.optimizer_fields()), "max_seq_len": common.SEQ,
        "steps_per_call": steps_per_call,
    }  # fmt: skip
    adapter = {"lora": Lora(rank=common.LORA_RANK, alpha=common.LORA_ALPHA,
                            targets=list(LORA_TARGETS))} if lora else {}
    if kind == "sft":
        return SFTConfig(model=ref, **common_fields, **adapter)
    if kind == "dpo":
        return DPOConfig(policy=ref, beta=common.DPO_BETA, **common_fields, **adapter)
    strategy = LogitStrategy(temperature=common.DISTILL_TEMPERATURE, alpha=common.DISTILL_ALPHA)
    return DistillConfig(teacher=ref, student=ref, strategy=strategy, **common_fields)


class ModelBank:
    """Two randomly initialised models (seeds 0 and 1), built once and handed out as clones:
    every step copies what it trains and donates only its copy, so clones may share the
    initial buffers — and the benchmark compiles each initialiser once."""

    def __init__(self, cfg: ModelConfig | None = None):
        self.cfg, self.mesh = cfg or bench_config(), one_device_mesh()
        self._models: dict[int, nnx.Module] = {}

    def model(self, seed: int = 0) -> nnx.Module:
        if seed not in self._models:
            self._models[seed] = init_model(self.cfg, self.mesh, seed=seed)
        return nnx.clone(self._models[seed])


def stage_models(kind: str, bank: ModelBank, lora: bool) -> StageModels:
    """The models the executor would hand the stage (`runtime/executor.py: stage_models`)."""
    model = bank.model(0)
    if kind == "sft":
        return StageModels({"model": with_lora(model, bank.mesh) if lora else model}, lora=lora)
    if kind == "dpo":
        if lora:  # reference = the policy's start: its base with adapters off, no copy
            return StageModels({"policy": with_lora(model, bank.mesh)}, lora=True,
                               shared_reference=True)
        return StageModels({"policy": model, "reference": bank.model(0)})
    return StageModels({"student": model, "teacher": bank.model(1)})


class OurStep:
    """A lowered stage and its live state; `__call__` runs one dispatch and blocks."""

    def __init__(self, kind: str, bank: ModelBank, *, lora: bool = False,
                 batch: dict[str, np.ndarray] | None = None, steps_per_call: int = 1):
        batch_size = next(iter(batch.values())).shape[0] if batch else common.BATCH
        config = stage_config(kind, lora=lora, batch_size=batch_size, steps_per_call=steps_per_call)
        self.program: StageProgram = lower_stage(
            "bench", kind, config, stage_models(kind, bank, lora), bank.mesh,
            batch_size=batch_size, steps_per_call=steps_per_call,
        )  # fmt: skip
        if batch is None:
            batch = common.preference_batch(0) if kind == "dpo" else common.lm_batch(0)
        self.steps_per_call = steps_per_call
        self.host_batch = {n: np.stack([v] * steps_per_call) for n, v in batch.items()}
        self.device_batch = self.program.put_batch(self.host_batch)
        self.state = self.program.init_state()
        self.frozen = self.program.split.frozen

    def __call__(self) -> dict[str, jax.Array]:
        self.state, metrics = self.program.step(self.state, self.frozen, self.device_batch)
        jax.block_until_ready((self.state, metrics))
        return metrics

    def dispatch_from_host(self) -> dict[str, jax.Array]:
        """One call as `tnx run` makes it: host batch → device, step; does not block."""
        batch = self.program.put_batch(self.host_batch)
        self.state, metrics = self.program.step(self.state, self.frozen, batch)
        return metrics

    def lowered(self) -> Any:
        return self.program.step.lower(self.state, self.frozen, self.device_batch)


VARIANTS: dict[str, tuple[str, bool]] = {  # table name → (stage kind, LoRA)
    "sft": ("sft", False),
    "sft lora": ("sft", True),
    "dpo": ("dpo", False),
    "dpo lora": ("dpo", True),
    "distill logit": ("distill", False),
}


def our_steps(bank: ModelBank, only: str | None = None) -> dict[str, OurStep]:
    """name → blocking step, for the main table (or just `only`)."""
    names = [only] if only else list(VARIANTS)
    return {n: OurStep(VARIANTS[n][0], bank, lora=VARIANTS[n][1]) for n in names}

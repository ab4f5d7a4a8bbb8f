"""`tnx plan`: per-stage memory and FLOPs from XLA, without allocating a weight.

The stage is lowered exactly as for a run, but on abstract inputs: models are
built under `nnx.eval_shape` (LoRA/QLoRA included), the optimizer state is
`jax.eval_shape(optimizer.init, …)`, and the batch is a
`jax.ShapeDtypeStruct` of the largest bucket. XLA compiles the step ahead of
time and reports per-device argument, output and temporary bytes
(`memory_analysis()`) and FLOPs (`cost_analysis()`).

On a TPU target (`compiler/targets.py`) the executable is the TPU one, so the
bytes are what each chip would hold (rematerialisation included, which the
CPU backend's analysis does not reflect). The analytic floor — parameters,
gradients and optimizer state at the stage's sharding — is what no schedule
can go below; the plan shows both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from tunix_dsl.compiler import sharding
from tunix_dsl.compiler.program import lower_stage
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.data.datasets import CONSUMERS
from tunix_dsl.models import Transformer
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.schemas.stages import TrainingConfig
from tunix_dsl.schemas.training import Adapter

SEQUENCE_ARRAYS = {
    "tokens": jnp.int32,
    "targets": jnp.int32,
    "loss_mask": jnp.float32,
    "attention_mask": jnp.bool_,
    "positions": jnp.int32,
}


@dataclass
class StagePlan:
    name: str
    kind: str
    trainable_params: int
    total_params: int
    tokens_per_step: int
    argument_bytes: int
    output_bytes: int
    temp_bytes: int
    alias_bytes: int
    flops_per_step: float
    devices: int
    generated_code_bytes: int = 0
    floor_bytes: int = 0  # parameters + gradients + optimizer state per device, at this sharding
    hbm_bytes: int = 0  # memory of one device of the target; 0: unknown (this host)
    target: str = "cpu"
    program: str = "step"
    mesh: dict[str, int] | None = None
    compiled: bool = True  # False: XLA's figures are absent (see `note`)
    note: str = ""

    @property
    def peak_bytes(self) -> int:
        """Live bytes at the step's peak: inputs + outputs + scratch, minus donated reuse."""
        return self.argument_bytes + self.output_bytes + self.temp_bytes - self.alias_bytes

    @property
    def needed_bytes(self) -> int:
        """What one device must hold: the peak plus the program's own code (not compiled:
        at least the floor, or what XLA said it needed when it refused)."""
        if not self.compiled:
            return max(self.floor_bytes, self.temp_bytes)
        return self.peak_bytes + self.generated_code_bytes

    @property
    def fits(self) -> bool | None:
        """Whether the step fits one device's memory; None when the memory is unknown."""
        return None if not self.hbm_bytes else self.needed_bytes <= self.hbm_bytes

    @property
    def margin_bytes(self) -> int | None:
        return None if not self.hbm_bytes else self.hbm_bytes - self.needed_bytes

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peak_bytes": self.peak_bytes, "needed_bytes": self.needed_bytes,
                "fits": self.fits, "margin_bytes": self.margin_bytes}


def abstract_batch(consumer: str, layout: tuple[int, int, int], seq_len: int, mesh: Mesh) -> dict[str, Any]:
    """ShapeDtypeStructs of a step's batch `[k, A, micro, T]` for a data consumer,
    sharded over the batch axes as `StageProgram.put_batch` shards the real one."""
    info = CONSUMERS[consumer]
    placed = sharding.batch_sharding(mesh, 4, leading=2)
    rows = sharding.batch_sharding(mesh, 3, leading=2)
    return {
        **{prefix + name: jax.ShapeDtypeStruct((*layout, seq_len), dtype, sharding=placed)
           for prefix in info.sequence_prefixes
           for name, dtype in SEQUENCE_ARRAYS.items()},
        **{name: jax.ShapeDtypeStruct(layout, dtype, sharding=rows)
           for name, dtype in info.row_arrays},
    }


def abstract_stage_models(
    model_cfgs: Mapping[str, ModelConfig],
    *,
    trained: str,
    adapter: Adapter | None,
    shared_reference: bool,
    seed: int,
) -> StageModels:
    """The stage's models, LoRA applied, with ShapeDtypeStruct leaves only."""

    def build() -> dict[str, Transformer]:
        models = {field: Transformer(cfg, rngs=nnx.Rngs(0)) for field, cfg in model_cfgs.items()}
        if adapter is not None:
            from tunix_dsl.models.lora import LoraSpec, apply_lora

            spec = LoraSpec(adapter.rank, adapter.alpha, adapter.dropout, tuple(adapter.targets), adapter.quantize)
            apply_lora(models[trained], spec, nnx.Rngs(params=seed, dropout=seed + 1))
        return models

    return StageModels(nnx.eval_shape(build), lora=adapter is not None, shared_reference=shared_reference, seed=seed)


def _count(state: nnx.State) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


def total_parameters(models: StageModels, trainable: nnx.State) -> int:
    """Every model's own parameters (a QLoRA base counted as the weights it encodes,
    not its packed codes) plus what the stage adds: adapters, projections."""
    own = sum(model.cfg.param_count() for model in models.models.values())
    added = sum(
        math.prod(variable.get_value().shape)
        for path, variable in nnx.to_flat_state(trainable)
        if type(variable).__name__ == "LoRAParam" or path[0] == "projection"
    )
    return own + added


def per_device_bytes(tree: Any, shardings: Any) -> int:
    """Bytes one device holds of `tree` (ShapeDtypeStructs) placed with `shardings`."""
    leaves = jax.tree.leaves(tree)
    placed = jax.tree.leaves(shardings)
    assert len(leaves) == len(placed), "a sharding for every leaf"
    return sum(math.prod(s.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
               for x, s in zip(leaves, placed, strict=True))


def plan_stage(
    name: str,
    kind: str,
    config: TrainingConfig,
    models: StageModels,
    consumer: str,
    seq_len: int,
    mesh: Mesh,
    *,
    hbm_bytes: int = 0,
    target: str = "cpu",
) -> StagePlan:
    program = lower_stage(
        name, kind, config, models, mesh,
        batch_size=config.batch_size, grad_accum=config.grad_accum, steps_per_call=config.steps_per_call,
    )
    layout = program.layout
    shape = (layout.steps_per_call, layout.grad_accum, layout.micro_batch)
    batch = abstract_batch(consumer, shape, seq_len, mesh)
    split = program.split
    state = program.abstract_state()
    # floor: the state (parameters, optimizer), frozen inputs, and one gradient per trainable
    floor = (per_device_bytes(state, program.state_shardings)
             + per_device_bytes(split.frozen, program.frozen_shardings)
             + per_device_bytes(state.trainable, program.state_shardings.trainable))
    plan = StagePlan(
        name=name, kind=kind, trainable_params=_count(split.trainable),
        total_params=total_parameters(models, split.trainable),
        tokens_per_step=config.batch_size * seq_len * len(CONSUMERS[consumer].sequence_prefixes),
        argument_bytes=0, output_bytes=0, temp_bytes=0, alias_bytes=0, flops_per_step=0.0,
        devices=mesh.devices.size, floor_bytes=floor, hbm_bytes=hbm_bytes, target=target,
        mesh=dict(mesh.shape),
    )
    if hbm_bytes and floor > hbm_bytes:
        # No schedule fits below the floor: skip a compile that can only fail (minutes for 8B).
        return replace(plan, compiled=False, note="the floor alone exceeds the device's memory")
    try:
        compiled = program.step.lower(state, split.frozen, batch).compile()
    except jax.errors.JaxRuntimeError as err:
        needed = _oom_bytes(str(err))
        if hbm_bytes and needed is None and "UNIMPLEMENTED" in str(err):
            # XLA:TPU lacks a lowering for this layout; known: replicated parameters whose
            # gradients reduce over a multi-slice dcn × data mesh (fsdp within slices compiles)
            hint = (" put each slice's devices on fsdp: `mesh = { dcn = N, data = 1, fsdp = -1 }`"
                    if mesh.shape.get("dcn", 1) > 1 else " try another mesh layout (`--mesh`)")
            raise ValueError(f"stage `{name}`: XLA:TPU cannot compile this step on mesh "
                             f"{dict(mesh.shape)}: {str(err).splitlines()[0]};{hint}") from None
        if not hbm_bytes or needed is None:
            raise
        # XLA:TPU refuses programs that do not fit; its message carries what it needed.
        return replace(plan, compiled=False, temp_bytes=needed,
                       note="XLA: " + str(err).split("\n")[0].split(": ", 2)[-1][:200])
    memory = compiled.memory_analysis()
    return replace(
        plan,
        argument_bytes=int(memory.argument_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        alias_bytes=int(memory.alias_size_in_bytes),
        generated_code_bytes=int(memory.generated_code_size_in_bytes),
        flops_per_step=compiled_flops(compiled) / max(layout.steps_per_call, 1),
    )


def compiled_flops(executable: Any) -> float:
    """The FLOPs XLA's cost analysis gives a compiled program (0 when it gives none)."""
    cost = executable.cost_analysis()
    if isinstance(cost, list):  # older jax returns one dict per device program
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


_OOM = re.compile(r"memory required for [^(]*\((?P<n>[0-9.]+)(?P<u>[KMGT]?)\)")


def _oom_bytes(message: str) -> int | None:
    """The bytes an XLA:TPU out-of-memory compile error says it needed ("... (60.94G) ...")."""
    if "RESOURCE_EXHAUSTED" not in message:
        return None
    found = _OOM.search(message)
    if found is None:
        return 0
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[found["u"]]
    return int(float(found["n"]) * scale)

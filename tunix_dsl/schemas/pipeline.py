"""Schemas of the `pipeline { ... }` settings, `eval` blocks and `export` lines."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunix_dsl.schemas.agents import AgentConfig
from tunix_dsl.schemas.base import DatasetInput, ModelInput, Problem, RewardInput, Schema


class Mesh(Schema):
    """Device mesh: one size per axis; -1 takes every remaining device (at most one axis)."""

    call_name = "mesh"
    dcn: int = Field(1, ge=1, description="slices joined over the data-center network "
                     "(multi-slice TPU): the outermost, data-parallel axis (batch sharding)")
    data: int = Field(-1, ge=-1, description="data-parallel axis (batch sharding)")
    fsdp: int = Field(1, ge=-1, description="fully-sharded axis (batch and parameter sharding)")
    tensor: int = Field(1, ge=-1, description="tensor-parallel axis (heads, mlp, vocab)")

    def problems(self) -> list[Problem]:
        found = super().problems()
        for axis in ("data", "fsdp", "tensor"):
            if getattr(self, axis) == 0:
                found.append(Problem(axis, f"mesh axis `{axis}` needs at least one device "
                                           "(or -1 for the rest)"))
        wildcards = [a for a in ("data", "fsdp", "tensor") if getattr(self, a) == -1]
        if len(wildcards) > 1:
            found.append(Problem(wildcards[1], f"only one mesh axis may be -1: `{wildcards[0]}` "
                                                f"and `{wildcards[1]}` both are"))
        return found

    def axes(self) -> dict[str, int]:
        """Each mesh axis's written size, outermost first (the order of compiler/sharding.py)."""
        return {"dcn": self.dcn, "data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}

    def batch_shards(self) -> int | None:
        """Devices the global batch is split over (dcn × data × fsdp), None if a -1 makes it
        unknown."""
        if self.data == -1 or self.fsdp == -1:
            return None
        return self.dcn * self.data * self.fsdp


class PipelineSettings(Schema):
    """Whole-pipeline settings from the `pipeline NAME { ... }` block."""

    seed: int = Field(0, ge=0, description="root seed; stage seeds derive from it")
    precision: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="compute (activation) dtype; bfloat16 keeps float32 master "
        "weights, optimizer state and gradient accumulation"
    )
    param_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="storage dtype of the trained parameters (and Adam's moments); "
        "bfloat16 halves their memory at the cost of update precision"
    )
    mesh: Mesh = Field(default_factory=Mesh, description="{ dcn = .., data = .., fsdp = .., tensor = .. }")
    run_dir: str = Field("runs", min_length=1, description="where run directories are created")
    plugins: list[str] = Field(
        default_factory=list, description="local plugin files (relative to the .tnx file) that "
        "register stage kinds, sources or optimizers in a `TNX_PLUGIN` dict; docs/plugins.md")

    def problems(self) -> list[Problem]:
        found = super().problems()
        if self.precision == "float16":
            # float16's range (max 65504) overflows activations and gradients without loss
            # scaling, which this tool does not do: training turns NaN within a few steps.
            found.append(Problem(
                "precision", "float16 training is not supported: without loss scaling it "
                "overflows to NaN within a few steps", "TNX224", "use \"bfloat16\"",
                "use precision = \"bfloat16\" (the same memory as float16 with float32's range), "
                "or \"float32\""))
        return found


class EvalConfig(AgentConfig):
    """`eval NAME { ... }`: score models on a dataset with a reward as the metric.

    With `environment = NAME` each prompt is one episode (turns, tool calls, observations, as
    an agentic RL stage runs them; `max_new_tokens` is per turn) and the metric scores its
    final answer: accuracy with the tools, beside a plain eval of the same data without."""

    models: list[ModelInput] = Field(min_length=1, description="models or stage outputs to score")
    data: DatasetInput = Field(description="dataset of prompts (and answer columns)")
    metric: RewardInput = Field(description="reward declaration used as the metric (mean)")
    max_new_tokens: int = Field(32, gt=0, description="generated tokens per prompt")
    temperature: float = Field(0.0, ge=0, description="sampling temperature (0: greedy)")
    batch_size: int = Field(64, gt=0, description="prompts per generation batch")
    limit: int | None = Field(None, gt=0, description="score only the first `limit` rows")


class ExportConfig(Schema):
    """`export SOURCE to "dir" as "format"`."""

    source: ModelInput = Field(description="model or stage output to write")
    destination: str = Field(min_length=1, description="output directory (relative to the .tnx file)")
    format: Literal["hf", "orbax"] = Field(
        "hf", description="hf: config.json + safetensors + tokenizer; orbax: a raw checkpoint"
    )

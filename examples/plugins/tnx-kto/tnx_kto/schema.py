"""Schemas of the plugin: the `kto` stage kind, `number_close` reward, `unpaired_addition` data.

Imported by `tnx lint` through the package's entry points, so it imports no jax and no numpy:
pydantic schemas and references (`"module:attr"`) to the code that runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from tunix_dsl.data.datasets import ConsumerInfo
from tunix_dsl.schemas.base import Problem
from tunix_dsl.schemas.datasets import DatasetSchema
from tunix_dsl.schemas.kinds import StageKind
from tunix_dsl.schemas.sources import RewardSchema
from tunix_dsl.schemas.stages import (
    AdapterConfig,
    PolicyConfig,
    SequenceConfig,
    TrainingConfig,
)


class KTOConfig(TrainingConfig, SequenceConfig, AdapterConfig, PolicyConfig):
    """Kahneman-Tversky optimisation on unpaired desirable/undesirable completions.

    r = log π(y|x) − log π_ref(y|x); z = max(0, mean over mismatched pairs of r);
    loss = λ_D·(1 − σ(β(r − z))) for desirable rows, λ_U·(1 − σ(β(z − r))) for undesirable.
    """

    beta: float = Field(0.1, gt=0, description="β: how sharply the value saturates")
    desirable_weight: float = Field(1.0, gt=0, description="λ_D: weight of desirable rows")
    undesirable_weight: float = Field(1.0, gt=0, description="λ_U: weight of undesirable rows")

    def problems(self) -> list[Problem]:
        found = super().problems()
        if self.batch_size // self.grad_accum < 2:
            # z pairs each prompt with another row's completion inside a micro-batch
            found.append(Problem("batch_size", "kto needs at least 2 rows per micro-batch "
                                               "(batch_size / grad_accum) to estimate its KL "
                                               "reference point"))
        return found


# `data` rows: a prompt, one completion and whether it is desirable.
UNPAIRED = ConsumerInfo(
    "unpaired", (("prompt", "completion", "label"),),
    "a prompt, one completion and `label` (true: desirable) (kto)",
    rules="tnx_kto.data:UNPAIRED_RULES",
    sequence_prefixes=("", "kl_"),
    row_arrays=(("label", "float32"),),
    kept_whole=("completion",),
)

KTO = StageKind(
    "kto", KTOConfig, trained="policy", model_inputs=("policy", "reference"),
    data="unpaired", layout=UNPAIRED, lowering="tnx_kto.lowering:build",
    metrics=("loss", "rewards/desirable", "rewards/undesirable", "kl", "desirable",
             "undesirable", "examples"),
)


class NumberClose(RewardSchema):
    """1.0 when the completion is a number within `tolerance` of the row's `field`, else 0.0."""

    call_name = "number_close"
    implementation = "tnx_kto.reward:build"
    field: str = Field("answer", description="dataset column holding the expected number")
    tolerance: float = Field(0.0, ge=0, description="largest accepted |completion − answer|")

    def columns(self) -> tuple[str, ...]:
        return (self.field,)


class UnpairedAddition(DatasetSchema):
    """`a+b=` prompts with a right (desirable) or wrong (undesirable) answer, deterministic."""

    call_name = "unpaired_addition"
    implementation = "tnx_kto.data:unpaired_addition_rows"
    count: int = Field(1000, gt=0, description="number of rows")
    digits: int = Field(2, gt=0, le=6, description="digits of each operand")
    desirable_fraction: float = Field(0.5, ge=0, le=1, description="share of right answers")
    undesirable: Literal["near", "babble"] = Field(
        "near", description="wrong answers: a number off by 1-9 (near) or letters (babble)")
    seed: int = Field(0, ge=0, description="generator seed; same seed, same rows")

    def known_columns(self, base_dir: Path) -> frozenset[str]:
        return frozenset({"prompt", "completion", "label", "answer"})

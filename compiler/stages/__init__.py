"""Stage kinds' step math: importing this package registers every kind in `LOWERINGS`."""

from tunix_dsl.compiler.stages import distill, dpo, grpo, orpo, ppo, sft  # noqa: F401  (registration)
from tunix_dsl.compiler.stages.base import LOWERINGS, StageLoss, StageModels, reference_sharing

__all__ = ["LOWERINGS", "StageLoss", "StageModels", "reference_sharing"]

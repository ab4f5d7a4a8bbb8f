"""Stage kinds' step math, one file per kind; each `StageKind.lowering` names its `build`."""

from tunix_dsl.compiler.stages.base import BuildLoss, StageLoss, StageModels, reference_sharing

__all__ = ["BuildLoss", "StageLoss", "StageModels", "reference_sharing"]

"""What a stage kind contributes to its step program.

A stage kind's file (sft.py, dpo.py, …) reads top to bottom as the whole
algorithm: which models it holds, which of their parameters train, the global
global counts of a step's batch, the additive sums of one micro-batch and
the loss from sums (the contract of `compiler/train_step.py`). The generic
machinery — gradient accumulation, optimizer, sharding, donation — lives in
`compiler/train_step.py` and `compiler/program.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import jax
from flax import nnx

from tunix_dsl.compiler.train_step import Counts, FromSums, MicroSums
from tunix_dsl.models.chunked import default_loss_chunk
from tunix_dsl.schemas.stages import TrainingConfig

if TYPE_CHECKING:
    from tunix_dsl.models.transformer import Transformer

T = TypeVar("T")

@dataclass
class StageModels:
    """The live models a stage was given, by config field (`model`, `policy`, `teacher`, …).

    `shared_reference` is True when the reference is the policy's own base
    weights with its adapters switched off (LoRA): no second copy exists.
    """

    models: dict[str, Transformer]
    lora: bool = False
    shared_reference: bool = False
    seed: int = 0  # the stage's effective seed (for parameters a stage kind creates itself)


@dataclass(frozen=True)
class StageLoss:
    """A stage kind's step, ready for `compiler.train_step.build_step`."""

    modules: nnx.Module  # container holding every model of the step
    trainable: Any  # nnx filter selecting the parameters that train
    counts: Counts
    micro_sums: MicroSums
    from_sums: FromSums


# A stage kind's `build(config, models) -> StageLoss`, named lazily by its `StageKind.lowering`
# (`tunix_dsl.schemas.kinds`): which fields hold models and which columns the data needs are
# the schema's business; a lowering holds only the math.
BuildLoss = Callable[[Any, StageModels], StageLoss]


def reference_sharing(config: TrainingConfig, trained: str, model_inputs: tuple[str, ...]) -> tuple[bool, bool]:
    """(the reference is the trained model's starting weights, it is shared through LoRA).

    An unset reference, or one naming the trained input itself, means "the
    policy's start". With LoRA that is the base with adapters off (no copy);
    without LoRA it is a frozen copy of the starting weights.
    """
    if "reference" not in model_inputs:
        return False, False
    reference = getattr(config, "reference", None)
    same_start = reference is None or reference == getattr(config, trained)
    return same_start, same_start and getattr(config, "lora", None) is not None


class Container(nnx.Module):
    """Holds a step's models as attributes so one split/merge covers them all."""

    def __init__(self, **modules: nnx.Module):
        for role, module in modules.items():
            setattr(self, role, module)

    if TYPE_CHECKING:  # the roles are set by name at run time (policy, reference, student, …)
        def __getattr__(self, role: str) -> Any: ...
        def __setattr__(self, role: str, value: Any) -> None: ...


def policy_and_reference(models: StageModels, reference: bool = True) -> Container:
    """The policy, and its frozen reference when the stage needs one and it is a model of its own
    (a LoRA stage's shared reference is the policy's base: `reference_of` switches adapters off)."""
    container = Container(policy=models.models["policy"])
    if reference and not models.shared_reference:
        container.reference = models.models["reference"]
    return container


def reference_of(modules: Container, measure: Callable[[Transformer], T]) -> T:
    """`measure(reference)` without gradient: the reference model, or the policy with its
    adapters off when the reference is shared (no second copy of the weights)."""
    if hasattr(modules, "reference"):
        out = measure(modules.reference)
    else:
        from tunix_dsl.models.lora import adapters_disabled

        with adapters_disabled(modules.policy):
            out = measure(modules.policy)
    return jax.lax.stop_gradient(out)


def trainable_filter(role: str, lora: bool, extra: tuple[str, ...] = ()) -> Any:
    """Parameters of `role` (only its adapters when LoRA) plus whole `extra` modules."""
    if lora:
        from tunix_dsl.models.lora import LoRAParam

        selected: Any = nnx.All(LoRAParam, nnx.PathContains(role))
    else:
        selected = nnx.All(nnx.Param, nnx.PathContains(role))
    if extra:
        return nnx.Any(selected, *(nnx.All(nnx.Param, nnx.PathContains(e)) for e in extra))
    return selected


def forward(model: nnx.Module, batch: Mapping[str, jax.Array], prefix: str = "", **kwargs: Any):
    """Run `model` on the (prefixed) token arrays of a batch."""
    return model(
        batch[prefix + "tokens"],
        positions=batch[prefix + "positions"],
        attention_mask=batch[prefix + "attention_mask"],
        **kwargs,
    )


def forward_hidden(model: Transformer, batch: Mapping[str, jax.Array], prefix: str = "",
                   **kwargs: Any) -> tuple[jax.Array, Any]:
    """`model.hidden` on the (prefixed) token arrays of a batch: final hidden states
    [B,T,D] (for a chunked loss over `model.unembed`) and the extra outputs."""
    return model.hidden(
        batch[prefix + "tokens"],
        positions=batch[prefix + "positions"],
        attention_mask=batch[prefix + "attention_mask"],
        **kwargs,
    )


def loss_chunk(config: TrainingConfig, model: Transformer) -> int:
    """Tokens per chunk of the stage's loss: `loss_chunk`, or sized from the vocabulary."""
    return config.loss_chunk or default_loss_chunk(model.cfg.vocab_size)

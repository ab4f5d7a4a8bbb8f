"""Schemas of the call values inside stage blocks: optimizers, adapters, strategies.

`optimizer = adamw(lr = 1e-3, warmup = 100, schedule = "cosine")`,
`lora = lora(rank = 8, alpha = 16, targets = ["attn.*"])`,
`strategy = logit(temperature = 2.0, alpha = 0.5)`.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field, SerializeAsAny, field_validator

from tunix_dsl.schemas.base import Family, Problem, Schema

# --------------------------------------------------------------------------- optimizers


class OptimizerBase(Schema):
    """Learning-rate schedule and regularisation common to every optimizer.

    The learning rate rises linearly from 0 to `lr` over `warmup` steps, then
    follows `schedule` down to `lr × min_lr_ratio` at the stage's last step.
    """

    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    warmup: int = Field(0, ge=0, description="linear warm-up steps")
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="decay after warm-up"
    )
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr as a fraction of `lr`")
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay")
    clip_norm: float | None = Field(
        1.0, gt=0, description="clip gradients to this global L2 norm (unset: no clipping)"
    )

    # A plugin optimizer's direction, `"module:fn"` with `fn(spec) -> optax.GradientTransformation`,
    # imported only by plan/run; the built-in ones name theirs in `compiler/optim.py`.
    implementation: ClassVar[str] = ""


class AdamW(OptimizerBase):
    """Adam with decoupled weight decay."""

    call_name = "adamw"
    implementation = "tunix_dsl.compiler.optim:adam"
    b1: float = Field(0.9, ge=0, lt=1, description="first-moment decay")
    b2: float = Field(0.999, ge=0, lt=1, description="second-moment decay")
    eps: float = Field(1e-8, gt=0, description="denominator epsilon")


class Adafactor(OptimizerBase):
    """Adafactor: factored second moments, little optimizer memory."""

    call_name = "adafactor"
    implementation = "tunix_dsl.compiler.optim:adafactor"
    decay_rate: float = Field(0.8, gt=0, le=1, description="second-moment decay exponent")
    eps: float = Field(1e-30, gt=0, description="regularisation epsilon")


class SGD(OptimizerBase):
    """Stochastic gradient descent with optional (Nesterov) momentum."""

    call_name = "sgd"
    implementation = "tunix_dsl.compiler.optim:sgd"
    momentum: float = Field(0.0, ge=0, lt=1, description="momentum coefficient (0: plain SGD)")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0)")

    def problems(self) -> list[Problem]:
        found = super().problems()
        if self.nesterov and self.momentum == 0:
            found.append(Problem("nesterov", "Nesterov momentum needs `momentum` > 0", "TNX222",
                                 "momentum is 0", "set `momentum = 0.9` (or drop `nesterov`)"))
        return found


class Lion(OptimizerBase):
    """Lion: sign of an interpolated momentum; use a ~3-10x smaller lr than AdamW."""

    call_name = "lion"
    implementation = "tunix_dsl.compiler.optim:lion"
    b1: float = Field(0.9, ge=0, lt=1, description="interpolation factor of the update")
    b2: float = Field(0.99, ge=0, lt=1, description="momentum decay")


# An open family: any registered optimizer (plugins too) is a subclass of `OptimizerBase`; the
# checker builds `optimizer = f(...)` from `OPTIMIZERS` (`Family`), and `SerializeAsAny` keeps a
# subclass's own fields in dumps (fingerprints, plan.json).
Optimizer = Annotated[SerializeAsAny[OptimizerBase], Family("optimizer")]
BUILTIN_OPTIMIZERS = (AdamW, Adafactor, SGD, Lion)
# call name -> schema, filled through the plugin loader (`tunix_dsl.schemas.plugins`)
OPTIMIZERS: dict[str, type[Schema]] = {}

# --------------------------------------------------------------------------- adapters

DEFAULT_TARGETS = ["attn.*_proj", "mlp.*_proj"]


class Lora(Schema):
    """Low-rank adapters on the projections whose parameter path matches `targets`.

    Effective update `(alpha / rank) · B·A`; only adapter weights train.
    """

    call_name = "lora"
    rank: int = Field(8, gt=0, description="adapter rank r")
    alpha: float = Field(16.0, gt=0, description="scale numerator: update × alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    targets: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGETS), min_length=1,
        description="regexes searched (`re.search`) in kernel paths such as "
                    "`layers.0.attn.q_proj.kernel` or `lm_head.kernel`; each must match one",
    )

    @field_validator("targets")
    @classmethod
    def _regexes(cls, targets: list[str]) -> list[str]:
        for target in targets:
            try:
                re.compile(target)
            except re.error as e:
                raise ValueError(f"target {target!r} is not a valid regular expression: {e}") from None
        return targets

    @property
    def quantize(self) -> Literal["nf4", "int8"] | None:
        return None


class QLora(Lora):
    """LoRA over a frozen, quantized base model."""

    call_name = "qlora"
    quant: Literal["nf4", "int8"] = Field("nf4", description="storage format of the frozen base")

    @property
    def quantize(self) -> Literal["nf4", "int8"] | None:
        return self.quant


Adapter = QLora | Lora
ADAPTERS: dict[str, type[Schema]] = {"lora": Lora, "qlora": QLora}

# --------------------------------------------------------------------------- distillation


class LogitStrategy(Schema):
    """α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1−α)·CE over non-padding tokens."""

    call_name = "logit"
    temperature: float = Field(2.0, gt=0, description="softening temperature T")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the KL term; 1−α weighs CE")


class AttentionStrategy(Schema):
    """Student attention maps matched to the teacher's (cosine distance) + (1−α)·CE.

    Student layer i is paired with teacher layer ⌊i·L_t/L_s⌋; teacher heads are
    mean-pooled into groups to match the student's head count.
    """

    call_name = "attention"
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the attention loss; 1−α weighs CE")


class FeatureProjectionStrategy(Schema):
    """A trainable projection of student hidden states to the teacher's width, MSE + (1−α)·CE."""

    call_name = "feature_projection"
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the feature loss; 1−α weighs CE")
    layer: int = Field(-1, description="hidden state to match (python index; -1: last block)")


Strategy = LogitStrategy | AttentionStrategy | FeatureProjectionStrategy
STRATEGIES: dict[str, type[Schema]] = {
    c.call_name: c for c in (LogitStrategy, AttentionStrategy, FeatureProjectionStrategy)
}


class OverlongPenalty(Schema):
    """DAPO soft overlong punishment, counted in tokens.

    With L = max_new_tokens and buffer B: no penalty up to L−B tokens, then a
    linear ramp down to −`penalty` at L tokens.
    """

    call_name = "overlong"
    buffer: int = Field(gt=0, description="tokens before the limit where the ramp starts")
    penalty: float = Field(1.0, gt=0, description="penalty at the length limit")

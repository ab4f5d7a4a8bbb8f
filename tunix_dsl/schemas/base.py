"""Base class and reference types shared by every schema.

Every declaration, call (`adamw(...)`, `lora(...)`) and stage block of a
`.tnx` file is validated into one of these pydantic models. They are strict
(no silent `"5"` → 5 conversion), forbid unknown keys and are frozen, so the
IR the compiler receives cannot drift from what the checker validated.

References to other declarations are typed by marking the field's type with
`RefKind`: the checker reads that marker to know that `policy = tune.model`
must name a model (or a stage's output) and `data = sums` a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Problem(NamedTuple):
    """A broken cross-field constraint; `path` is a field name (or `params.digits`)."""

    path: str
    message: str
    code: str = "TNX206"
    label: str = ""
    help: str | None = None


class Schema(BaseModel):
    """A validated `.tnx` object. Subclasses document each field."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        # No float field accepts inf or nan (the evaluator already reports `1e999` as TNX210).
        allow_inf_nan=False,
        validate_by_name=True,
        validate_by_alias=True,
        # Validators are built on first use: `tnx lint` pays only for the kinds a file uses.
        defer_build=True,
    )

    # The function name that builds this object in source (`adamw`, `lora`,
    # `transformer`); empty for blocks (stages, `pipeline`, `eval`).
    call_name: ClassVar[str] = ""
    # Field names that positional call arguments fill, in order.
    positional: ClassVar[tuple[str, ...]] = ()
    # Name of a `dict` field that collects keyword arguments the schema does
    # not declare (a synthetic task's own parameters); empty: none allowed.
    extras_field: ClassVar[str] = ""
    # Fields the checker fills itself and users never write (e.g. `kind`).
    internal_fields: ClassVar[tuple[str, ...]] = ()

    def problems(self) -> list[Problem]:
        """Cross-field constraints broken by this object: (field, message) pairs.

        Subclasses override this instead of writing their own model validators,
        so that the checker can point each problem at the offending field.
        """
        return []

    @model_validator(mode="after")
    def _check_problems(self) -> Schema:
        found = self.problems()
        if found:
            raise ValueError("; ".join(f"{p.path}: {p.message}" for p in found))
        return self

    @classmethod
    def source_names(cls) -> dict[str, str]:
        """Source spelling → Python field name (`lambda` → `lambda_`)."""
        return {
            (info.alias or name): name
            for name, info in cls.model_fields.items()
            if name not in cls.internal_fields and name != cls.extras_field
        }


@dataclass(frozen=True)
class RefKind:
    """Marks a field whose value is a reference to a declaration of `kind`."""

    kind: str  # "model" | "dataset" | "tokenizer" | "reward"


class ModelRef(Schema):
    """A resolved reference to a model.

    `kind="decl"`: the `model NAME = ...` declaration `name` (its initial
    weights). `kind="stage"`: the output of stage `name` — `output="model"` is
    the trained model (with LoRA: base with the adapter merged), `"adapter"`
    the adapter weights alone.
    """

    kind: Literal["decl", "stage"] = Field(description="what `name` names")
    name: str = Field(description="declaration or stage name")
    output: Literal["model", "adapter"] = Field(
        "model", description="for stage outputs: the merged model or the adapter alone"
    )

    def __str__(self) -> str:
        return self.name if self.kind == "decl" else f"{self.name}.{self.output}"


@dataclass(frozen=True)
class Family:
    """Marks a field whose value is a call of any schema registered in an open family
    (`optimizer = adamw(...)` or a plugin's optimizer): the checker looks the called
    function up in the family's registry instead of a closed union."""

    name: str  # "optimizer"

    def members(self) -> dict[str, type[Schema]]:
        from tunix_dsl.schemas.training import OPTIMIZERS

        return {"optimizer": OPTIMIZERS}[self.name]


ModelInput = Annotated[ModelRef, RefKind("model")]
DatasetInput = Annotated[str, RefKind("dataset")]
TokenizerInput = Annotated[str, RefKind("tokenizer")]
RewardInput = Annotated[str, RefKind("reward")]

PositiveInt = Annotated[int, Field(gt=0)]

# A stage seed becomes a jax PRNG key, whose seed is an unsigned 32-bit integer.
SEED_MAX = 2**32 - 1

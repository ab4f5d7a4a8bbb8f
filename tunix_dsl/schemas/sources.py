"""Schemas of the source functions: tokenizers, models, datasets, rewards.

`tokenizer chars = bytes()`, `model tiny = transformer(preset = "nano", ...)`,
`dataset sums = synthetic("addition", ...)`, `reward ok = exact_match(...)`.
Each keyword has a family of functions (`SOURCES[keyword]`, name → schema).
Relative paths are resolved against the directory of the `.tnx` file.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from tunix_dsl.models.config import PRESETS, REMAT_POLICIES, SIZE_PRESETS
from tunix_dsl.models.presets import ARCHITECTURE_PRESETS
from tunix_dsl.schemas.agents import PythonEnvironment, PythonTool, ToolsEnvironment
from tunix_dsl.schemas.base import Schema, TokenizerInput
from tunix_dsl.schemas.datasets import JsonlSource, ParquetSource, SyntheticSource

# --------------------------------------------------------------------------- plugin bases


class RewardSchema(Schema):
    """Base of every `reward NAME = f(...)` source.

    Every reward, built-in or plugin, sets `implementation = "module:build"`,
    imported only by `tnx run`: `build(spec, base_dir, name)` returns the scoring
    function `score(prompts, completions, lengths, columns) -> float32 array`
    (`tunix_dsl.runtime.rewards`).
    """

    implementation: ClassVar[str] = ""

    def columns(self) -> tuple[str, ...]:
        """Dataset columns the reward reads (checked against the stage's data)."""
        return ()


class ModelSchema(Schema):
    """Base of every `model NAME = f(...)` source.

    A plugin model describes an architecture of the built-in decoder family:
    it has a `tokenizer` field and returns its `ModelConfig` from `architecture`
    (jax-free); the runtime initialises it randomly like `transformer(...)`.
    """

    def architecture(self, vocab_size: int, dtype: str, param_dtype: str) -> object:
        """The `tunix_dsl.models.config.ModelConfig` of this declaration."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its ModelConfig")


# --------------------------------------------------------------------------- tokenizers


class BytesTokenizer(Schema):
    """Built-in byte-level tokenizer: ids 0..255 are bytes, then pad, bos, eos (vocab 259)."""

    call_name = "bytes"


class HFTokenizerSource(Schema):
    """A Hugging Face `tokenizer.json` (+ `tokenizer_config.json`) in a directory."""

    call_name = "hf_tokenizer"
    positional = ("path",)
    path: str = Field(description="directory holding tokenizer.json", min_length=1)


TokenizerSource = BytesTokenizer | HFTokenizerSource

# --------------------------------------------------------------------------- models

if TYPE_CHECKING:
    PresetName = str
    RematPolicy = str
    ArchitectureName = str
else:  # the choices come from the tables, so pydantic lists them in its errors
    PresetName = Literal[tuple(PRESETS)]
    RematPolicy = Literal[REMAT_POLICIES]
    ArchitectureName = Literal[tuple(ARCHITECTURE_PRESETS)]
Size = Annotated[int | None, Field(gt=0)]


class TransformerSource(ModelSchema):
    """A randomly initialised decoder from a preset, optionally resized.

    Size presets (pico, nano, micro) take the tokenizer's vocabulary;
    architecture presets (llama3.x, qwen2.5, qwen3 sizes) are the published
    configs of those checkpoints, vocabulary included.
    """

    call_name = "transformer"
    positional = ("preset",)
    preset: PresetName = Field(description="size preset: " + ", ".join(SIZE_PRESETS)
                               + "; architecture preset: " + ", ".join(ARCHITECTURE_PRESETS))
    tokenizer: TokenizerInput = Field(description="tokenizer declaration; sets the vocab size")
    d_model: Size = Field(None, description="override: hidden width")
    n_layers: Size = Field(None, description="override: number of decoder blocks")
    n_heads: Size = Field(None, description="override: attention heads")
    n_kv_heads: Size = Field(None, description="override: key/value heads (grouped-query)")
    head_dim: Size = Field(None, description="override: width of one attention head")
    mlp_dim: Size = Field(None, description="override: hidden width of the MLP")
    max_seq_len: Size = Field(None, description="override: context length in tokens")
    remat: bool | RematPolicy = Field(
        False, description="recompute activations in the backward pass: a policy "
        "(none | full | dots | dots_no_batch | offload), or true (full) / false (none)")

    def size_overrides(self) -> dict[str, int]:
        """The preset fields this declaration overrides."""
        names = ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "mlp_dim",
                 "max_seq_len")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def architecture(self, vocab_size: int, dtype: str, param_dtype: str) -> object:
        # the same hook a plugin model describes its architecture with
        from tunix_dsl.models.config import ModelConfig

        return ModelConfig.from_preset(self.preset, vocab_size, remat=self.remat, dtype=dtype,
                                       param_dtype=param_dtype, **self.size_overrides())


class HFModelSource(ModelSchema):
    """A Llama/Qwen-family checkpoint directory: config.json + safetensors (+ tokenizer)."""

    call_name = "hf"
    positional = ("path",)
    path: str = Field(description="checkpoint directory", min_length=1)
    tokenizer: TokenizerInput | None = Field(
        None, description="tokenizer declaration; default: the tokenizer files in `path`"
    )
    preset: ArchitectureName | None = Field(
        None, description="expected architecture: config.json must match it; while config.json "
        "is absent (not downloaded yet) the preset stands in for it in lint and plan")
    remat: bool | RematPolicy = Field(
        False, description="recompute activations in the backward pass: a policy "
        "(none | full | dots | dots_no_batch | offload), or true (full) / false (none)")


ModelSource = TransformerSource | HFModelSource

# --------------------------------------------------------------------------- rewards


class ExactMatchReward(RewardSchema):
    """1.0 when the completion equals the row's `field` column, else 0.0."""

    call_name = "exact_match"
    implementation = "tunix_dsl.runtime.rewards:exact_match"
    field: str = Field("answer", description="dataset column holding the expected answer")
    strip: bool = Field(True, description="ignore leading/trailing whitespace")

    def columns(self) -> tuple[str, ...]:
        return (self.field,)


class RegexReward(RewardSchema):
    """`score` when the completion matches `pattern` (Python `re.search`), else 0.0."""

    call_name = "regex"
    implementation = "tunix_dsl.runtime.rewards:regex"
    positional = ("pattern",)
    pattern: str = Field(description="regular expression searched in the completion")
    score: float = Field(1.0, description="reward for a match")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"invalid regular expression: {e}") from None
        return pattern

    def columns(self) -> tuple[str, ...]:
        return ()


class LengthPenaltyReward(RewardSchema):
    """−weight × (tokens beyond `target`): discourages long completions."""

    call_name = "length_penalty"
    implementation = "tunix_dsl.runtime.rewards:length_penalty"
    target: int = Field(32, ge=0, description="completion length (tokens) with no penalty")
    weight: float = Field(0.01, ge=0, description="penalty per token beyond `target`")

    def columns(self) -> tuple[str, ...]:
        return ()


class PythonReward(RewardSchema):
    """A user function `fn(prompts, completions, **columns) -> list[float]`, loaded at run time."""

    call_name = "python"
    implementation = "tunix_dsl.runtime.rewards:python_function"
    positional = ("target",)
    target: str = Field(description="\"file.py:function\", path relative to the .tnx file")
    columns_used: list[str] = Field(
        default_factory=list, alias="columns",
        description="dataset columns the function needs (checked against the data)",
    )

    @field_validator("target")
    @classmethod
    def _file_and_function(cls, target: str) -> str:
        file, sep, fn = target.rpartition(":")
        if not sep or not file.endswith(".py") or not fn.isidentifier():
            raise ValueError(f"expected \"file.py:function\", got {target!r}")
        return target

    @property
    def file(self) -> str:
        return self.target.rpartition(":")[0]

    @property
    def function(self) -> str:
        return self.target.rpartition(":")[2]

    def columns(self) -> tuple[str, ...]:
        return tuple(self.columns_used)


RewardSource = ExactMatchReward | RegexReward | LengthPenaltyReward | PythonReward


# The built-in sources, registered by `tunix_dsl.schemas.plugins` like a plugin's entry points.
BUILTIN_MODELS = (TransformerSource, HFModelSource)
BUILTIN_DATASETS = (SyntheticSource, JsonlSource, ParquetSource)
BUILTIN_REWARDS = (ExactMatchReward, RegexReward, LengthPenaltyReward, PythonReward)

# keyword → function name → schema: what `tokenizer|model|dataset|reward|tool|environment
# NAME = f(...)` accepts. Tokenizers, tools and environments are built in; the other families
# are filled through the plugin loader.
SOURCES: dict[str, dict[str, type[Schema]]] = {
    "tokenizer": {s.call_name: s for s in (BytesTokenizer, HFTokenizerSource)},
    "model": {},
    "dataset": {},
    "reward": {},
    "tool": {s.call_name: s for s in (PythonTool,)},
    "environment": {s.call_name: s for s in (PythonEnvironment, ToolsEnvironment)},
}

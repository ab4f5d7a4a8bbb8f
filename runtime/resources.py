"""From validated declarations to live objects: tokenizers, model configs, rows.

Paths in a `.tnx` file are relative to the file's directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunix_dsl.check.ir import Pipeline, Stage
from tunix_dsl.compiler.stages import reference_sharing
from tunix_dsl.data.datasets import Row
from tunix_dsl.data.tokenizers import ByteTokenizer, HFTokenizer, Tokenizer
from tunix_dsl.models.config import ModelConfig, ModelConfigError
from tunix_dsl.models.info import resolve_path
from tunix_dsl.runtime.run_dir import derived_seed
from tunix_dsl.schemas.base import ModelRef
from tunix_dsl.schemas.datasets import DatasetSchema
from tunix_dsl.schemas.sources import BytesTokenizer, HFTokenizerSource, TokenizerSource
from tunix_dsl.schemas.stages import STAGE_KINDS


def make_tokenizer(spec: TokenizerSource, base_dir: Path) -> Tokenizer:
    if isinstance(spec, BytesTokenizer):
        return ByteTokenizer()
    if isinstance(spec, HFTokenizerSource):
        return HFTokenizer.from_dir(resolve_path(spec.path, base_dir))
    raise TypeError(f"unsupported tokenizer source {type(spec).__name__}")


def dataset_rows(spec: DatasetSchema, base_dir: Path, consumer: str | None = None) -> list[Row]:
    """The rows of a dataset declaration, from its schema's `implementation` (built-in and
    plugin sources alike; `tunix_dsl.data.sources`); `consumer` lets a file reader name the
    line of a row the layout cannot use."""
    from tunix_dsl.schemas.plugins import load_implementation

    rows = load_implementation("tunix_dsl.datasets", type(spec))
    if not callable(rows):
        raise TypeError(f"the implementation of `{type(spec).call_name}(...)` is not a function")
    return list(rows(spec, base_dir, consumer))


class Resources:
    """Tokenizers and model architectures of a pipeline, resolved once (no weights)."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.base_dir = Path(pipeline.base_dir)
        self.precision = pipeline.settings.precision
        self._tokenizers: dict[str, Tokenizer] = {}

    def root_decl(self, ref: ModelRef) -> str:
        """The model declaration a (possibly stage-output) reference started from."""
        return self.pipeline.root(ref).name

    def tokenizer_for(self, ref: ModelRef) -> Tokenizer:
        decl_name = self.root_decl(ref)
        if decl_name not in self._tokenizers:
            spec = self.pipeline.models[decl_name].spec
            if spec.tokenizer is not None:
                tok_spec = self.pipeline.tokenizers[spec.tokenizer].spec
                self._tokenizers[decl_name] = make_tokenizer(tok_spec, self.base_dir)
            else:  # an hf() model without a tokenizer declaration: the checkpoint's own
                self._tokenizers[decl_name] = HFTokenizer.from_dir(resolve_path(spec.path, self.base_dir))
        return self._tokenizers[decl_name]

    def config_for(self, ref: ModelRef) -> ModelConfig:
        """The architecture `ref` names: the checker's own (`Pipeline.size_info`), one rule for both."""
        info = self.pipeline.size_info(ref)
        if info.config is None:
            raise ModelConfigError(f"model `{self.root_decl(ref)}`: {info.missing or info.invalid}")
        return info.config

    def rows(self, dataset: str, consumer: str | None = None) -> list[Row]:
        return dataset_rows(self.pipeline.datasets[dataset].spec, self.base_dir, consumer)


def stage_seed(pipeline: Pipeline, stage: Stage) -> int:
    """The stage's own `seed`, else one derived from the pipeline seed and the stage name."""
    seed = stage.config.seed
    return seed if seed is not None else derived_seed(pipeline.settings.seed, stage.name)


@dataclass(frozen=True)
class StageInputs:
    """The models a stage loads, by role, and how its reference relates to the trained model.

    `refs` leaves the reference out when it is the trained model's start
    (`same_start`): then it is a copy of the trained input, or with LoRA
    (`shared_reference`) the base with adapters off, no copy at all.
    """

    refs: dict[str, ModelRef]
    trained: str
    same_start: bool
    shared_reference: bool


def stage_inputs(stage: Stage) -> StageInputs:
    info = STAGE_KINDS[stage.kind]
    same_start, shared = reference_sharing(stage.config, info.trained, info.model_inputs)
    refs = {role: ref for role in info.model_inputs
            if (ref := getattr(stage.config, role, None)) is not None
            and not (role == "reference" and same_start)}
    return StageInputs(refs, info.trained, same_start, shared)

"""The checked pipeline: what `tunix_dsl.api.load` returns and the compiler consumes.

A `Pipeline` holds every declaration validated into its schema
(`tunix_dsl.schemas`), the stages in topological order, the dataflow graph
and the diagnostics. It is built by `tunix_dsl.check.checker`; when `ok` is false
some declarations failed to validate and are absent from the tables (their
nodes stay in the graph), so consumers other than lint rules should look at
`ok` first.

Model inputs of stages, evals and exports are `ModelRef`s: `kind="decl"`
names a `model` declaration, `kind="stage"` a stage's output. Use
`model_source(ref)` to walk a stage output back to the model declaration it
started from (its architecture and tokenizer), `model_config(ref)` for its
sizes, `lineage(ref)` for the chain of refs in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tunix_dsl.check.dataflow import Dataflow
from tunix_dsl.grammar.diagnostics import Diagnostic, Severity
from tunix_dsl.grammar.spans import Span
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.models.info import SizeInfo, model_size_info, resolve_path, tokenizer_identity
from tunix_dsl.schemas import STAGE_KINDS, EvalConfig, ExportConfig, ModelRef, PipelineSettings
from tunix_dsl.schemas.agents import EnvironmentSource, PythonTool
from tunix_dsl.schemas.datasets import DatasetSource
from tunix_dsl.schemas.sources import (
    HFModelSource,
    HFTokenizerSource,
    ModelSource,
    RewardSource,
    TokenizerSource,
)
from tunix_dsl.schemas.stages import StageKind, TrainingConfig

if TYPE_CHECKING:
    import networkx as nx

S = TypeVar("S")
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Decl(Generic[S]):
    """A `tokenizer|model|dataset|reward|tool|environment NAME = f(...)` declaration, validated."""

    name: str
    keyword: str
    span: Span  # the whole declaration
    name_span: Span
    spec: S  # the schema object, e.g. TransformerSource
    field_spans: dict[Loc, Span] = field(default_factory=dict, compare=False, repr=False)

    @property
    def node(self) -> str:
        return f"{self.keyword}:{self.name}"


@dataclass(frozen=True)
class Stage:
    """`stage NAME: KIND { ... }`, validated.

    `config` is the kind's schema object (`STAGE_KINDS[kind].schema`); its model
    fields hold `ModelRef`s and its dataset fields dataset names.
    """

    name: str
    kind: str
    span: Span
    name_span: Span
    config: TrainingConfig
    field_spans: dict[Loc, Span] = field(default_factory=dict, compare=False, repr=False)

    @property
    def info(self) -> StageKind:
        return STAGE_KINDS[self.kind]

    @property
    def node(self) -> str:
        return f"stage:{self.name}"

    @property
    def trained(self) -> ModelRef:
        """The input whose weights this stage trains (its `.model` output continues it)."""
        return getattr(self.config, self.info.trained)

    @property
    def models(self) -> dict[str, ModelRef]:
        """Every model input that is set, by field name (`policy`, `reference`, ...)."""
        found = {role: getattr(self.config, role) for role in self.info.model_inputs}
        return {role: ref for role, ref in found.items() if ref is not None}

    @property
    def datasets(self) -> dict[str, str]:
        found = {"data": self.config.data, "eval_data": self.config.eval_data}
        return {role: name for role, name in found.items() if name is not None}

    @property
    def rewards(self) -> tuple[str, ...]:
        return tuple(getattr(self.config, "rewards", ()))

    @property
    def adapter(self) -> Any:
        """The lora/qlora spec, or None for full fine-tuning."""
        return getattr(self.config, "lora", None)

    def span_of(self, *loc: str | int) -> Span:
        """The span of a field's value (falls back to the stage name)."""
        return self.field_spans.get(tuple(loc)) or self.name_span


@dataclass(frozen=True)
class Eval:
    name: str
    span: Span
    name_span: Span
    config: EvalConfig
    field_spans: dict[Loc, Span] = field(default_factory=dict, compare=False, repr=False)

    @property
    def node(self) -> str:
        return f"eval:{self.name}"


@dataclass(frozen=True)
class Export:
    span: Span
    config: ExportConfig
    field_spans: dict[Loc, Span] = field(default_factory=dict, compare=False, repr=False)

    @property
    def node(self) -> str:
        return f"export:{self.config.destination}"


@dataclass
class Pipeline:
    """A checked `.tnx` file. `ok` is true when it has no errors (warnings allowed)."""

    name: str
    file: str
    base_dir: Path  # relative paths in the file resolve against this directory
    sources: dict[str, str]  # file name → text, for rendering diagnostics
    settings: PipelineSettings
    params: dict[str, Any]  # final values, `--set` overrides applied
    tokenizers: dict[str, Decl[TokenizerSource]]
    models: dict[str, Decl[ModelSource]]
    datasets: dict[str, Decl[DatasetSource]]
    rewards: dict[str, Decl[RewardSource]]
    stages: list[Stage]  # topological order (ties: file order)
    evals: list[Eval]
    exports: list[Export]
    dataflow: Dataflow  # what the checker built; `graph` is its networkx view
    diagnostics: list[Diagnostic]
    io_error: bool = False  # the file could not be read: exit code 2, not 1
    tools: dict[str, Decl[PythonTool]] = field(default_factory=dict)
    environments: dict[str, Decl[EnvironmentSource]] = field(default_factory=dict)
    # where each `pipeline { ... }` setting's value is written (`("mesh", "dcn")`)
    settings_spans: dict[Loc, Span] = field(default_factory=dict, compare=False, repr=False)
    _sizes: dict[str, SizeInfo] = field(default_factory=dict, repr=False)
    _columns: dict[str, frozenset[str] | None] = field(default_factory=dict, repr=False)
    _stage_index: dict[str, Stage] = field(default_factory=dict, repr=False)
    _roots: dict[str, ModelRef] = field(default_factory=dict, repr=False)
    _graph: nx.DiGraph | None = field(default=None, repr=False)

    @property
    def graph(self) -> nx.DiGraph:
        """The dataflow as a networkx `DiGraph` (built on first access; imports networkx)."""
        if self._graph is None:
            self._graph = self.dataflow.to_networkx()
        return self._graph

    # ------------------------------------------------------------------ status
    @property
    def ok(self) -> bool:
        return not self.io_error and not self.errors

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.WARNING]

    # ----------------------------------------------------------------- lookups
    def stage(self, name: str) -> Stage | None:
        if len(self._stage_index) != len(self.stages):
            self._stage_index = {s.name: s for s in self.stages}
        return self._stage_index.get(name)

    def resolve_path(self, path: str) -> Path:
        return resolve_path(path, self.base_dir)

    def lineage(self, ref: ModelRef) -> list[ModelRef]:
        """`ref`, then the input each stage output continues, down to a declaration.

        Stops early (last item a stage ref) if a stage is missing from the IR.
        """
        chain = [ref]
        seen = {ref.name}
        while ref.kind == "stage":
            stage = self.stage(ref.name)
            if stage is None:
                break
            ref = stage.trained
            if ref.kind == "stage" and ref.name in seen:  # a cycle; the checker reported it
                break
            seen.add(ref.name)
            chain.append(ref)
        return chain

    def root(self, ref: ModelRef) -> ModelRef:
        """The last item of `lineage(ref)`, memoised per stage (long chains stay linear)."""
        if ref.kind == "decl":
            return ref
        if ref.name not in self._roots:
            pending: list[str] = []
            current = ref
            while current.kind == "stage" and current.name not in self._roots:
                stage = self.stage(current.name)
                if stage is None or current.name in pending:  # missing, or a reported cycle
                    break
                pending.append(current.name)
                current = stage.trained
            end = self._roots.get(current.name, current) if current.kind == "stage" else current
            for name in pending:
                self._roots[name] = end
        return self._roots.get(ref.name, ref)

    def model_source(self, ref: ModelRef) -> Decl[ModelSource] | None:
        """The model declaration a (possibly stage-output) reference started from."""
        root = self.root(ref)
        return self.models.get(root.name) if root.kind == "decl" else None

    def size_info(self, ref: ModelRef) -> SizeInfo:
        decl = self.model_source(ref)
        if decl is None:
            return SizeInfo(None, missing="the model's declaration did not validate")
        if decl.name not in self._sizes:
            tokenizer = None
            if decl.spec.tokenizer is not None and decl.spec.tokenizer in self.tokenizers:
                tokenizer = self.tokenizers[decl.spec.tokenizer].spec
            if decl.spec.tokenizer is not None and tokenizer is None:
                self._sizes[decl.name] = SizeInfo(None, missing="its tokenizer did not validate")
            else:
                self._sizes[decl.name] = model_size_info(
                    decl.spec, tokenizer, self.settings.precision, self.base_dir,
                    self.settings.param_dtype)
        return self._sizes[decl.name]

    def model_config(self, ref: ModelRef) -> ModelConfig | None:
        """The architecture of the model `ref` names, if its sizes are known (no jax)."""
        return self.size_info(ref).config

    def tokenizer_of(self, ref: ModelRef) -> tuple[str, str] | None:
        """(identity key, description) of the tokenizer a model uses; None if unknown."""
        decl = self.model_source(ref)
        if decl is None:
            return None
        if decl.spec.tokenizer is None:  # hf() without tokenizer: the checkpoint's own files
            assert isinstance(decl.spec, HFModelSource)
            return tokenizer_identity(HFTokenizerSource(path=decl.spec.path), self.base_dir)
        tok = self.tokenizers.get(decl.spec.tokenizer)
        return None if tok is None else tokenizer_identity(tok.spec, self.base_dir)

    def stage_order(self) -> list[str]:
        return [s.name for s in self.stages]

    def dataset_columns(self, name: str) -> frozenset[str] | None:
        """Canonical columns every row of dataset `name` has; None when not knowable now.

        synthetic: the task's columns. jsonl: the keys of the file's first rows
        after the field mapping (None when the file cannot be read).
        """
        if name not in self._columns:
            self._columns[name] = _columns_of(self.datasets.get(name), self.base_dir)
        return self._columns[name]


def _columns_of(decl: Decl[DatasetSource] | None, base_dir: Path) -> frozenset[str] | None:
    # every source, built-in or plugin, says what it knows of its columns without reading rows
    return None if decl is None else decl.spec.known_columns(base_dir)

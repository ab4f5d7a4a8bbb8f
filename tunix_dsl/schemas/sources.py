"""Schemas of the source functions: tokenizers, models, datasets, rewards.

`tokenizer chars = bytes()`, `model tiny = transformer(preset = "nano", ...)`,
`dataset sums = synthetic("addition", ...)`, `reward ok = exact_match(...)`.
Each keyword has a family of functions (`SOURCES[keyword]`, name → schema).
Relative paths are resolved against the directory of the `.tnx` file.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from tunix_dsl.models.config import PRESETS, REMAT_POLICIES, SIZE_PRESETS
from tunix_dsl.models.presets import ARCHITECTURE_PRESETS
from tunix_dsl.schemas.agents import PythonEnvironment, PythonTool, ToolsEnvironment
from tunix_dsl.schemas.base import Problem, Schema, TokenizerInput

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


class DatasetSchema(Schema):
    """Base of every `dataset NAME = f(...)` source.

    Every dataset, built-in or plugin, sets `implementation = "module:rows"`, called
    as `rows(spec, base_dir, consumer=None, required=()) -> list[dict]` (jax-free code:
    `tnx plan` reads rows for its checks; `tunix_dsl.data.sources` holds the built-in
    ones). The methods below feed lint and the pre-flight check without reading rows.
    """

    implementation: ClassVar[str] = ""

    def known_columns(self, base_dir: Path) -> frozenset[str] | None:
        """Columns every row has, or None when they cannot be known before reading."""
        return None

    def row_lengths(self, base_dir: Path, limit: int) -> list[dict[str, int]] | None:
        """UTF-8 byte lengths of the string columns of rows lint may measure cheaply (the
        sequence-length check TNX313): every row, the first `limit` (when all of those are
        dropped the length is wrong for this data), or one bound no row is below; None when
        that is not known without reading the data."""
        return None

    def files(self) -> dict[str, str]:
        """Field → path (as written, relative to the `.tnx` file) of each file the source
        reads: the pre-flight check (TNX370/TNX371) finds them missing and reads their rows
        through `implementation` before anything trains."""
        return {}


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

# --------------------------------------------------------------------------- datasets


class SyntheticSource(DatasetSchema):
    """A built-in deterministic task (`tunix_dsl.data.datasets.SYNTHETIC_TASKS`).

    Keyword arguments other than `count` and `seed` are the task's own
    parameters (e.g. `digits` for addition); `tnx explain synthetic` lists them.
    """

    call_name = "synthetic"
    implementation = "tunix_dsl.data.sources:synthetic"
    positional = ("task",)
    extras_field = "params"
    task: str = Field(description="task name, e.g. \"addition\"")
    count: int = Field(1000, gt=0, description="number of rows")
    seed: int = Field(0, ge=0, description="generator seed; same seed, same rows")
    params: dict[str, int | float | str | bool] = Field(
        default_factory=dict, description="the task's own parameters"
    )

    def known_columns(self, base_dir: Path) -> frozenset[str] | None:
        from tunix_dsl.data.datasets import SYNTHETIC_TASKS

        task = SYNTHETIC_TASKS.get(self.task)
        return frozenset(task.columns) if task else None

    def row_lengths(self, base_dir: Path, limit: int) -> list[dict[str, int]] | None:
        # exact over the rows of a small dataset (a task's bound may not be reached); the
        # task's own bound over all possible rows for a larger one
        return _synthetic_lengths(self.task, self.count, self.seed,
                                  tuple(sorted(self.params.items())), limit)

    def problems(self) -> list[Problem]:
        from tunix_dsl.data.datasets import SYNTHETIC_TASKS

        found = super().problems()
        task = SYNTHETIC_TASKS.get(self.task)
        if task is None:
            close = difflib.get_close_matches(self.task, list(SYNTHETIC_TASKS), n=1)
            found.append(Problem(
                "task", f"unknown synthetic task \"{self.task}\"", "TNX203", "unknown task",
                f"did you mean `\"{close[0]}\"`?" if close else
                "tasks: " + ", ".join(SYNTHETIC_TASKS)))
            return found
        for key, value in self.params.items():
            info = task.params.get(key)
            if info is None:
                known = [k for k in task.params if k not in ("count", "seed")]
                close = difflib.get_close_matches(key, known, n=1)
                found.append(Problem(
                    f"params.{key}", f"unknown parameter `{key}` for synthetic task "
                    f"\"{self.task}\"", "TNX101", "unknown parameter",
                    f"did you mean `{close[0]}`?" if close else
                    "parameters: " + (", ".join(known) or "none")))
            elif not _fits(value, info.type):
                found.append(Problem(
                    f"params.{key}", f"`{key}` expects {_TYPE_NAMES.get(info.type, 'a value')}, "
                    f"found `{value!r}`", "TNX201", "wrong type"))
        if not found:  # the generator's own range check, so that what lints clean builds
            from tunix_dsl.data.synthetic_tasks import default_values, range_problem

            values = {**default_values(self.task, self.params), "count": self.count,
                      "seed": self.seed}
            problem = range_problem(self.task, values)
            if problem is not None:
                key, why = problem
                path = key if key in ("count", "seed") else f"params.{key}.value"
                found.append(Problem(path, f"synthetic(\"{self.task}\"): {why}", "TNX202",
                                     "out of range", "`tnx explain synthetic` lists the ranges"))
        return found


@functools.lru_cache(maxsize=64)
def _synthetic_lengths(task: str, count: int, seed: int,
                       params: tuple[tuple[str, int | float | str | bool], ...],
                       limit: int) -> list[dict[str, int]] | None:
    from tunix_dsl.data.synthetic_tasks import SYNTHETIC_TASKS, default_values, synthetic_rows

    if task not in SYNTHETIC_TASKS:
        return None
    if count > limit:
        return [SYNTHETIC_TASKS[task].shortest(default_values(task, dict(params)))]
    return [string_lengths(row) for row in
            synthetic_rows(task, count=count, seed=seed, **dict(params))]


def string_lengths(row: Mapping[str, object]) -> dict[str, int]:
    """Column → UTF-8 byte length, for the string columns of a row (`row_lengths`)."""
    return {k: len(v.encode()) for k, v in row.items() if isinstance(v, str)}


class JsonlSource(DatasetSchema):
    """One JSON object per line. Each column field names the file key that holds it.

    `jsonl("qa.jsonl", prompt = "question", completion = "answer")`: the
    canonical column `prompt` is read from key `question`. Keys named like a
    canonical column (`prompt`, `text`, ...) need no mapping.
    """

    call_name = "jsonl"
    implementation = "tunix_dsl.data.sources:jsonl"
    positional = ("path",)
    path: str = Field(description="path of the .jsonl file", min_length=1)
    text: str | None = Field(None, description="file key holding the `text` column")
    prompt: str | None = Field(None, description="file key holding the `prompt` column")
    completion: str | None = Field(None, description="file key holding the `completion` column")
    chosen: str | None = Field(None, description="file key holding the `chosen` column")
    rejected: str | None = Field(None, description="file key holding the `rejected` column")
    answer: str | None = Field(None, description="file key holding the `answer` column")
    messages: str | None = Field(
        None, description="file key holding the `messages` column (a list of {role, content})")

    def mapping(self) -> dict[str, str]:
        """Canonical column → file key, for the columns given explicitly."""
        return {n: getattr(self, n) for n in _COLUMN_FIELDS if getattr(self, n) is not None}

    def known_columns(self, base_dir: Path) -> frozenset[str] | None:
        """The keys of the first rows (a few lines read), mapped to canonical columns."""
        from tunix_dsl.data.datasets import mapped_columns, peek_jsonl_columns
        from tunix_dsl.models.info import resolve_path

        keys = peek_jsonl_columns(resolve_path(self.path, base_dir))
        return frozenset(mapped_columns(keys, self.mapping())) if isinstance(keys, set) else None

    def row_lengths(self, base_dir: Path, limit: int) -> list[dict[str, int]] | None:
        from tunix_dsl.data.datasets import peek_jsonl_rows
        from tunix_dsl.models.info import resolve_path

        peeked = peek_jsonl_rows(resolve_path(self.path, base_dir), self.mapping(), limit)
        return None if not peeked or not peeked[0] else [string_lengths(r) for r in peeked[0]]

    def files(self) -> dict[str, str]:
        return {"path": self.path}


_COLUMN_FIELDS = ("text", "prompt", "completion", "chosen", "rejected", "answer", "messages")


class ParquetSource(DatasetSchema):
    """A parquet file, or a directory of parquet files (a Hugging Face dataset's shards).

    `parquet("data/", split = "train", prompt = "question")`: columns map as for `jsonl`;
    a directory is read file by file in path order, a record batch at a time.
    """

    call_name = "parquet"
    implementation = "tunix_dsl.data.sources:parquet"
    positional = ("path",)
    path: str = Field(description="a .parquet file, or a directory searched for them", min_length=1)
    split: str | None = Field(
        None, description="keep the directory's files of this split (\"train\" matches "
        "train-00000-of-00001.parquet and train/…)")
    text: str | None = Field(None, description="column holding the `text` column")
    prompt: str | None = Field(None, description="column holding the `prompt` column")
    completion: str | None = Field(None, description="column holding the `completion` column")
    chosen: str | None = Field(None, description="column holding the `chosen` column")
    rejected: str | None = Field(None, description="column holding the `rejected` column")
    answer: str | None = Field(None, description="column holding the `answer` column")
    messages: str | None = Field(
        None, description="column holding the `messages` column (a list of {role, content})")

    def mapping(self) -> dict[str, str]:
        """Canonical column → file column, for the columns given explicitly."""
        return {n: getattr(self, n) for n in _COLUMN_FIELDS if getattr(self, n) is not None}

    def known_columns(self, base_dir: Path) -> frozenset[str] | None:
        """The columns of the first file's footer (no rows read), mapped to canonical ones."""
        from tunix_dsl.data.datasets import DataError, mapped_columns
        from tunix_dsl.data.parquet import file_columns
        from tunix_dsl.models.info import resolve_path

        try:
            names = file_columns(resolve_path(self.path, base_dir), self.split)
        except DataError:
            return None
        return frozenset(mapped_columns(names, self.mapping()))

    def files(self) -> dict[str, str]:
        return {"path": self.path}


DatasetSource = SyntheticSource | JsonlSource | ParquetSource

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "a bool"}


def _fits(value: object, expected: type) -> bool:
    if isinstance(value, bool) or expected is bool:
        return isinstance(value, bool) and expected is bool
    if expected is float:
        return isinstance(value, int | float)
    return isinstance(value, expected)


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

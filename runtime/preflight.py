"""The pre-flight check: every input and output location of a run, before the first step.

`tnx run` calls `preflight` once, before any stage starts; `tnx plan` calls it
too and reports "will not run" when it finds anything. Each problem is a
TNX37x diagnostic (`tunix_dsl/rules/preflight_codes.py`) at the `.tnx`
declaration that names the location, and all of them come at once, so a
later stage's missing file is found before an earlier stage trains for hours.

What is checked, for what the run reads or writes (unused declarations are
lint's business):

- data read from files (jsonl, parquet, and any plugin source whose schema's `files()` names
  them): the file reads, and every row, read through the source's `implementation`, suits each
  consumer that reads it (TNX370, TNX371 with every bad row as `file:line: reason`, up to a cap);
- `hf("dir")` models: config.json parses into an architecture, the safetensors
  weights (single file, or every shard an index names) have readable headers,
  and the checkpoint's own tokenizer loads when no `tokenizer =` is given (TNX372);
- `hf_tokenizer("dir")`: tokenizer.json loads (TNX373);
- `python("file.py:fn")` rewards: the file parses and defines `fn` at top level,
  found with `ast`, never imported here (TNX374);
- export destinations and the run directory: writable, proven by creating and
  removing a probe file in the nearest existing folder (TNX375);
- something to run at all (TNX376).

jax-free: the checks read files and nothing else.
"""

from __future__ import annotations

import ast
import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunix_dsl.check.ir import Decl, Pipeline
from tunix_dsl.data.datasets import CONSUMERS, DataError
from tunix_dsl.data.tokenizers import TokenizerError
from tunix_dsl.grammar.diagnostics import Diagnostic
from tunix_dsl.grammar.spans import Span
from tunix_dsl.models.info import model_size_info
from tunix_dsl.rules.registry import diagnostic
from tunix_dsl.schemas.base import ModelRef
from tunix_dsl.schemas.datasets import DatasetSchema
from tunix_dsl.schemas.kinds import LoweringError
from tunix_dsl.schemas.plugins import load_implementation
from tunix_dsl.schemas.sources import HFModelSource, HFTokenizerSource, PythonReward

SINGLE_WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
_PATH_HELP = "paths are relative to the .tnx file's directory"


@dataclass(frozen=True)
class Problem:
    """A pre-flight finding and the stages it stops (empty: the whole run)."""

    diagnostic: Diagnostic
    stages: tuple[str, ...] = ()


class PreflightError(Exception):
    """The run cannot start; `problems` holds every finding, each located in the `.tnx` file."""

    def __init__(self, problems: list[Problem], sources: dict[str, str]):
        self.problems = problems
        self.sources = sources
        super().__init__(f"pre-flight check found {len(problems)} problem(s); nothing was trained")

    def render(self, color: bool = False) -> str:
        from tunix_dsl.cli.render import render_text

        return render_text([p.diagnostic for p in self.problems], self.sources, color=color)


def export_destination(destination: str, base_dir: Path, export_root: Path | None) -> Path:
    """Where an export writes: absolute as given; relative under `export_root` when a run
    directory was chosen (`--run-dir`), else relative to the `.tnx` file's directory."""
    path = Path(destination).expanduser()
    if path.is_absolute():
        return path
    return (export_root if export_root is not None else base_dir) / path


def preflight(pipeline: Pipeline, run_dir: Path, export_root: Path | None = None) -> list[Problem]:
    """Every problem with the run's input and output locations (empty: the run may start)."""
    problems: list[Problem] = []
    if not (pipeline.stages or pipeline.evals or pipeline.exports):
        problems.append(Problem(diagnostic(
            "TNX376", f"pipeline `{pipeline.name}` has no stage, eval or export: nothing to run",
            Span(pipeline.file, 1, 1, 1, 1), label="nothing to run",
            help="add a `stage`, an `eval` or an `export`")))
    readers = _readers(pipeline)
    for kind, table in (("dataset", pipeline.datasets), ("model", pipeline.models),
                        ("tokenizer", pipeline.tokenizers), ("reward", pipeline.rewards)):
        for name, decl in table.items():
            check = next((INPUT_CHECKS[t] for t in type(decl.spec).__mro__ if t in INPUT_CHECKS),
                         None)
            users = readers.get(f"{kind}:{name}")
            if check is not None and users is not None:
                problems += [Problem(d, tuple(sorted(users))) for d in check(pipeline, decl, users)]
    problems += _outputs(pipeline, run_dir, export_root)
    return sorted(problems, key=lambda p: (p.diagnostic.span.file, p.diagnostic.span.start))


# ---------------------------------------------------------------------------- who reads what


def _readers(p: Pipeline) -> dict[str, dict[str, set[str]]]:
    """`dataset:NAME` / `model:NAME` / ... -> {stage or block name: columns or roles it needs}.

    For datasets the value maps each reader to `consumer:required,columns`, so a
    file is checked once per way it is read.
    """
    out: dict[str, dict[str, set[str]]] = {}

    def add(node: str, who: str, how: str = "") -> None:
        out.setdefault(node, {}).setdefault(who, set()).add(how)

    def model(ref: ModelRef, who: str) -> None:
        decl = p.model_source(ref)
        if decl is None:
            return
        add(f"model:{decl.name}", who)
        if decl.spec.tokenizer is not None:
            add(f"tokenizer:{decl.spec.tokenizer}", who)

    for stage in p.stages:
        rewards = [p.rewards[r].spec for r in stage.rewards if r in p.rewards]
        required = sorted({c for spec in rewards for c in spec.columns()})
        for name in stage.datasets.values():  # an RL stage scores eval_data by its rewards too
            add(f"dataset:{name}", stage.name, f"{stage.info.consumer}:{','.join(required)}")
        for ref in stage.models.values():
            model(ref, stage.name)
        for reward in stage.rewards:
            add(f"reward:{reward}", stage.name)
    for block in p.evals:
        metric = p.rewards.get(block.config.metric)
        required = sorted(metric.spec.columns()) if metric is not None else []
        add(f"dataset:{block.config.data}", f"eval {block.name}", f"prompt:{','.join(required)}")
        add(f"reward:{block.config.metric}", f"eval {block.name}")
        for ref in block.config.models:
            model(ref, f"eval {block.name}")
    for export in p.exports:
        model(export.config.source, f"export to {export.config.destination}")
    return out


def _path_span(decl: Decl[Any], field: str = "path") -> Span:
    return decl.field_spans.get((field,), decl.name_span)


# ---------------------------------------------------------------------------- inputs


def _dataset_files(p: Pipeline, decl: Decl[Any], users: dict[str, set[str]]) -> Iterator[Diagnostic]:
    """A source that reads files (its schema's `files()`, built-in or plugin): every row is
    read through its `implementation`, as the run will, once per way a reader needs it."""
    spec: DatasetSchema = decl.spec
    files = spec.files()
    if not files:
        return
    readers = "read by " + ", ".join(sorted(users))
    try:
        rows = load_implementation("tunix_dsl.datasets", type(spec))
    except LoweringError as err:
        yield diagnostic("TNX370", f"dataset `{decl.name}`: {err}", decl.name_span, label=readers,
                         help="install the plugin that provides the source, or fix its "
                              "`implementation`")
        return
    if not callable(rows):
        yield diagnostic("TNX370", f"dataset `{decl.name}`: the implementation of "
                         f"`{spec.call_name}(...)` is not a function", decl.name_span, label=readers)
        return
    ways = sorted({how for hows in users.values() for how in hows})
    seen: set[tuple[int | None, str]] = set()
    bad: list[DataError] = []
    total = 0
    shown = next(iter(files.values()))
    for how in ways:
        consumer, _, required = how.partition(":")
        try:
            rows(spec, p.base_dir, consumer if consumer in CONSUMERS else None,
                 [c for c in required.split(",") if c])
        except DataError as err:
            field = _field_of(p, files, err.path)
            if err.line is None and err.problems == (err,):  # the file as a whole
                yield diagnostic("TNX370", f"dataset `{decl.name}`: {err.message}: "
                                 f"\"{files[field]}\"", _path_span(decl, field), label=readers,
                                 help=_PATH_HELP)
                return
            shown = files[field]
            fresh = [e for e in err.problems if (e.line, e.message) not in seen]
            seen.update((e.line, e.message) for e in fresh)
            bad += fresh
            total += len(fresh) + err.total - len(err.problems)
        except Exception as err:  # noqa: BLE001 - a plugin's reader may raise anything
            field = _field_of(p, files, getattr(err, "filename", None))
            yield diagnostic("TNX370", f"dataset `{decl.name}`: reading \"{files[field]}\" failed: "
                             f"{type(err).__name__}: {err}", _path_span(decl, field), label=readers,
                             help=_PATH_HELP)
            return
    if total:
        listed = bad[:20]
        more = [f"... and {total - len(listed)} more"] if total > len(listed) else []
        yield diagnostic(
            "TNX371", f"dataset `{decl.name}`: {total} bad row{'s' if total > 1 else ''} in "
            f"\"{shown}\"", _path_span(decl, next(k for k, v in files.items() if v == shown)),
            label=readers, help="fix or remove these rows", notes=[str(e) for e in listed] + more)


def _field_of(p: Pipeline, files: dict[str, str], path: object) -> str:
    """The `files()` field naming `path` (a reader's error names the file), else the first."""
    for field, written in files.items():
        if path is not None and (str(path) == written or Path(str(path)) == p.resolve_path(written)):
            return field
    return next(iter(files))


def _hf_model(p: Pipeline, decl: Decl[Any], users: dict[str, set[str]]) -> Iterator[Diagnostic]:
    spec: HFModelSource = decl.spec
    directory = p.resolve_path(spec.path)
    where = f"checkpoint \"{spec.path}\" of model `{decl.name}`"
    if not directory.is_dir():
        missing = "is not a directory" if directory.exists() else "does not exist"
        yield diagnostic("TNX372", f"{where} {missing}", _path_span(decl),
                         label="read by " + ", ".join(sorted(users)), help=_PATH_HELP)
        return
    problems = []
    info = model_size_info(spec, None, p.settings.precision, p.base_dir)
    if info.config is None:
        problems.append(info.missing or info.invalid or "config.json cannot be used")
    problems += _weights_problems(directory)
    if spec.tokenizer is None:
        problems += _tokenizer_problems(directory, "(or set `tokenizer =` on the model)")
    for problem in problems:
        yield diagnostic("TNX372", f"{where}: {problem}", _path_span(decl),
                         label="read by " + ", ".join(sorted(users)),
                         help="a checkpoint needs config.json, model.safetensors (or an index "
                              "and its shards) and tokenizer files")


def _weights_problems(directory: Path) -> list[str]:
    single, index = directory / SINGLE_WEIGHTS, directory / WEIGHTS_INDEX
    if single.is_file():
        return [m for m in (_safetensors_header(single),) if m]
    if not index.is_file():
        return [f"no {SINGLE_WEIGHTS} or {WEIGHTS_INDEX} (only safetensors checkpoints load)"]
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return [f"{WEIGHTS_INDEX} cannot be used ({type(err).__name__}: {err})"]
    return [m for m in (_safetensors_header(directory / s) for s in shards) if m]


def _safetensors_header(path: Path) -> str | None:
    """Why `path` is not a readable safetensors file (header only: cheap), or None."""
    try:
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8).ljust(8, b"\0"))
            if length == 0 or length > path.stat().st_size - 8:
                return f"{path.name} is not a safetensors file (bad header length)"
            json.loads(fh.read(length))
    except FileNotFoundError:
        return f"weights file {path.name} is missing"
    except OSError as err:
        return f"{path.name} cannot be read ({err.strerror or err})"
    except ValueError:
        return f"{path.name} is not a safetensors file (header is not JSON)"
    return None


def _tokenizer_problems(directory: Path, fix: str) -> list[str]:
    from tunix_dsl.data.tokenizers import HFTokenizer

    try:
        HFTokenizer.from_dir(directory)
    except (TokenizerError, OSError, ValueError) as err:
        return [f"{err} {fix}".strip()]
    return []


def _hf_tokenizer(p: Pipeline, decl: Decl[Any], users: dict[str, set[str]]) -> Iterator[Diagnostic]:
    spec: HFTokenizerSource = decl.spec
    for problem in _tokenizer_problems(p.resolve_path(spec.path), ""):
        yield diagnostic("TNX373", f"tokenizer `{decl.name}`: {problem}", _path_span(decl),
                         label="read by " + ", ".join(sorted(users)), help=_PATH_HELP)


def _python_reward(p: Pipeline, decl: Decl[Any], users: dict[str, set[str]]) -> Iterator[Diagnostic]:
    spec: PythonReward = decl.spec
    path = p.resolve_path(spec.file)
    problem = _function_problem(path, spec.file, spec.function)
    if problem:
        yield diagnostic("TNX374", f"reward `{decl.name}`: {problem}", _path_span(decl, "target"),
                         label="read by " + ", ".join(sorted(users)),
                         help="the target is \"file.py:function\", the file relative to the "
                              ".tnx file, the function defined at its top level")


def _function_problem(path: Path, shown: str, function: str) -> str | None:
    try:
        source = path.read_bytes()
    except FileNotFoundError:
        return f"file \"{shown}\" does not exist"
    except OSError as err:
        return f"file \"{shown}\" cannot be read ({err.strerror or err})"
    try:
        tree = ast.parse(source, filename=str(path))
    except (SyntaxError, ValueError) as err:
        line = getattr(err, "lineno", None)
        return f"\"{shown}\"{f':{line}' if line else ''} does not parse: {getattr(err, 'msg', err)}"
    defined = _top_level_names(tree)
    if function in defined:
        return None
    functions = sorted(n for n, is_def in defined.items() if is_def)
    listing = ", ".join(f"`{n}`" for n in functions) or "none"
    return f"\"{shown}\" defines no top-level `{function}` (functions there: {listing})"


def _top_level_names(tree: ast.Module) -> dict[str, bool]:
    """Names bound at module level -> whether by a `def` (imports and assignments count too)."""
    names: dict[str, bool] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[node.name] = True
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                names.setdefault((alias.asname or alias.name).split(".")[0], False)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names.setdefault(leaf.id, False)
    return names


InputCheck = Callable[[Pipeline, Decl[Any], dict[str, set[str]]], Iterator[Diagnostic]]

# Source types (or their base, for every dataset source) that name something on disk; the
# others (built-in rewards, transformer() models, bytes()) have nothing to check here.
INPUT_CHECKS: dict[type, InputCheck] = {
    DatasetSchema: _dataset_files,  # every dataset source: the files its `files()` names
    HFModelSource: _hf_model,
    HFTokenizerSource: _hf_tokenizer,
    PythonReward: _python_reward,
}


# ---------------------------------------------------------------------------- outputs


def _outputs(p: Pipeline, run_dir: Path, export_root: Path | None) -> Iterator[Problem]:
    run_problem = writable_problem(Path(run_dir))
    if run_problem:
        yield Problem(diagnostic(
            "TNX375", f"run directory {run_dir} is not writable: {run_problem}",
            Span(p.file, 1, 1, 1, 1), label="the run directory",
            help="pass --run-dir with a writable location, or set `run_dir` in the pipeline block"))
    for export in p.exports:
        destination = export_destination(export.config.destination, p.base_dir, export_root)
        if run_problem and Path(run_dir) in destination.parents:
            continue  # under the run directory: already reported
        problem = writable_problem(destination)
        if problem:
            yield Problem(diagnostic(
                "TNX375", f"cannot export to \"{export.config.destination}\": {problem}",
                export.field_spans.get(("destination",), export.span),
                label=f"resolves to {destination}",
                help="export to a writable folder (relative paths follow --run-dir when given)"))


def writable_problem(path: Path) -> str | None:
    """Why files cannot be created at `path` (a folder, maybe not there yet), or None.

    Probes the nearest existing folder with a file it creates and removes at
    once; nothing that was there before is touched.
    """
    existing = Path(os.path.abspath(path))
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        handle, probe = tempfile.mkstemp(prefix=".tnx-write-probe-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        return f"{existing} is not writable ({err.strerror or err})"
    return None


def stage_blockers(problems: list[Problem], stages: list[str]) -> dict[str, str]:
    """Per stage, why it will not run: its own first problem, else the run's."""
    out = {}
    for name in stages:
        own = next((p for p in problems if name in p.stages), None)
        if own is not None:
            out[name] = f"will not run: {own.diagnostic.code} {own.diagnostic.message.splitlines()[0]}"
        else:
            first = problems[0].diagnostic
            out[name] = f"will not run: the run stops before its first step ({first.code} at {first.span})"
    return out

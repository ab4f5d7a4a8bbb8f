"""The checker: AST → typed `Pipeline` IR + dataflow graph + diagnostics.

Phases (each reports what it finds and lets the next go on where it can):

1. symbols — one namespace, order-independent, duplicates reported;
2. params — evaluated with `--set` overrides applied and type-checked;
3. declarations — every block and source call built into its schema
   (`tunix_dsl.check.build`), references typed, every reference an edge of the graph;
4. structure — stage outputs that do not exist, cycles, topological order;
5. lint rules (`tunix_dsl.rules`) over the IR.

Nothing here imports jax or runs user code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tunix_dsl.check.build import Builder, Entry, Use, entries_of, keyword_entries
from tunix_dsl.check.dataflow import Dataflow
from tunix_dsl.check.evaluate import FAIL, Evaluator
from tunix_dsl.check.ir import Decl, Eval, Export, Pipeline, Stage
from tunix_dsl.check.resolve import Symbol, SymbolTable, collect, did_you_mean
from tunix_dsl.grammar import ast
from tunix_dsl.grammar.diagnostics import Diagnostic, Label
from tunix_dsl.grammar.spans import Span
from tunix_dsl.rules import run_rules
from tunix_dsl.rules.registry import diagnostic
from tunix_dsl.schemas import SOURCES, STAGE_KINDS, EvalConfig, ExportConfig, PipelineSettings
from tunix_dsl.schemas.plugins import begin_check, load_installed, load_local


def _refs(expr: ast.Expr) -> Iterator[ast.Ref]:
    """Every reference inside an expression (syntactically)."""
    return (node for node in ast.walk(expr) if isinstance(node, ast.Ref))


def _decl_exprs(decl: ast.Decl) -> list[tuple[str, ast.Expr]]:
    if isinstance(decl, ast.ParamDecl | ast.ValueDecl):
        return [("value", decl.value)]
    if isinstance(decl, ast.ExportDecl):
        return [("source", decl.source)]
    return [(f.name, f.value) for f in decl.fields]


# Source families a plugin package can extend (entry points), and what TNX105 says of them.
PLUGGABLE = frozenset({"model", "dataset", "reward"})
PLUGIN_HINT = "a plugin package adds more once installed (`tnx explain plugins` lists them)"


class Checker:
    def __init__(self, module: ast.Module, file: str, diags: list[Diagnostic]):
        self.module = module
        self.file = file
        self.diags = diags
        self.table: SymbolTable = collect(module, diags)
        self.ev = Evaluator(self.table, diags)
        self.builder = Builder(self.table, self.ev, diags)
        self.dataflow = Dataflow()
        self.tables: dict[str, dict[str, Decl[Any]]] = {k: {} for k in SOURCES}
        self.stages: dict[str, Stage] = {}
        self.evals: list[Eval] = []
        self.exports: list[Export] = []
        self.adapter_uses: list[Use] = []
        self.settings_spans: dict[tuple[str | int, ...], Span] = {}
        # names a broken plugin meant to register: their uses are not also "unknown"
        self.broken_plugin_names: set[str] = set()

    # ----------------------------------------------------------------- graph
    def _node(self, node: str, kind: str, label: str, span: Span, index: int) -> None:
        self.dataflow.add_node(node, kind=kind, label=label, span=span, index=index)

    def _edge(self, source: str, target: str, role: str, span: Span,
              output: str | None = None) -> None:
        if self.dataflow.has_edge(source, target):
            data = self.dataflow.edge(source, target)
            if role not in data["roles"]:
                data["roles"].append(role)
                data["role"] = ", ".join(data["roles"])
            data["spans"].append(span)
            return
        self.dataflow.add_edge(source, target, role=role, roles=[role], spans=[span], output=output)

    def _param_edges(self, decl: ast.Decl, node: str) -> None:
        for role, expr in _decl_exprs(decl):
            for ref in _refs(expr):
                symbol = self.table.get(ref.parts[0])
                if symbol is not None and symbol.keyword == "param":
                    self._edge(symbol.node, node, role, ref.span)

    def _use_edges(self, node: str) -> None:
        for use in self.builder.uses:
            symbol = self.table.symbols[use.target]
            self._edge(symbol.node, node, use.role, use.span, use.output)
            if use.output == "adapter":
                self.adapter_uses.append(use)
        self.builder.uses = []

    # ---------------------------------------------------------------- phases
    def settings(self) -> tuple[str, PipelineSettings]:
        decl = self.table.pipeline
        name = Path(self.file).stem if self.file and not self.file.startswith("<") else "pipeline"
        if decl is None:
            return name, PipelineSettings()
        node = f"pipeline:{decl.name}"
        self._node(node, "pipeline", decl.name, decl.name_span, -1)
        built = self.builder.build(PipelineSettings, entries_of(decl.fields), decl.name_span,
                                   f"pipeline `{decl.name}`", explain="pipeline")
        self._param_edges(decl, node)
        self.builder.uses = []
        if built is FAIL:
            return decl.name, PipelineSettings()
        self.settings_spans = built.spans
        return decl.name, built.value

    # --------------------------------------------------------------- plugins
    def plugins(self, settings: PipelineSettings, base_dir: Path) -> None:
        """Register installed plugins and the pipeline's `plugins = [...]` files (schemas
        only: lowerings load at plan/run); each problem is one diagnostic at a place."""
        problems = load_installed()
        begin_check()
        for index, path in enumerate(settings.plugins):
            problems += load_local(path, base_dir, index)
        for problem in problems:
            self.broken_plugin_names.update(problem.names)
            if problem.local is not None:
                span = self.settings_spans.get(("plugins", problem.local)) or self.module.span
            else:
                span = self._first_use(problem.names)
            self.diags.append(diagnostic(
                problem.code, problem.message, span, label=f"plugin {problem.plugin}",
                help="plugin paths are relative to the .tnx file's directory"
                if problem.code == "TNX013" else "fix or uninstall the plugin; `tnx explain "
                "plugins` lists what is registered and where it comes from"))

    def _first_use(self, names: tuple[str, ...]) -> Span:
        """Where this file uses one of `names` (a stage kind or a called function); else
        its start, so a broken installed plugin is still reported once."""
        for decl in self.module.decls:
            if isinstance(decl, ast.StageDecl) and decl.kind in names:
                return decl.kind_span
            for _, expr in _decl_exprs(decl):
                for node in ast.walk(expr):
                    if isinstance(node, ast.Call) and node.func in names:
                        return node.func_span
        return Span(self.file, 1, 1, 1, 1, 0, 0)

    def declarations(self) -> None:
        for symbol in sorted(self.table.symbols.values(), key=lambda s: s.index):
            decl = symbol.decl
            kind = decl.kind if isinstance(decl, ast.StageDecl) else symbol.keyword
            self._node(symbol.node, kind, symbol.name, symbol.name_span, symbol.index)
        for symbol in sorted(self.table.symbols.values(), key=lambda s: s.index):
            self._param_edges(symbol.decl, symbol.node)
            if isinstance(symbol.decl, ast.ValueDecl):
                self._value_decl(symbol, symbol.decl)
            elif isinstance(symbol.decl, ast.StageDecl):
                self._stage(symbol, symbol.decl)
            elif isinstance(symbol.decl, ast.EvalDecl):
                self._eval(symbol, symbol.decl)
            self._use_edges(symbol.node)
        for index, decl in enumerate(self.table.exports):
            self._export(decl, len(self.module.decls) + index)

    def _value_decl(self, symbol: Symbol, decl: ast.ValueDecl) -> None:
        family = SOURCES[decl.keyword]
        expr = decl.value
        if not isinstance(expr, ast.Call):
            example = next(iter(family))
            self.diags.append(diagnostic(
                "TNX201", f"{decl.keyword} `{decl.name}` must be built by a call, e.g. "
                f"`{example}(...)`", expr.span, label="not a call",
                help="functions: " + ", ".join(f"`{f}`" for f in family)))
            return
        schema = family.get(expr.func)
        if schema is None and expr.func in self.broken_plugin_names:
            return
        if schema is None:
            elsewhere = [k for k, fam in SOURCES.items() if expr.func in fam]
            help_text = (f"`{expr.func}(...)` makes a {elsewhere[0]}: declare it with "
                         f"`{elsewhere[0]} {decl.name} = ...`" if elsewhere else
                         did_you_mean(expr.func, family, f"{decl.keyword} sources"))
            if decl.keyword in PLUGGABLE and not (help_text or "`").startswith(("did you mean", "`")):
                help_text = "; ".join(filter(None, (help_text, PLUGIN_HINT)))  # no near name: perhaps a plugin that is not installed
            self.diags.append(diagnostic(
                "TNX105", f"unknown {decl.keyword} source `{expr.func}`", expr.func_span,
                label=f"not a {decl.keyword} source", help=help_text))
            return
        built = self.builder.build(
            schema, keyword_entries(expr), expr.span,
            f"`{expr.func}(...)`", expr.positional)
        if built is not FAIL:
            self.tables[decl.keyword][decl.name] = Decl(
                decl.name, decl.keyword, decl.span, decl.name_span, built.value, built.spans)

    def _stage(self, symbol: Symbol, decl: ast.StageDecl) -> None:
        info = STAGE_KINDS.get(decl.kind)
        if info is None and decl.kind in self.broken_plugin_names:
            return
        if info is None:
            self.diags.append(diagnostic(
                "TNX105", f"unknown stage kind `{decl.kind}`", decl.kind_span,
                label="not a stage kind", help=did_you_mean(decl.kind, STAGE_KINDS, "stage kinds")))
            return
        built = self.builder.build(info.schema, entries_of(decl.fields), decl.name_span,
                                   f"stage `{decl.name}` ({decl.kind})", explain=decl.kind)
        if built is not FAIL:
            self.stages[decl.name] = Stage(decl.name, decl.kind, decl.span, decl.name_span,
                                           built.value, built.spans)

    def _eval(self, symbol: Symbol, decl: ast.EvalDecl) -> None:
        built = self.builder.build(EvalConfig, entries_of(decl.fields), decl.name_span,
                                   f"eval `{decl.name}`", explain="eval")
        if built is not FAIL:
            self.evals.append(Eval(decl.name, decl.span, decl.name_span, built.value, built.spans))

    def _export(self, decl: ast.ExportDecl, index: int) -> None:
        node = f"export:{decl.destination.value}"
        self._node(node, "export", f'"{decl.destination.value}" as "{decl.format.value}"',
                   decl.span, index)
        entries = [Entry("source", None, decl.source),
                   Entry("destination", None, decl.destination),
                   Entry("format", None, decl.format)]
        built = self.builder.build(ExportConfig, entries, decl.span, "export")
        self._use_edges(node)
        if built is not FAIL:
            self.exports.append(Export(decl.span, built.value, built.spans))

    # ------------------------------------------------------------- structure
    def adapter_outputs(self) -> None:
        for use in self.adapter_uses:
            if use.role != "source":  # only `export` can write an adapter on its own
                self.diags.append(diagnostic(
                    "TNX109", f"`{use.role}` needs a model, not the adapter alone", use.span,
                    label="adapter weights only", help=f"use `{use.target}.model` (base with "
                    "the adapter merged); `.adapter` is for `export`"))
                continue
            stage = self.stages.get(use.target)
            if stage is not None and stage.adapter is None:
                why = ("has no `lora` field" if not stage.info.has_adapter
                       else "trains without `lora = lora(...)`")
                self.diags.append(diagnostic(
                    "TNX109", f"stage `{stage.name}` has no `.adapter` output", use.span,
                    label=f"`{stage.name}` {why}",
                    secondary=[Label(stage.name_span, "stage declared here")],
                    help=f"use `{stage.name}.model`, or give the stage a `lora = lora(...)`"))

    def order(self) -> list[Stage]:
        stage_nodes = [n for n in self.dataflow.nodes if n.startswith("stage:")]

        def index(node: str) -> int:
            return self.dataflow.nodes[node]["index"]

        cyclic: set[str] = set()
        for component in sorted(self.dataflow.strongly_connected_components(stage_nodes),
                                key=lambda c: min(index(n) for n in c)):
            first = min(component, key=index)
            if len(component) == 1 and not self.dataflow.has_edge(first, first):
                continue
            cyclic |= component
            self._report_cycle(self.dataflow.find_cycle(first, within=component))
        ordered = None if cyclic else self.dataflow.topological_order(index, within=stage_nodes)
        if ordered is None:
            ordered = sorted(stage_nodes, key=index)
        names = [n.split(":", 1)[1] for n in ordered]
        return [self.stages[n] for n in names if n in self.stages]

    def _report_cycle(self, edges: list[tuple[str, str]]) -> None:
        names = [self.dataflow.nodes[u]["label"] for u, _ in edges] + [
            self.dataflow.nodes[edges[0][0]]["label"]]
        spans = [self.dataflow.edge(u, v)["spans"][0] for u, v in edges]
        u, v = edges[-1]
        primary = self.dataflow.edge(u, v)["spans"][0]
        secondary = [Label(span, f"`{self.dataflow.nodes[b]['label']}` reads "
                                 f"`{self.dataflow.nodes[a]['label']}` here")
                     for (a, b), span in zip(edges[:-1], spans[:-1], strict=True)]
        self.diags.append(diagnostic(
            "TNX301", "stages form a cycle: " + " → ".join(names), primary,
            label=f"`{self.dataflow.nodes[v]['label']}` reads the output of "
                  f"`{self.dataflow.nodes[u]['label']}`", secondary=secondary,
            help="a stage can only read outputs of stages that finish before it"))

    def model_sizes(self, pipeline: Pipeline) -> None:
        from tunix_dsl.schemas import ModelRef

        for decl in pipeline.models.values():
            info = pipeline.size_info(ModelRef(kind="decl", name=decl.name))
            if info.invalid:
                # hf(path): the fault is in the checkpoint's config.json, so point at the path
                self.diags.append(diagnostic(
                    "TNX208", f"model `{decl.name}` has an invalid configuration",
                    decl.field_spans.get(("path",), decl.span), label=info.invalid))
            elif info.missing and not info.missing.startswith(("its tokenizer", "no tokenizer")):
                # (a tokenizer directory without tokenizer.json is reported at the tokenizer)
                self.diags.append(diagnostic(
                    "TNX403", f"sizes of model `{decl.name}` are unknown: {info.missing}",
                    decl.field_spans.get(("path",), decl.span),
                    label="size checks skipped for this model",
                    help="the path is relative to the .tnx file's directory"))


def _position(diag: Diagnostic, main_file: str) -> tuple[int, int, int]:
    return (0 if diag.span.file == main_file else 1, diag.span.start, diag.span.line)


def check_module(module: ast.Module | None, file: str, sources: Mapping[str, str],
                 overrides: Mapping[str, str] | None = None,
                 base_dir: Path | None = None,
                 diagnostics: list[Diagnostic] | None = None) -> Pipeline:
    """Check a parsed module (None after a syntax error) into a `Pipeline`."""
    diags = list(diagnostics or [])
    base = base_dir if base_dir is not None else Path.cwd()
    all_sources = dict(sources)
    if module is None:
        return _empty(file, base, all_sources, diags)
    checker = Checker(module, file, diags)
    for name, raw in (overrides or {}).items():
        checker.ev.add_override(name, raw)
    params = checker.ev.evaluate_params()
    all_sources.update(checker.ev.extra_sources)
    for symbol in checker.table.of_keyword("param"):
        checker._node(symbol.node, "param", symbol.name, symbol.name_span, symbol.index)
    name, settings = checker.settings()
    checker.plugins(settings, base)
    checker.declarations()
    checker.adapter_outputs()
    stages = checker.order()
    pipeline = Pipeline(
        name=name, file=file, base_dir=base, sources=all_sources, settings=settings,
        params={k: v for k, v in params.items() if v is not FAIL},
        tokenizers=checker.tables["tokenizer"], models=checker.tables["model"],
        datasets=checker.tables["dataset"], rewards=checker.tables["reward"],
        stages=stages, evals=checker.evals, exports=checker.exports, dataflow=checker.dataflow,
        diagnostics=diags, tools=checker.tables["tool"], environments=checker.tables["environment"],
        settings_spans=checker.settings_spans)
    checker.model_sizes(pipeline)
    diags.extend(run_rules(pipeline))
    diags.sort(key=lambda d: _position(d, file))
    return pipeline


def _empty(file: str, base: Path, sources: dict[str, str], diags: list[Diagnostic],
           io_error: bool = False) -> Pipeline:
    name = Path(file).stem if file and not file.startswith("<") else "pipeline"
    return Pipeline(name=name, file=file, base_dir=base, sources=sources,
                    settings=PipelineSettings(), params={}, tokenizers={}, models={},
                    datasets={}, rewards={}, stages=[], evals=[], exports=[],
                    dataflow=Dataflow(), diagnostics=diags, io_error=io_error)

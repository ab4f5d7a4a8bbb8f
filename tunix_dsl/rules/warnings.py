"""TNX4xx: warnings. They do not fail `tnx lint` (exit 0) but point at likely mistakes."""

from __future__ import annotations

from collections.abc import Iterator

from tunix_dsl.check.ir import Pipeline
from tunix_dsl.grammar.diagnostics import Diagnostic, Label, Severity
from tunix_dsl.models.info import exists, is_file
from tunix_dsl.rules.codes import _PRELUDE, _with_stage, without_sums
from tunix_dsl.rules.registry import diagnostic, rule
from tunix_dsl.schemas.sources import HFTokenizerSource, PythonReward

W = Severity.WARNING


@rule("TNX401", "reference-not-ancestor", W,
      "A reference model that is not the policy or one of its ancestors.",
      bad=without_sums(_with_stage(
          "policy = tiny\nreference = other\ndata = prefs\nsteps = 10", kind="dpo",
          extra='model other = transformer(preset = "pico", tokenizer = chars)\n'
                'dataset prefs = synthetic("addition_preferences", count = 100)\n')),
      good=without_sums(_with_stage(
          "policy = tiny\nreference = tiny\ndata = prefs\nsteps = 10", kind="dpo",
          extra='dataset prefs = synthetic("addition_preferences", count = 100)\n')))
def reference_not_ancestor(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in p.stages:
        models = stage.models
        if "reference" not in models or "policy" not in models:
            continue
        lineage = p.lineage(models["policy"])
        if models["reference"] not in lineage:
            chain = " ← ".join(str(r) for r in lineage)
            yield diagnostic(
                "TNX401", f"reference `{models['reference']}` of stage `{stage.name}` is not "
                f"an ancestor of its policy", stage.span_of("reference"),
                label="not in the policy's lineage",
                secondary=[Label(stage.span_of("policy"), f"policy lineage: {chain}")],
                help="the KL term anchors the policy to where it started; usually the "
                     "reference is the policy's input (or leave it unset)")


_UNUSED_KINDS = ("param", "tokenizer", "model", "dataset", "reward", "tool", "environment")


@rule("TNX402", "unused", W,
      "A declaration nothing reads, or a stage whose output no stage, eval or export uses.",
      bad=_with_stage("model = tiny\ndata = sums\nsteps = 10",
                      extra='dataset extra = synthetic("copy")\n'),
      good=_with_stage("model = tiny\ndata = sums\nsteps = 10"))
def unused(p: Pipeline) -> Iterator[Diagnostic]:
    if p.errors:  # references in declarations that failed to check are missing: noise
        return
    graph = p.dataflow
    for node, data in graph.nodes.items():
        if graph.out_degree(node):
            continue
        keyword = node.split(":", 1)[0]
        if keyword in _UNUSED_KINDS:
            yield diagnostic("TNX402", f"{keyword} `{data['label']}` is never used",
                             data["span"], label="unused",
                             help="remove it, or reference it from a stage")
        elif keyword == "stage":
            yield diagnostic("TNX402", f"the output of stage `{data['label']}` is never used",
                             data["span"], label="nothing reads this stage's output",
                             help=f"export it (`export {data['label']}.model to \"dir\" as "
                                  f"\"hf\"`), evaluate it, or remove the stage")


@rule("TNX403", "path-not-found", W,
      "A file or directory the pipeline names does not exist (yet); checks that need it are "
      "skipped.",
      bad=_PRELUDE + 'reward mine = python("missing_rewards.py:score")\n'
      + _with_stage("policy = tiny\ndata = sums\nrewards = [mine]\nsteps = 10\n"
                    "batch_size = 16", kind="grpo").replace(_PRELUDE, "\n"),
      good=_PRELUDE + 'reward mine = python("examples/rewards.py:score")\n'
      + _with_stage("policy = tiny\ndata = sums\nrewards = [mine]\nsteps = 10\n"
                    "batch_size = 16", kind="grpo").replace(_PRELUDE, "\n"))
def paths_exist(p: Pipeline) -> Iterator[Diagnostic]:
    for decl in p.rewards.values():
        if isinstance(decl.spec, PythonReward) and not is_file(p.resolve_path(decl.spec.file)):
            yield diagnostic("TNX403", f"reward file \"{decl.spec.file}\" not found",
                             decl.field_spans.get(("target",), decl.name_span),
                             label="loaded at run time",
                             help="paths are relative to the .tnx file's directory")
    for dataset in p.datasets.values():  # what each source, built-in or plugin, reads
        for field, written in dataset.spec.files().items():
            if not exists(p.resolve_path(written)):
                yield diagnostic("TNX403", f"data path \"{written}\" not found",
                                 dataset.field_spans.get((field,), dataset.name_span),
                                 label="columns not checked",
                                 help="paths are relative to the .tnx file's directory")
    for tokenizer in p.tokenizers.values():
        if isinstance(tokenizer.spec, HFTokenizerSource):
            path = p.resolve_path(tokenizer.spec.path)
            if not is_file(path / "tokenizer.json"):
                yield diagnostic("TNX403", f"no tokenizer.json in \"{tokenizer.spec.path}\"",
                                 tokenizer.field_spans.get(("path",), tokenizer.name_span),
                                 label="vocabulary checks skipped",
                                 help="paths are relative to the .tnx file's directory")

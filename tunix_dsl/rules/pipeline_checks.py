"""TNX3xx: checks that need the whole pipeline (DESIGN.md §5)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tunix_dsl.check.ir import Pipeline, Stage
from tunix_dsl.data.datasets import CONSUMERS, peek_jsonl_columns
from tunix_dsl.grammar.diagnostics import Diagnostic, Label, Severity
from tunix_dsl.grammar.spans import Span
from tunix_dsl.models.info import dense_kernel_shapes, exists, match_lora_targets
from tunix_dsl.rules.codes import _PRELUDE, _with_stage
from tunix_dsl.rules.registry import diagnostic, rule
from tunix_dsl.rules.run_checks import mesh_batch_diagnostics
from tunix_dsl.schemas.datasets import JsonlSource, SyntheticSource

E = Severity.ERROR
_PREFS = 'dataset prefs = synthetic("addition_preferences", count = 100)\n'


def _names(columns: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"`{c}`" for c in columns)


def _dataset_help(p: Pipeline, name: str, needed: tuple[str, ...]) -> str | None:
    decl = p.datasets.get(name)
    if decl is None:
        return None
    if isinstance(decl.spec, SyntheticSource):
        from tunix_dsl.data.datasets import SYNTHETIC_TASKS

        fits = [t.name for t in SYNTHETIC_TASKS.values() if set(needed) <= set(t.columns)]
        return ("synthetic tasks with these columns: " + ", ".join(f'"{t}"' for t in fits)
                if fits else None)
    return "map file keys to columns: " + ", ".join(f'{c} = "<key>"' for c in needed)


@rule("TNX302", "dataset-columns", E,
      "A dataset lacks the columns its consumer reads (dpo: prompt/chosen/rejected; sft: "
      "prompt/completion; grpo, ppo, eval: prompt; rewards: their `field`).",
      bad=_with_stage("policy = tiny\ndata = sums\nsteps = 10", kind="dpo"),
      good=_with_stage("policy = tiny\ndata = prefs\nsteps = 10", kind="dpo",
                       extra=_PREFS).replace(_PRELUDE, _PRELUDE.replace(
                           'dataset sums = synthetic("addition", count = 100)\n', "")))
def dataset_columns(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in p.stages:
        consumer = CONSUMERS[stage.info.consumer]
        for role, name in stage.datasets.items():
            yield from _missing(p, name, consumer.missing(p.dataset_columns(name) or ()),
                                stage.span_of(role), f"stage `{stage.name}` ({stage.kind})",
                                p.dataset_columns(name))
        for i, reward in enumerate(stage.rewards):
            spec = p.rewards.get(reward)
            columns = p.dataset_columns(stage.config.data)
            if spec is None or columns is None:
                continue
            missing = tuple(c for c in spec.spec.columns() if c not in columns)
            yield from _missing(p, stage.config.data, missing, stage.span_of("rewards", i),
                                f"reward `{reward}`", columns)
    for ev in p.evals:
        columns = p.dataset_columns(ev.config.data)
        spec = p.rewards.get(ev.config.metric)
        needed = CONSUMERS["prompt"].required + (spec.spec.columns() if spec else ())
        missing = tuple(c for c in needed if columns is not None and c not in columns)
        yield from _missing(p, ev.config.data, missing, ev.field_spans.get(("data",), ev.name_span),
                            f"eval `{ev.name}`", columns)


def _broken_mapping(p: Pipeline, name: str) -> bool:
    """A jsonl mapping naming keys the file lacks: TNX308 reports it, not TNX302."""
    decl = p.datasets.get(name)
    if decl is None or not isinstance(decl.spec, JsonlSource):
        return False
    keys = peek_jsonl_columns(p.resolve_path(decl.spec.path))
    return isinstance(keys, set) and not set(decl.spec.mapping().values()) <= keys


def _missing(p: Pipeline, name: str, missing: tuple[str, ...], span: Span, who: str,
             columns: frozenset[str] | None) -> Iterator[Diagnostic]:
    if columns is None or not missing or _broken_mapping(p, name):
        return
    have = _names(sorted(columns)) or "none"
    yield diagnostic(
        "TNX302", f"dataset `{name}` has no column{'s' if len(missing) > 1 else ''} "
        f"{_names(missing)}, needed by {who}", span,
        label=f"columns: {have}", help=_dataset_help(p, name, missing))


@rule("TNX308", "unreadable-data", E,
      "A jsonl dataset whose first rows cannot be read, or that lacks a key its mapping names.",
      bad=_PRELUDE.replace('synthetic("addition", count = 100)',
                           'jsonl("examples/data/qa.jsonl", prompt = "question", '
                           'completion = "reply")')
      + "\nstage tune: sft {\n  model = tiny\n  data  = sums\n  steps = 10\n}\n\n"
      'export tune.model to "out/tune" as "hf"\n',
      good=_PRELUDE.replace('synthetic("addition", count = 100)',
                            'jsonl("examples/data/qa.jsonl", prompt = "question", '
                            'completion = "answer")')
      + "\nstage tune: sft {\n  model = tiny\n  data  = sums\n  steps = 10\n}\n\n"
      'export tune.model to "out/tune" as "hf"\n')
def jsonl_files(p: Pipeline) -> Iterator[Diagnostic]:
    for decl in p.datasets.values():
        if not isinstance(decl.spec, JsonlSource):
            continue
        path = p.resolve_path(decl.spec.path)
        if not exists(path):
            continue  # TNX403, for every source's `files()`
        keys = peek_jsonl_columns(path, mapping=decl.spec.mapping())
        if not isinstance(keys, set):
            where = f"{decl.spec.path}:{keys.line}" if keys.line else decl.spec.path
            yield diagnostic("TNX308", f"cannot read dataset `{decl.name}`: {where}: {keys.message}",
                             decl.field_spans.get(("path",), decl.name_span),
                             label="unreadable data file")
            continue
        for column, key in decl.spec.mapping().items():
            if key not in keys:
                yield diagnostic(
                    "TNX308", f"\"{decl.spec.path}\" has no key \"{key}\" for column `{column}`",
                    decl.field_spans.get((column,), decl.name_span), label="not in the file",
                    help="keys in the first rows: " + ", ".join(f'"{k}"' for k in sorted(keys)))


def _pairs(stage: Stage) -> Iterator[tuple[str, str]]:
    models = stage.models
    for a, b in (("teacher", "student"), ("policy", "reference"), ("policy", "critic")):
        if a in models and b in models:
            yield a, b


@rule("TNX303", "tokenizer-mismatch", E,
      "Teacher and student (or policy and reference/critic) use different tokenizers or vocabularies.",
      bad=_PRELUDE + 'tokenizer hf_tok = hf_tokenizer("examples/data/tok")\n'
      'model other = transformer(preset = "pico", tokenizer = hf_tok)\n'
      + "\nstage tune: distill {\n  teacher = other\n  student = tiny\n  data = sums\n"
      "  steps = 10\n}\n\nexport tune.model to \"out/tune\" as \"hf\"\n",
      good=_PRELUDE + 'model other = transformer(preset = "nano", tokenizer = chars)\n'
      + "\nstage tune: distill {\n  teacher = other\n  student = tiny\n  data = sums\n"
      "  steps = 10\n}\n\nexport tune.model to \"out/tune\" as \"hf\"\n")
def tokenizer_mismatch(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in p.stages:
        for a, b in _pairs(stage):
            ref_a, ref_b = stage.models[a], stage.models[b]
            tok_a, tok_b = p.tokenizer_of(ref_a), p.tokenizer_of(ref_b)
            if tok_a is not None and tok_b is not None and tok_a[0] != tok_b[0]:
                yield diagnostic(
                    "TNX303", f"`{a}` and `{b}` of stage `{stage.name}` use different tokenizers",
                    stage.span_of(b), label=f"`{ref_b}` uses {tok_b[1]}",
                    secondary=[Label(stage.span_of(a), f"`{ref_a}` uses {tok_a[1]}")],
                    help="both models must share one tokenizer so their token ids line up")
                continue
            cfg_a, cfg_b = p.model_config(ref_a), p.model_config(ref_b)
            if cfg_a and cfg_b and cfg_a.vocab_size != cfg_b.vocab_size:
                yield diagnostic(
                    "TNX303", f"`{a}` and `{b}` of stage `{stage.name}` have different "
                    f"vocabulary sizes ({cfg_a.vocab_size} vs {cfg_b.vocab_size})",
                    stage.span_of(b), label=f"vocab {cfg_b.vocab_size}",
                    secondary=[Label(stage.span_of(a), f"vocab {cfg_a.vocab_size}")])


@rule("TNX304", "batch-vs-generations", E,
      "A grpo batch (completions per step) that is not a multiple of `generations`.",
      bad=_with_stage("policy = tiny\ndata = sums\nrewards = [ok]\nsteps = 10\n"
                      "batch_size = 12\ngenerations = 8", kind="grpo",
                      extra="reward ok = exact_match()\n"),
      good=_with_stage("policy = tiny\ndata = sums\nrewards = [ok]\nsteps = 10\n"
                       "batch_size = 16\ngenerations = 8", kind="grpo",
                       extra="reward ok = exact_match()\n"))
def batch_vs_generations(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in p.stages:
        generations = getattr(stage.config, "generations", None)
        if generations and stage.config.batch_size % generations:
            size = stage.config.batch_size
            yield diagnostic(
                "TNX304", f"batch_size {size} is not a multiple of generations {generations}",
                stage.span_of("batch_size"), label="completions per step",
                secondary=[Label(stage.span_of("generations"), "completions per prompt")],
                help=f"use batch_size = {max(1, size // generations) * generations} "
                     f"({max(1, size // generations)} prompts × {generations})")


@rule("TNX305", "batch-vs-mesh", E,
      "A micro-batch (batch_size / grad_accum) that does not split evenly over dcn × data × fsdp "
      "(with a -1 axis: over the fixed axes, which every device count multiplies).",
      bad="pipeline demo {\n  mesh = { data = 4, fsdp = 1 }\n}\n\n"
      + _with_stage("model = tiny\ndata = sums\nsteps = 10\nbatch_size = 6"),
      good="pipeline demo {\n  mesh = { data = 4, fsdp = 1 }\n}\n\n"
      + _with_stage("model = tiny\ndata = sums\nsteps = 10\nbatch_size = 8"))
def batch_vs_mesh(p: Pipeline) -> Iterator[Diagnostic]:
    # with a -1 axis, the fixed axes alone already bound what any device count can split
    yield from (d for d in mesh_batch_diagnostics(p) if d.code == "TNX305")


@rule("TNX306", "lora-rank", E,
      "A LoRA rank larger than the narrowest projection it adapts.",
      bad=_with_stage("model = tiny\ndata = sums\nsteps = 10\nlora = lora(rank = 128)")
      .replace('tune.model to "out/tune" as "hf"', 'tune.adapter to "out/tune" as "orbax"'),
      good=_with_stage("model = tiny\ndata = sums\nsteps = 10\nlora = lora(rank = 8)")
      .replace('tune.model to "out/tune" as "hf"', 'tune.adapter to "out/tune" as "orbax"'))
def lora_rank(p: Pipeline) -> Iterator[Diagnostic]:
    for stage, shapes in _lora_stages(p):
        adapter = stage.adapter
        hit, unmatched = match_lora_targets(adapter.targets, shapes)
        if unmatched or not hit:
            continue  # TNX309
        path = min(hit, key=lambda name: min(shapes[name]))
        n_in, n_out = shapes[path]
        if adapter.rank > min(n_in, n_out):
            yield diagnostic(
                "TNX306", f"LoRA rank {adapter.rank} exceeds the width of "
                f"`{path.removesuffix('.kernel')}` "
                f"({n_in} → {n_out})", stage.span_of("lora"),
                label=f"rank must be ≤ {min(n_in, n_out)}",
                help="a rank at or above the layer width is a full-rank update; use a "
                     "smaller rank")


def _lora_stages(p: Pipeline) -> Iterator[tuple[Stage, dict[str, tuple[int, int]]]]:
    """Stages with an adapter whose trained model's sizes are known, with its kernel shapes."""
    for stage in p.stages:
        cfg = p.model_config(stage.trained) if stage.adapter is not None else None
        if cfg is not None:
            yield stage, dense_kernel_shapes(cfg)


@rule("TNX309", "lora-target-unmatched", E,
      "A LoRA target regex that matches no layer of the model (`apply_lora` refuses it).",
      bad=_with_stage("model = tiny\ndata = sums\nsteps = 10\n"
                      "lora = lora(rank = 4, targets = [\"q_proj$\"])")
      .replace('tune.model to "out/tune" as "hf"', 'tune.adapter to "out/tune" as "orbax"'),
      good=_with_stage("model = tiny\ndata = sums\nsteps = 10\n"
                       "lora = lora(rank = 4, targets = [\"q_proj.kernel$\"])")
      .replace('tune.model to "out/tune" as "hf"', 'tune.adapter to "out/tune" as "orbax"'))
def lora_target_unmatched(p: Pipeline) -> Iterator[Diagnostic]:
    for stage, shapes in _lora_stages(p):
        targets = list(stage.adapter.targets)
        _, unmatched = match_lora_targets(targets, shapes)
        for target in unmatched:
            index = targets.index(target)
            yield diagnostic(
                "TNX309", f"LoRA target \"{target}\" of stage `{stage.name}` matches no layer "
                f"of `{stage.trained}`", stage.span_of("lora", "targets", index),
                label="matches no parameter path",
                help="targets are regexes searched in paths such as "
                     + ", ".join(f"`{name}`" for name in list(shapes)[:2]) + " and "
                     + f"`{list(shapes)[6]}`")


@rule("TNX307", "context-length", E,
      "Sequences longer than the model's context (max_prompt_len + max_new_tokens, max_seq_len).",
      bad=_with_stage("model = tiny\ndata = sums\nsteps = 10\nmax_seq_len = 512"),
      good=_with_stage("model = tiny\ndata = sums\nsteps = 10\nmax_seq_len = 128"))
def context_length(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in p.stages:
        config: Any = stage.config  # a grpo/ppo config has max_prompt_len, others max_seq_len
        for role, ref in stage.models.items():
            cfg = p.model_config(ref)
            if cfg is None:
                continue
            if hasattr(config, "max_new_tokens"):
                total = config.max_prompt_len + config.max_new_tokens
                field, what = "max_new_tokens", (f"max_prompt_len + max_new_tokens = "
                                                 f"{config.max_prompt_len} + "
                                                 f"{config.max_new_tokens} = {total}")
            else:
                total, field = config.max_seq_len, "max_seq_len"
                what = f"max_seq_len = {total}"
            if total > cfg.max_seq_len:
                yield diagnostic(
                    "TNX307", f"sequences of stage `{stage.name}` ({total} tokens) exceed the "
                    f"context of `{ref}` ({cfg.max_seq_len})", stage.span_of(field),
                    label=what, secondary=[Label(stage.span_of(role), f"{role} model")],
                    help=f"keep {field} within the model's max_seq_len")
                break

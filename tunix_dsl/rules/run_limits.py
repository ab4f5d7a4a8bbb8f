"""TNX230–239: limits the runtime enforces, checked at lint time instead.

Each rule here mirrors a `raise` that the runtime would reach only after
earlier stages trained (an export runs after every stage; an RL stage builds
its prompts when it starts). The runtime keeps an assertion or a message for
direct API callers; a pipeline that lints clean never reaches them.
"""

from __future__ import annotations

from collections.abc import Iterator

from tunix_dsl.check.ir import Pipeline
from tunix_dsl.data.datasets import MIN_SEQUENCE_TOKENS
from tunix_dsl.grammar.diagnostics import Diagnostic, Label, Severity
from tunix_dsl.rules.codes import _with_stage
from tunix_dsl.rules.registry import diagnostic, rule

E = Severity.ERROR
_LORA = "model = tiny\ndata = sums\nsteps = 10\nlora = lora(rank = 4)"
_REWARD = "reward ok = exact_match()\n"
_GRPO = "policy = tiny\ndata = sums\nrewards = [ok]\nsteps = 10\nbatch_size = 16\ngenerations = 4\n"


@rule("TNX230", "adapter-export-format", E,
      "An export of a stage's `.adapter` (the LoRA weights alone) in a format other than "
      "\"orbax\": an adapter is not a whole model, so it cannot be a Hugging Face directory.",
      bad=_with_stage(_LORA).replace('export tune.model to "out/tune" as "hf"',
                                     'export tune.adapter to "out/adapter" as "hf"'),
      good=_with_stage(_LORA).replace('export tune.model to "out/tune" as "hf"',
                                      'export tune.adapter to "out/adapter" as "orbax"'))
def adapter_export_format(p: Pipeline) -> Iterator[Diagnostic]:
    for export in p.exports:
        source = export.config.source
        if source.kind != "stage" or source.output != "adapter" or export.config.format == "orbax":
            continue
        yield diagnostic(
            "TNX230", f"`{source}` is the adapter alone; it exports as \"orbax\", not "
            f"\"{export.config.format}\"", export.field_spans.get(("format",), export.span),
            label="the format",
            secondary=[Label(export.field_spans[("source",)], "adapter weights only")]
            if ("source",) in export.field_spans else [],
            help=f"write `as \"orbax\"`, or export `{source.name}.model` (the base with the "
                 "adapter merged) as \"hf\"")


@rule("TNX231", "rl-prompt-too-short", E,
      f"An RL stage whose `max_prompt_len` is below {MIN_SEQUENCE_TOKENS} tokens: a prompt "
      "needs bos, a token of text and room to end.",
      bad=_with_stage(_GRPO + "max_prompt_len = 2", kind="grpo", extra=_REWARD),
      good=_with_stage(_GRPO + "max_prompt_len = 8", kind="grpo", extra=_REWARD))
def rl_prompt_too_short(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in p.stages:
        length = getattr(stage.config, "max_prompt_len", None)
        if length is None or length >= MIN_SEQUENCE_TOKENS:
            continue
        yield diagnostic(
            "TNX231", f"stage `{stage.name}` cuts prompts to {length} token"
            f"{'s' if length != 1 else ''}, too few for a prompt", stage.span_of("max_prompt_len"),
            label=f"at least {MIN_SEQUENCE_TOKENS}",
            help=f"raise max_prompt_len to at least {MIN_SEQUENCE_TOKENS} (prompts longer than it "
                 "keep their last tokens)")

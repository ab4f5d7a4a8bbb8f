"""TNX520–522: `rollout = "async"` and `max_staleness` on RL stages (grpo, ppo).

The async pipeline (`runtime/rl_async.py`) keeps `max_staleness` rollouts in flight, each
one step's prompts with one PRNG key, so what a step trains on is fixed before its update
runs. Dynamic sampling decides how many batches a step draws from their rewards, which
the worker would have to know `max_staleness` steps ahead: the two are refused together.
"""

from __future__ import annotations

from collections.abc import Iterator

from tunix_dsl.check.ir import Pipeline, Stage
from tunix_dsl.grammar.diagnostics import Diagnostic, Severity
from tunix_dsl.rules.codes import _with_stage
from tunix_dsl.rules.registry import diagnostic, rule

E = Severity.ERROR
_REWARD = "reward ok = exact_match()\n"
_GRPO = "policy = tiny\ndata = sums\nrewards = [ok]\nsteps = 10\nbatch_size = 16\ngenerations = 4\n"


def _async_stages(p: Pipeline) -> Iterator[Stage]:
    return (s for s in p.stages if s.info.program == "rl" and getattr(s.config, "rollout", "sync") == "async")


@rule("TNX520", "async-rollout-with-dynamic-sampling", E,
      "`rollout = \"async\"` with `dynamic_sampling = true`: how many batches a step draws depends "
      "on their rewards, which the rollout worker would need to know steps ahead.",
      bad=_with_stage(_GRPO + 'rollout = "async"\ndynamic_sampling = true', kind="grpo", extra=_REWARD),
      good=_with_stage(_GRPO + 'rollout = "async"', kind="grpo", extra=_REWARD))
def async_with_dynamic_sampling(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in _async_stages(p):
        if getattr(stage.config, "dynamic_sampling", False):
            yield diagnostic(
                "TNX520", f"stage `{stage.name}` cannot combine async rollout with dynamic sampling",
                stage.span_of("dynamic_sampling"), label="async rollout draws one batch per step",
                help='remove `dynamic_sampling = true`, or use `rollout = "sync"`')


@rule("TNX521", "max-staleness-below-one", E,
      "`max_staleness` below 1: an async rollout is generated at least one step before the update "
      "that trains on it.",
      bad=_with_stage(_GRPO + 'rollout = "async"\nmax_staleness = 0', kind="grpo", extra=_REWARD),
      good=_with_stage(_GRPO + 'rollout = "async"\nmax_staleness = 1', kind="grpo", extra=_REWARD))
def max_staleness_below_one(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in p.stages:
        staleness = getattr(stage.config, "max_staleness", 1)
        if stage.info.program == "rl" and staleness < 1:
            yield diagnostic(
                "TNX521", f"`max_staleness` of stage `{stage.name}` is {staleness}; it must be at least 1",
                stage.span_of("max_staleness"), label="at least 1",
                help='set `max_staleness = 1` (or more); for on-policy rollouts use `rollout = "sync"`')


@rule("TNX522", "max-staleness-without-async", E,
      "`max_staleness` on an RL stage whose rollout is sync (the default): it would do nothing.",
      bad=_with_stage(_GRPO + "max_staleness = 2", kind="grpo", extra=_REWARD),
      good=_with_stage(_GRPO + 'rollout = "async"\nmax_staleness = 2', kind="grpo", extra=_REWARD))
def max_staleness_without_async(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in p.stages:
        config = stage.config
        if (stage.info.program == "rl" and "max_staleness" in config.model_fields_set
                and getattr(config, "rollout", "sync") != "async"):
            yield diagnostic(
                "TNX522", f"`max_staleness` of stage `{stage.name}` has no effect with sync rollout",
                stage.span_of("max_staleness"), label="ignored",
                help='add `rollout = "async"`, or remove max_staleness')

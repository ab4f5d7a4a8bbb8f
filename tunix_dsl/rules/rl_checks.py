"""TNX350–369 (errors) and TNX435–444 (warnings): checks of RL stages (grpo, ppo).

An RL step is three programs: the rollout samples `batch_size / generations`
prompts (sharded over the mesh's batch axes), the update splits the
`batch_size` completions into `grad_accum` micro-batches (TNX206 checks they
divide), and rewards run on the host between them — so one step per dispatch.
"""

from __future__ import annotations

from collections.abc import Iterator

from tunix_dsl.check.ir import Pipeline, Stage
from tunix_dsl.grammar.diagnostics import Diagnostic, Severity
from tunix_dsl.rules.codes import _with_stage
from tunix_dsl.rules.registry import diagnostic, rule
from tunix_dsl.rules.run_checks import mesh_batch_diagnostics

E, W = Severity.ERROR, Severity.WARNING
_REWARD = "reward ok = exact_match()\n"
_GRPO = "policy = tiny\ndata = sums\nrewards = [ok]\nsteps = 10\n"


def _rl_stages(p: Pipeline) -> Iterator[Stage]:
    return (s for s in p.stages if s.info.program == "rl")


@rule("TNX350", "rl-prompts-vs-mesh", E,
      "An RL stage whose prompts per step (batch_size / generations) do not split over the "
      "mesh's batch axes (dcn × data × fsdp; with a -1 axis: over the fixed axes, and at `tnx run` "
      "over the devices found): the rollout shards prompts, not completions.",
      bad="pipeline demo {\n  mesh = { data = 4, fsdp = 1 }\n}\n\n"
      + _with_stage(_GRPO + "batch_size = 16\ngenerations = 8", kind="grpo", extra=_REWARD),
      good="pipeline demo {\n  mesh = { data = 4, fsdp = 1 }\n}\n\n"
      + _with_stage(_GRPO + "batch_size = 32\ngenerations = 8", kind="grpo", extra=_REWARD))
def rl_prompts_vs_mesh(p: Pipeline) -> Iterator[Diagnostic]:
    # the run checks the same on the devices it finds (runtime.planning.check_mesh)
    yield from (d for d in mesh_batch_diagnostics(p) if d.code == "TNX350")


@rule("TNX352", "rl-steps-per-call", E,
      "`steps_per_call` above 1 on an RL stage: every step waits for its rewards on the host "
      "between rollout and update, so RL stages take one step per dispatch.",
      # steps a multiple of steps_per_call, so TNX220 (the schema's check) does not fire first
      bad=_with_stage(_GRPO.replace("steps = 10", "steps = 12") + "batch_size = 16\ngenerations = 4\n"
                      "steps_per_call = 4", kind="grpo", extra=_REWARD),
      good=_with_stage(_GRPO + "batch_size = 16\ngenerations = 4\niterations = 4", kind="grpo",
                       extra=_REWARD))
def rl_steps_per_call(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in _rl_stages(p):
        if stage.config.steps_per_call > 1:
            yield diagnostic(
                "TNX352", f"stage `{stage.name}` ({stage.kind}) cannot fuse {stage.config.steps_per_call} "
                "steps per dispatch", stage.span_of("steps_per_call"),
                label="rewards run on the host between steps",
                help="remove steps_per_call; to do more work per rollout raise `iterations` (μ)")


@rule("TNX435", "max-draws-without-dynamic-sampling", W,
      "`max_draws` set on a grpo stage without `dynamic_sampling = true`: it has no effect.",
      bad=_with_stage(_GRPO + "batch_size = 16\ngenerations = 4\nmax_draws = 5", kind="grpo", extra=_REWARD),
      good=_with_stage(_GRPO + "batch_size = 16\ngenerations = 4\ndynamic_sampling = true\nmax_draws = 5",
                       kind="grpo", extra=_REWARD))
def max_draws_without_dynamic_sampling(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in _rl_stages(p):
        config = stage.config
        if "max_draws" in config.model_fields_set and not getattr(config, "dynamic_sampling", False):
            yield diagnostic(
                "TNX435", f"`max_draws` of stage `{stage.name}` has no effect without dynamic sampling",
                stage.span_of("max_draws"), label="ignored",
                help="add `dynamic_sampling = true`, or remove max_draws")

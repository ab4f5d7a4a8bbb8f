"""TNX523–525: checks of `eval` blocks that run episodes (`environment = NAME`).

An eval with an environment runs one episode per prompt, as an agentic RL stage's rollout
does (`runtime/agent_eval.py`), so it needs what the stage needs: a way to read tool calls,
and a context with room for a prompt beside the longest episode. Without an environment
the agent fields would do nothing, and are refused as on a stage (TNX516).
"""

from __future__ import annotations

from collections.abc import Iterator

from tunix_dsl.check.ir import Eval, Pipeline
from tunix_dsl.data.datasets import MIN_SEQUENCE_TOKENS
from tunix_dsl.grammar.diagnostics import Diagnostic, Label, Severity
from tunix_dsl.grammar.spans import Span
from tunix_dsl.rules.agent_checks import _AGENT_FIELDS, episode_tokens, model_supports_tools
from tunix_dsl.rules.codes import _with_stage
from tunix_dsl.rules.registry import diagnostic, rule
from tunix_dsl.schemas.agents import PythonEnvironment, ToolsEnvironment

E = Severity.ERROR


def _eval(fields: str = 'tool_format = "hermes"\nmax_turns = 2', environment: bool = True) -> str:
    """An example: an eval of a tuned model answering with a calculator tool."""
    extra = ('reward ok = exact_match()\ntool calc = python("examples/agent_tools.py:calculate")\n'
             "environment math = tools([calc], reward = ok)\n")
    body = "model = tiny\ndata = sums\nsteps = 10"
    lines = ["models = [tune.model]", "data = sums", "metric = ok"]
    if environment:
        lines.append("environment = math")
    lines += ["max_new_tokens = 24", *fields.splitlines()]
    block = "eval tools {\n" + "".join(f"  {line}\n" for line in lines) + "}\n\nexport"
    return _with_stage(body, extra=extra).replace("export", block, 1)


def _span(ev: Eval, name: str) -> Span:
    return ev.field_spans.get((name,), ev.name_span)


@rule("TNX523", "eval-episode-exceeds-context", E,
      "An eval with an `environment` whose longest episode (max_turns × max_new_tokens + "
      "(max_turns − 1) × max_observation_tokens, one observation more with a python "
      "environment's opening) leaves no room for a prompt in a scored model's context.",
      bad=_eval(fields='tool_format = "hermes"\nmax_turns = 4\nmax_observation_tokens = 24'),
      good=_eval(fields='tool_format = "hermes"\nmax_turns = 2\nmax_observation_tokens = 24'))
def eval_episode_exceeds_context(p: Pipeline) -> Iterator[Diagnostic]:
    for ev in p.evals:
        env = p.environments.get(ev.config.environment or "")
        if env is None:
            continue
        config = ev.config
        opening = isinstance(env.spec, PythonEnvironment)
        episode = episode_tokens(config, config.max_new_tokens, opening)
        for i, ref in enumerate(config.models):
            cfg = p.model_config(ref)
            if cfg is None or cfg.max_seq_len - episode >= MIN_SEQUENCE_TOKENS:
                continue
            observations = config.max_turns - 1 + opening
            yield diagnostic(
                "TNX523", f"episodes of eval `{ev.name}` ({episode} tokens) leave no room for a "
                f"prompt in the {cfg.max_seq_len}-token context of `{ref}`", _span(ev, "max_turns"),
                label=f"{config.max_turns} × {config.max_new_tokens} + {observations} × "
                f"{config.max_observation_tokens} = {episode}",
                secondary=[Label(ev.field_spans.get(("models", i), ev.name_span),
                                 f"context {cfg.max_seq_len}")],
                help="lower max_turns, max_new_tokens or max_observation_tokens")
            break


@rule("TNX524", "eval-tool-format-unknown", E,
      "An eval with a `tools(...)` environment, no `tool_format`, and a scored model whose "
      "tokenizer's chat template has no tool support: its tool calls could not be read.",
      bad=_eval(fields="max_turns = 2"), good=_eval())
def eval_tool_format_unknown(p: Pipeline) -> Iterator[Diagnostic]:
    for ev in p.evals:
        env = p.environments.get(ev.config.environment or "")
        if env is None or not isinstance(env.spec, ToolsEnvironment) or ev.config.tool_format:
            continue
        for i, ref in enumerate(ev.config.models):
            if model_supports_tools(p, ref) is False:
                yield diagnostic(
                    "TNX524", f"eval `{ev.name}` runs tools, but the chat template of `{ref}` has "
                    "no tool support", _span(ev, "environment"),
                    label=f"environment `{env.name}` has tools",
                    secondary=[Label(ev.field_spans.get(("models", i), ev.name_span),
                                     "scored model")],
                    help='declare how calls are written: `tool_format = "hermes"`')
                break


@rule("TNX525", "eval-agent-field-without-environment", E,
      "`max_turns`, `max_tool_calls`, `tool_timeout`, `max_observation_tokens` or "
      "`tool_format` on an eval without an `environment`: it would do nothing.",
      bad=_eval(environment=False), good=_eval())
def eval_agent_field_without_environment(p: Pipeline) -> Iterator[Diagnostic]:
    for ev in p.evals:
        if ev.config.environment is not None:
            continue
        for name in _AGENT_FIELDS:
            if name in ev.config.model_fields_set:
                yield diagnostic(
                    "TNX525", f"`{name}` of eval `{ev.name}` has no effect without an "
                    "`environment`", _span(ev, name), label="ignored",
                    help="add `environment = NAME` to score episodes with tools, or remove "
                    "the field")

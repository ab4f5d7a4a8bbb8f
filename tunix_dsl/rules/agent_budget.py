"""TNX528: `max_observation_tokens` leaves no room for an observation inside its framing
(an agent stage's, or an `eval` block's with an environment).

Every observation of an episode is framed by the chat template (the end of the model's turn,
the `tool` or `user` header, the next generation prompt: `data/observation_framing.py`), and
`max_observation_tokens` counts the framing too. With the byte tokenizer every character is
a token, so its framing alone takes 20 of them; a budget at or under that would stop the
run before the first step. Lint sizes it for `bytes()`, whose template needs no files; an
HF tokenizer's framing is a few tokens, checked when the run builds the rollout.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tunix_dsl.check.ir import Pipeline
from tunix_dsl.data.observation_framing import ObservationFraming
from tunix_dsl.data.tokenizers import ByteTokenizer
from tunix_dsl.grammar.diagnostics import Diagnostic, Severity
from tunix_dsl.grammar.spans import Span
from tunix_dsl.rules.agent_checks import _agent, _agent_stages
from tunix_dsl.rules.registry import diagnostic, rule
from tunix_dsl.schemas.agents import ToolsEnvironment
from tunix_dsl.schemas.sources import BytesTokenizer


def _byte_tokenized(p: Pipeline, ref: Any) -> bool:
    """Whether the model `ref` names uses the built-in byte tokenizer."""
    model = p.model_source(ref)
    name = getattr(model.spec, "tokenizer", None) if model is not None else None
    decl = p.tokenizers.get(name) if name is not None else None
    return decl is not None and isinstance(decl.spec, BytesTokenizer)


def framing_tokens(role: str) -> int:
    """Tokens the byte tokenizer's chat template puts around one observation of `role`."""
    tokenizer = ByteTokenizer()
    before, after = ObservationFraming.of(tokenizer, role).ids(tokenizer)
    return len(before) + len(after)


@rule("TNX528", "observation-budget-too-small", Severity.ERROR,
      "An agent stage's (or an eval's with an environment) `max_observation_tokens` is not "
      "more than the tokens the chat "
      "template frames an observation with, so no observation would fit (checked for the "
      "byte tokenizer, 20 tokens).",
      bad=_agent().replace("max_observation_tokens = 32", "max_observation_tokens = 16"),
      good=_agent())
def observation_budget_too_small(p: Pipeline) -> Iterator[Diagnostic]:
    budgets: list[tuple[str, Any, Any, Span]] = [  # (what, config, environment, span)
        (f"stage `{stage.name}`", stage.config, env, stage.span_of("max_observation_tokens"))
        for stage, env in _agent_stages(p)
        if _byte_tokenized(p, getattr(stage.config, "policy", None))]
    for ev in p.evals:
        env = p.environments.get(ev.config.environment or "")
        if env is not None and any(_byte_tokenized(p, ref) for ref in ev.config.models):
            span = ev.field_spans.get(("max_observation_tokens",), ev.field_spans.get(
                ("environment",), ev.name_span))
            budgets.append((f"eval `{ev.name}`", ev.config, env, span))
    for what, config, env, span in budgets:
        framing = framing_tokens("tool" if isinstance(env.spec, ToolsEnvironment) else "user")
        budget = int(config.max_observation_tokens)
        if budget > framing:
            continue
        yield diagnostic(
            "TNX528", f"max_observation_tokens = {budget} of {what} leaves no room for an "
            f"observation: the chat template frames each one with {framing} tokens",
            span, label=f"{framing} of them are framing",
            help=f"raise max_observation_tokens above {framing}, by the longest observation "
            "the model should read (longer ones are cut)")

"""TNX510–529: checks of tools, environments and agentic RL stages.

User files are read with `ast` (`tunix_dsl.schemas.tool_schema`), never imported: lint
stays jax-free and runs no user code. What an episode needs is checked here so a
pipeline that lints clean can roll out: the tool-call format, and the context of
`max_prompt_len + max_turns × max_new_tokens + (max_turns − 1) × max_observation_tokens`
tokens (every model turn, and an observation between two turns).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tunix_dsl.check.ir import Decl, Pipeline, Stage
from tunix_dsl.grammar.diagnostics import Diagnostic, Label, Severity
from tunix_dsl.rules.codes import _with_stage
from tunix_dsl.rules.registry import diagnostic, rule
from tunix_dsl.schemas import ModelRef
from tunix_dsl.schemas.agents import AgentConfig, PythonEnvironment, PythonTool, ToolsEnvironment
from tunix_dsl.schemas.sources import BytesTokenizer, HFModelSource, HFTokenizerSource
from tunix_dsl.schemas.tool_schema import SourceProblem, environment_problems, tool_schema

E = Severity.ERROR
_AGENT_FIELDS = ("max_turns", "max_tool_calls", "tool_timeout", "max_observation_tokens",
                 "tool_format")


def _agent(tool: str = "examples/agent_tools.py:calculate",
           fields: str = 'tool_format = "hermes"\nmax_turns = 2',
           env: str = "tools([calc], reward = ok)") -> str:
    """An example: a grpo stage answering with a calculator tool."""
    extra = (f'reward ok = exact_match()\ntool calc = python("{tool}")\n'
             f"environment math = {env}\n")
    body = ("policy = tiny\ndata = sums\nenvironment = math\nsteps = 10\nbatch_size = 16\n"
            "generations = 4\nmax_prompt_len = 32\nmax_new_tokens = 24\n"
            "max_observation_tokens = 32\n" + fields)
    return _with_stage(body, kind="grpo", extra=extra)


def _agent_stages(p: Pipeline) -> Iterator[tuple[Stage, Decl[Any]]]:
    for stage in p.stages:
        name = getattr(stage.config, "environment", None)
        if name is not None and name in p.environments:
            yield stage, p.environments[name]


def _source_problem(p: Pipeline, decl: Decl[Any]) -> SourceProblem | None:
    spec = decl.spec
    try:
        if isinstance(spec, PythonTool):
            tool_schema(p.resolve_path(spec.file), spec.name)
        elif isinstance(spec, PythonEnvironment):
            environment_problems(p.resolve_path(spec.file), spec.name)
    except SourceProblem as problem:
        return problem
    return None


def _sources(p: Pipeline) -> Iterator[tuple[Decl[Any], SourceProblem]]:
    decls: list[Decl[Any]] = [*p.tools.values(), *p.environments.values()]
    for decl in decls:
        problem = _source_problem(p, decl)
        if problem is not None:
            yield decl, problem


def _report(p: Pipeline, code: str) -> Iterator[Diagnostic]:
    for decl, problem in _sources(p):
        if problem.code == code:
            yield diagnostic(code, f"{decl.keyword} `{decl.name}`: {problem}",
                             decl.field_spans.get(("target",), decl.name_span),
                             label="read without running it", help=problem.help)


@rule("TNX510", "tool-file-not-found", E,
      "A tool's or environment's Python file does not exist (paths are relative to the "
      ".tnx file).",
      bad=_agent(tool="examples/no_such_tools.py:calculate"), good=_agent())
def tool_file_not_found(p: Pipeline) -> Iterator[Diagnostic]:
    yield from _report(p, "TNX510")


@rule("TNX511", "tool-file-unreadable", E,
      "A tool's or environment's Python file cannot be parsed (a syntax error); lint reads "
      "it with `ast` and never runs it.",
      bad=_agent(tool="tests/agent_files/syntax_error.py:broken"), good=_agent())
def tool_file_unreadable(p: Pipeline) -> Iterator[Diagnostic]:
    yield from _report(p, "TNX511")


@rule("TNX512", "tool-not-defined", E,
      "The file of a tool (or environment) defines no top-level function (or class) of that "
      "name.",
      bad=_agent(tool="examples/agent_tools.py:calculator"), good=_agent())
def tool_not_defined(p: Pipeline) -> Iterator[Diagnostic]:
    yield from _report(p, "TNX512")


@rule("TNX513", "tool-not-describable", E,
      "A tool that takes `*args`/`**kwargs` (its JSON schema needs named arguments), or an "
      "environment class without `reset` and `step` methods.",
      bad=_agent(tool="tests/agent_files/bad_tools.py:total"), good=_agent())
def tool_not_describable(p: Pipeline) -> Iterator[Diagnostic]:
    yield from _report(p, "TNX513")


def template_supports_tools(p: Pipeline, stage: Stage) -> bool | None:
    """Whether the policy tokenizer's chat template renders tools; None when unknown."""
    config: Any = stage.config  # a grpo/ppo config
    return model_supports_tools(p, config.policy)


def model_supports_tools(p: Pipeline, ref: ModelRef) -> bool | None:
    """Whether the chat template of a model's tokenizer renders tools; None when unknown."""
    model = p.model_source(ref)
    if model is None:
        return None
    spec: Any
    if model.spec.tokenizer is None:
        spec = HFTokenizerSource(path=model.spec.path) if isinstance(model.spec, HFModelSource) else None
    else:
        tok = p.tokenizers.get(model.spec.tokenizer)
        spec = tok.spec if tok is not None else None
    if isinstance(spec, BytesTokenizer):
        return False  # "role: content" lines: no tool calls
    if not isinstance(spec, HFTokenizerSource):
        return None
    try:
        config = json.loads((p.resolve_path(spec.path) / "tokenizer_config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None  # a missing or broken tokenizer is reported by the tokenizer's own checks
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):  # named templates: the "tool_use" one, or any
        template = " ".join(str(t.get("template", "")) for t in template if isinstance(t, dict))
    return isinstance(template, str) and "tools" in template


@rule("TNX514", "tool-format-unknown", E,
      "A stage with a `tools(...)` environment whose tokenizer's chat template has no tool "
      "support and no `tool_format`: the rollout could not tell a tool call from an answer.",
      bad=_agent(fields="max_turns = 2"), good=_agent())
def tool_format_unknown(p: Pipeline) -> Iterator[Diagnostic]:
    for stage, env in _agent_stages(p):
        config: Any = stage.config
        if not isinstance(env.spec, ToolsEnvironment) or config.tool_format is not None:
            continue
        if template_supports_tools(p, stage) is False:
            yield diagnostic(
                "TNX514", f"stage `{stage.name}` calls tools, but its tokenizer's chat template "
                "has no tool support", stage.span_of("environment"),
                label=f"environment `{env.name}` has tools",
                help='declare how calls are written: `tool_format = "hermes"`')


def episode_tokens(config: AgentConfig, max_new_tokens: int, opening: bool = False) -> int:
    """Tokens after the prompt of the longest episode: every turn, observations between (and
    before the first turn, for a `python(...)` environment's `reset` observation)."""
    turns = config.max_turns
    return turns * max_new_tokens + (turns - 1 + opening) * config.max_observation_tokens


@rule("TNX515", "episode-exceeds-context", E,
      "An agentic stage whose longest episode (max_prompt_len + max_turns × max_new_tokens + "
      "(max_turns − 1) × max_observation_tokens, one observation more with a python "
      "environment's opening) does not fit the policy's context.",
      bad=_agent(fields='tool_format = "hermes"\nmax_turns = 4'),
      good=_agent(fields='tool_format = "hermes"\nmax_turns = 2'))
def episode_exceeds_context(p: Pipeline) -> Iterator[Diagnostic]:
    for stage, env in _agent_stages(p):
        config: Any = stage.config
        cfg = p.model_config(config.policy)
        if cfg is None:
            continue
        opening = isinstance(env.spec, PythonEnvironment)
        episode = episode_tokens(config, config.max_new_tokens, opening)
        total = config.max_prompt_len + episode
        if total > cfg.max_seq_len:
            room = cfg.max_seq_len - config.max_prompt_len
            per_turn = config.max_new_tokens + config.max_observation_tokens
            fits = max((room + (not opening) * config.max_observation_tokens) // per_turn, 0)
            observations = config.max_turns - 1 + opening
            yield diagnostic(
                "TNX515", f"episodes of stage `{stage.name}` ({total} tokens) exceed the context "
                f"of `{config.policy}` ({cfg.max_seq_len})", stage.span_of("max_turns"),
                label=f"{config.max_prompt_len} + {config.max_turns} × {config.max_new_tokens} "
                f"+ {observations} × {config.max_observation_tokens} = {total}",
                secondary=[Label(stage.span_of("policy"), "policy model")],
                help=(f"at most {fits} turns fit; " if fits else "")
                + "lower max_turns, max_new_tokens or max_observation_tokens")


@rule("TNX516", "agent-field-without-environment", E,
      "`max_turns`, `max_tool_calls`, `tool_timeout`, `max_observation_tokens` or "
      "`tool_format` on an RL stage without an `environment`: it would do nothing.",
      bad=_with_stage("policy = tiny\ndata = sums\nrewards = [ok]\nsteps = 10\nbatch_size = 16\n"
                      "generations = 4\nmax_turns = 3", kind="grpo",
                      extra="reward ok = exact_match()\n"),
      good=_agent())
def agent_field_without_environment(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in p.stages:
        config = stage.config
        if not isinstance(config, AgentConfig) or config.environment is not None:
            continue
        for name in _AGENT_FIELDS:
            if name in config.model_fields_set:
                yield diagnostic(
                    "TNX516", f"`{name}` of stage `{stage.name}` has no effect without an "
                    "`environment`", stage.span_of(name), label="ignored",
                    help="add `environment = NAME`, or remove the field")


@rule("TNX517", "tool-name-clash", E,
      "Two tools of one environment whose functions share a name: the model calls a tool by "
      "its function's name, so one of them could never be called.",
      bad=_agent(env="tools([calc, calc2], reward = ok)").replace(
          "environment math", 'tool calc2 = python("examples/agent_tools.py:calculate")\n'
          "environment math"),
      good=_agent())
def tool_name_clash(p: Pipeline) -> Iterator[Diagnostic]:
    for env in p.environments.values():
        if not isinstance(env.spec, ToolsEnvironment):
            continue
        seen: dict[str, tuple[str, int]] = {}
        for i, name in enumerate(env.spec.tools):
            tool = p.tools.get(name)
            if tool is None:
                continue
            function = tool.spec.name
            if function in seen and seen[function][0] != name:
                first, at = seen[function]
                yield diagnostic(
                    "TNX517", f"tools `{first}` and `{name}` of environment `{env.name}` are both "
                    f"called `{function}`", env.field_spans.get(("tools", i), env.name_span),
                    label=f"a second `{function}`",
                    secondary=[Label(env.field_spans.get(("tools", at), env.name_span),
                                     "first here")],
                    help="rename one of the functions")
            elif function in seen:
                yield diagnostic(
                    "TNX517", f"tool `{name}` is listed twice in environment `{env.name}`",
                    env.field_spans.get(("tools", i), env.name_span), label="listed again",
                    help="list each tool once")
            else:
                seen[function] = (name, i)


@rule("TNX518", "environment-reward-columns", E,
      "The reward of a `tools(...)` environment reads a column the stage's dataset lacks.",
      bad=_agent().replace("exact_match()", 'exact_match(field = "solution")'),
      good=_agent())
def environment_reward_columns(p: Pipeline) -> Iterator[Diagnostic]:
    for stage, env in _agent_stages(p):
        if not isinstance(env.spec, ToolsEnvironment):
            continue
        reward = p.rewards.get(env.spec.reward)
        columns = p.dataset_columns(stage.config.data)
        if reward is None or columns is None:
            continue
        for column in reward.spec.columns():
            if column not in columns:
                yield diagnostic(
                    "TNX518", f"reward `{reward.name}` of environment `{env.name}` reads column "
                    f"\"{column}\", which dataset `{stage.config.data}` lacks",
                    stage.span_of("data"), label=f"columns: {', '.join(sorted(columns))}",
                    secondary=[Label(env.field_spans.get(("reward",), env.name_span),
                                     "the environment's reward")],
                    help="score a column the dataset has, or use a dataset with this column")


"""Schemas of agentic RL: tools, environments, and the agent fields of RL stages (jax-free).

    tool calc        = python("tools.py:calculate")          # a plain function
    environment math = tools([calc], reward = correct)       # answer with tools, scored at the end
    environment maze = python("env.py:Maze")                 # reset(row) / step(action)

    stage solve: grpo { ..., environment = math, max_turns = 4, tool_format = "hermes" }

User files are never imported here: the lint rules (`tunix_dsl.rules.agent_checks`) read
them with `ast`, and `tunix_dsl.schemas.tool_schema` derives a tool's JSON schema from its
signature and docstring the same way.
"""

from __future__ import annotations

import typing
from typing import Annotated, Literal

from pydantic import Field, field_validator

from tunix_dsl.schemas.base import Problem, RefKind, RewardInput, Schema

ToolInput = Annotated[str, RefKind("tool")]
EnvironmentInput = Annotated[str, RefKind("environment")]

# Tool-call formats the rollout can parse and render without a tool-aware chat template.
ToolFormat = Literal["hermes"]
TOOL_FORMATS: tuple[str, ...] = typing.get_args(ToolFormat)


def split_target(target: str, what: str) -> str:
    """Validate `"file.py:name"`; the error names the expected shape."""
    file, sep, name = target.rpartition(":")
    if not sep or not file.endswith(".py") or not name.isidentifier():
        raise ValueError(f"expected \"file.py:{what}\", got {target!r}")
    return target


class PythonTarget(Schema):
    """A `"file.py:name"` reference into a user file, relative to the .tnx file."""

    positional = ("target",)
    target: str = Field(description="\"file.py:name\", path relative to the .tnx file")

    @property
    def file(self) -> str:
        return self.target.rpartition(":")[0]

    @property
    def name(self) -> str:
        return self.target.rpartition(":")[2]


class PythonTool(PythonTarget):
    """A plain Python function the model may call; its JSON schema comes from its signature
    (parameter names, annotations, defaults) and docstring (summary and `Args:` lines).
    It returns the observation (any value; not a string: shown as JSON)."""

    call_name = "python"

    @field_validator("target")
    @classmethod
    def _file_and_function(cls, target: str) -> str:
        return split_target(target, "function")


class PythonEnvironment(PythonTarget):
    """A user class: `reset(row) -> observation` starts an episode from a dataset row, and
    `step(action) -> (observation, reward, done)` answers each model turn; the episode's
    reward is the sum of its step rewards."""

    call_name = "python"

    @field_validator("target")
    @classmethod
    def _file_and_class(cls, target: str) -> str:
        return split_target(target, "Class")


class ToolsEnvironment(Schema):
    """The common case: the model may call `tools` until it answers; `reward` scores the
    final answer (its last turn) at the end of the episode."""

    call_name = "tools"
    positional = ("tools",)
    tools: list[ToolInput] = Field(min_length=1, description="tool declarations the model may call")
    reward: RewardInput = Field(description="reward declaration scoring the final answer")
    call_reward: float = Field(
        0.0, ge=0, description="reward per tool call that runs and returns (no error "
        "observation: well-formed, a known tool, arguments it accepts, in time), added to the "
        "episode's reward: shaping that credits using the tools right before the answer is")


EnvironmentSource = PythonEnvironment | ToolsEnvironment


class AgentConfig(Schema):
    """Multi-turn rollout fields of RL stages (grpo, ppo); all inert without `environment`."""

    environment: EnvironmentInput | None = Field(
        None, description="environment declaration: episodes of model turns and observations "
        "(unset: one completion per prompt)")
    max_turns: int = Field(4, gt=0, description="model turns per episode at most")
    max_tool_calls: int = Field(4, ge=0, description="tool calls per episode at most; later "
                                "calls get an error observation")
    tool_timeout: float = Field(10.0, gt=0, description="seconds a tool call may take before "
                                "its observation becomes a timeout error")
    max_observation_tokens: int = Field(64, gt=0, description="tokens of one observation "
                                        "(chat-template framing included); longer ones are cut")
    tool_format: ToolFormat | None = Field(
        None, description="how tool calls are written: \"hermes\" is "
        "<tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call> (unset: the tokenizer's "
        "chat template must support tools)")

    def problems(self) -> list[Problem]:
        found = super().problems()
        if self.environment is None and not getattr(self, "rewards", [None]):
            found.append(Problem(
                "rewards", "an RL stage needs `rewards` or an `environment`", "TNX102",
                "no reward source", "add `rewards = [...]`, or `environment = NAME`"))
        return found

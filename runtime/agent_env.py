"""Environments at run time: what answers a model turn, and the tools they run.

Two kinds, from `tunix_dsl.schemas.agents`:

- `tools([t1, t2], reward = r)` — `ToolsEnv`: a turn with `<tool_call>` blocks gets the
  tools' results as its observation; a turn without one is the answer and ends the
  episode (the reward scores it afterwards, in the RL loop, with the stage's rewards).
- `python("env.py:Class")` — `PythonEnv`: one instance per episode, `reset(row)` gives the
  opening observation, `step(turn text)` gives `(observation, reward, done)`.

Tools run in a thread pool, every call of a turn at once, so the episodes of a batch
wait for their tools together. A call that raises, takes longer than `tool_timeout`,
names an unknown tool, has malformed JSON, or goes past `max_tool_calls` becomes an
error text the model reads as the call's observation: the episode goes on, the run
never stops for it. (A timed-out call's thread is left to finish in the background:
Python cannot kill a thread.)
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunix_dsl.data.row_tools import TOOLS_COLUMN, offered, offered_functions
from tunix_dsl.runtime.tool_calls import ToolCall, observation_text, parse_tool_calls
from tunix_dsl.runtime.user_code import import_user_file
from tunix_dsl.schemas.agents import PythonEnvironment, PythonTool, ToolsEnvironment
from tunix_dsl.schemas.tool_schema import ToolSchema, schema_of, tool_schema


class AgentError(Exception):
    """A tool or environment that cannot be loaded, or an environment that broke its contract;
    the message names it and the fix."""


def load_object(file: str, name: str, base_dir: Path, what: str) -> Any:
    """`name` from the user file `file` (relative to the .tnx file), imported now."""
    module, path = import_user_file(file, base_dir, what, f"tnx_agent_{Path(file).stem}_{name}", AgentError)
    value = getattr(module, name, None)
    if value is None:
        raise AgentError(f"{what}: {path} has no `{name}`")
    return value


@dataclass
class ToolStats:
    """Per tool: calls, calls that ended in an error observation, seconds spent."""

    calls: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float, error: bool) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        self.errors[name] = self.errors.get(name, 0) + int(error)
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, calls in sorted(self.calls.items()):
            out[f"tools/{name}/calls"] = float(calls)
            out[f"tools/{name}/errors"] = float(self.errors[name])
            out[f"tools/{name}/latency_s"] = self.seconds[name] / calls
        return out


class ToolRunner:
    """Runs tool calls in a worker pool with a per-call timeout; results are observation texts."""

    def __init__(self, tools: Mapping[str, Callable[..., Any]], timeout: float, workers: int = 16,
                 clock: Callable[[], float] = time.perf_counter):
        self.tools = dict(tools)
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tnx-tool")
        self.clock = clock
        self.stats = ToolStats()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def run(self, calls: Sequence[ToolCall]) -> list[str]:
        """Every call at once; one observation text per call, in order."""
        return [text for text, _ in self.outcomes(calls)]

    def outcomes(self, calls: Sequence[ToolCall]) -> list[tuple[str, bool]]:
        """Every call at once; (observation text, whether the call ran without error) per call."""
        started: list[tuple[float, Future[Any] | None]] = []
        for call in calls:
            fn = self.tools.get(call.name)
            if call.error is not None or fn is None:
                started.append((0.0, None))
                continue
            started.append((self.clock(), self.pool.submit(fn, **call.arguments)))
        out: list[tuple[str, bool]] = []
        for call, (t0, future) in zip(calls, started, strict=True):
            if future is None:
                out.append((self._refused(call), False))
                continue
            text, error = self._result(call, future, t0)
            self.stats.add(call.name, self.clock() - t0, error)
            out.append((text, not error))
        return out

    def _refused(self, call: ToolCall) -> str:
        if call.error is not None:
            self.stats.add(call.name or "<malformed>", 0.0, True)
            return f"error: {call.error}"
        self.stats.add("<unknown>", 0.0, True)
        known = ", ".join(sorted(self.tools))
        return f"error: there is no tool `{call.name}` (tools: {known})"

    def _result(self, call: ToolCall, future: Future[Any], t0: float) -> tuple[str, bool]:
        left = max(self.timeout - (self.clock() - t0), 0.0)
        try:
            return observation_text(future.result(timeout=left)), False
        except FutureTimeout:
            future.cancel()
            return f"error: `{call.name}` timed out after {self.timeout:g} s", True
        except Exception as err:  # noqa: BLE001 - a tool's failure is the model's observation
            return f"error: `{call.name}` raised {type(err).__name__}: {err}", True


@dataclass
class Reply:
    """An environment's answer to one model turn."""

    observation: str | None  # None: the episode ends here
    reward: float = 0.0
    role: str = "tool"  # the chat role the observation is rendered with
    calls_ok: int = 0  # tool calls of this turn that ran without error


class ToolsEnv:
    """`tools([...], reward = ...)`: answer with tools; the reward scores the final answer."""

    role = "tool"

    def __init__(self, runner: ToolRunner, max_tool_calls: int, call_reward: float = 0.0,
                 schemas: Sequence[Mapping[str, Any]] = ()):
        self.runner = runner
        self.max_tool_calls = max_tool_calls
        self.call_reward = call_reward
        self.schemas = tuple(schemas)  # the chat template's `tools`: rendered into every prompt

    def close(self) -> None:
        self.runner.close()

    def start(self, rows: Sequence[Mapping[str, Any]]) -> list[str | None]:
        self.used = [0] * len(rows)
        # a row's own `tools` column: its episodes may call those alone (data/row_tools.py)
        self.offered = [None if row.get(TOOLS_COLUMN) is None
                        else offered_functions(offered(row, self.schemas)) for row in rows]
        return [None] * len(rows)

    def step(self, episodes: Sequence[int], texts: Sequence[str]) -> list[Reply]:
        """One reply per (episode, turn text); every tool call of the batch runs at once."""
        calls: list[ToolCall] = []
        owners: list[int] = []
        replies: list[Reply] = []
        for i, (episode, text) in enumerate(zip(episodes, texts, strict=True)):
            found = parse_tool_calls(text)
            replies.append(Reply(None if not found else ""))
            for call in found:
                allowed = self.offered[episode]
                if self.used[episode] >= self.max_tool_calls:
                    call = ToolCall(call.name, error=f"the episode used its {self.max_tool_calls} "
                                                     "tool calls; answer now")
                elif call.error is None and allowed is not None and call.name not in allowed:
                    call = ToolCall(call.name, error=f"there is no tool `{call.name}` (tools: "
                                                     f"{', '.join(sorted(allowed))})")
                self.used[episode] += 1
                calls.append(call)
                owners.append(i)
        for owner, (text, ok) in zip(owners, self.runner.outcomes(calls), strict=True):
            reply = replies[owner]
            reply.observation = text if not reply.observation else f"{reply.observation}\n{text}"
            reply.calls_ok += ok
            reply.reward += self.call_reward * ok
        return replies


class PythonEnv:
    """`python("env.py:Class")`: one instance per episode, `reset(row)` then `step(text)`."""

    role = "user"
    schemas: tuple[Mapping[str, Any], ...] = ()  # no tools for the chat template to list

    def __init__(self, cls: Callable[[], Any], name: str):
        self.cls = cls
        self.name = name

    def close(self) -> None:
        """Nothing to release: each episode's instance goes with its episode."""

    def start(self, rows: Sequence[Mapping[str, Any]]) -> list[str | None]:
        self.instances = [self.cls() for _ in rows]
        return [_text(env.reset(dict(row))) for env, row in zip(self.instances, rows, strict=True)]

    def step(self, episodes: Sequence[int], texts: Sequence[str]) -> list[Reply]:
        replies = []
        for episode, text in zip(episodes, texts, strict=True):
            out = self.instances[episode].step(text)
            if not (isinstance(out, tuple) and len(out) == 3):
                raise AgentError(f"environment `{self.name}`: step() must return "
                                        f"(observation, reward, done), got {out!r}")
            observation, reward, done = out
            try:
                value = float(reward)
            except (TypeError, ValueError):
                raise AgentError(f"environment `{self.name}`: step() returned the reward "
                                        f"{reward!r}, not a number") from None
            replies.append(Reply(None if done else _text(observation) or "", value, "user"))
        return replies


def _text(observation: Any) -> str | None:
    return None if observation is None else observation_text(observation)


def tool_json_schema(fn: Callable[..., Any], spec: PythonTool, base_dir: Path) -> dict[str, Any]:
    """The JSON schema a tool-aware chat template lists for `fn`: read from its file as
    `tnx explain` reads it, or, for a function bound by an import there, from the source of
    the function it is bound to. A function without readable source (a builtin) is listed by
    name with its parameters untyped."""
    schema = tool_schema(base_dir / spec.file, spec.name)  # its file parsed and checked by lint
    if schema is None:
        try:
            node = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
        except (OSError, TypeError, SyntaxError, IndexError):
            node = None
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            schema = schema_of(node)
        else:
            names = tuple(inspect.signature(fn).parameters)
            schema = ToolSchema(spec.name, "", {n: {} for n in names}, names)
    # the model calls a tool by the declared function's name, whatever it is bound to
    return dataclasses.replace(schema, name=spec.name).as_json()


def load_tools(names: Sequence[str], tools: Mapping[str, Any], base_dir: Path
               ) -> tuple[dict[str, Callable[..., Any]], list[dict[str, Any]]]:
    """The functions of the `tool` declarations `names`, by function name (how the model calls
    them), and their JSON schemas in declaration order."""
    functions = {}
    schemas = []
    for tool_name in names:
        spec: PythonTool = tools[tool_name]
        fn = load_object(spec.file, spec.name, base_dir, f"tool `{tool_name}`")
        if not callable(fn):
            raise AgentError(f"tool `{tool_name}`: `{spec.name}` is not a function")
        functions[spec.name] = fn  # the model calls a tool by its function's name
        schemas.append(tool_json_schema(fn, spec, base_dir))
    return functions, schemas


def build_environment(env: Any, tools: Mapping[str, Any], base_dir: Path, config: Any,
                      name: str) -> ToolsEnv | PythonEnv:
    """The run-time environment of a validated `environment` declaration."""
    if isinstance(env, ToolsEnvironment):
        functions, schemas = load_tools(env.tools, tools, base_dir)
        # a worker per call a turn can make: a batch's calls wait together, never in waves
        # (threads start lazily, and a waiting tool holds no core)
        workers = max(16, int(config.batch_size) * max(int(config.max_tool_calls), 1))
        runner = ToolRunner(functions, float(config.tool_timeout), workers=workers)
        return ToolsEnv(runner, int(config.max_tool_calls), float(env.call_reward), schemas)
    assert isinstance(env, PythonEnvironment)
    cls = load_object(env.file, env.name, base_dir, f"environment `{name}`")
    return PythonEnv(cls, name)

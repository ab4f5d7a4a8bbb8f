"""Pydantic v2 schemas of everything a `.tnx` file declares (jax-free).

- `sources`: `tokenizer|model|dataset|reward NAME = f(...)` functions (`SOURCES`).
- `training`: optimizers, lora/qlora, distillation strategies, overlong penalty.
- `stages`: one config per stage kind and the `STAGE_KINDS` registry.
- `pipeline`: `pipeline { }` settings, mesh, `eval` and `export`.

`explain_text(name)` renders any of them for `tnx explain`.
"""

from __future__ import annotations

from collections import ChainMap

from tunix_dsl.schemas.base import (
    DatasetInput,
    ModelInput,
    ModelRef,
    RefKind,
    RewardInput,
    Schema,
    TokenizerInput,
)
from tunix_dsl.schemas.explain import explain_schema, type_name
from tunix_dsl.schemas.pipeline import EvalConfig, ExportConfig, Mesh, PipelineSettings
from tunix_dsl.schemas.plugins import (
    OPTIMIZERS_GROUP,
    SOURCE_GROUPS,
    STAGE_KINDS_GROUP,
    load_installed,
    origin_of,
    plugins_table,
    register_builtins,
)
from tunix_dsl.schemas.sources import SOURCES
from tunix_dsl.schemas.stages import STAGE_KINDS, StageKind, TrainingConfig
from tunix_dsl.schemas.training import ADAPTERS, OPTIMIZERS, STRATEGIES, OverlongPenalty

# The built-in kinds and sources register through the plugin loader, like a plugin does.
register_builtins()

# Call families that appear as field values: function name → schema (a live view: an optimizer
# a plugin registers later appears here too).
CALLS: ChainMap[str, type[Schema]] = ChainMap(
    OPTIMIZERS, ADAPTERS, STRATEGIES,
    {OverlongPenalty.call_name: OverlongPenalty, Mesh.call_name: Mesh},
)

# Blocks other than stages: keyword → schema.
BLOCKS: dict[str, type[Schema]] = {
    "pipeline": PipelineSettings,
    "eval": EvalConfig,
    "export": ExportConfig,
}


def _synthetic_tasks_text() -> str:
    from tunix_dsl.data.datasets import SYNTHETIC_TASKS

    lines = ["tasks:"]
    for task in SYNTHETIC_TASKS.values():
        params = ", ".join(f"{k} = {p.default!r}" for k, p in task.params.items())
        lines.append(f"  {task.name}: columns {', '.join(task.columns)}; {params}")
        if task.doc:
            lines.append(f"    {task.doc}")
        # count and seed are documented once, in the fields above.
        lines += [f"    {k}: {p.doc}" for k, p in task.params.items() if k not in ("count", "seed")]
    return "\n".join(lines)


def presets_table() -> str:
    from tunix_dsl.models.presets import presets_table as table

    return table()


def explain_text(name: str) -> str | None:
    """Fields, types, defaults and docs of a stage kind, block or function; None if unknown.

    `file.py:function` shows a tool's JSON schema (raises `tool_schema.SourceProblem` when
    the function cannot be read)."""
    load_installed()  # installed plugins' kinds and sources are explained like built-in ones
    if name == "plugins":
        return plugins_table()
    if name in STAGE_KINDS:
        kind = STAGE_KINDS[name]
        from tunix_dsl.data.datasets import CONSUMERS

        consumer = CONSUMERS[kind.consumer]
        columns = " or ".join("+".join(cols) for cols in consumer.accepted)
        extra = (f"origin: {origin_of(STAGE_KINDS_GROUP, name).describe()}\n"
                 f"trains: `{kind.trained}`; outputs: .model"
                 + (", .adapter (with lora)" if kind.has_adapter else "")
                 + f"\ndata columns: {columns}"
                 + (f"\nmetrics: {', '.join(kind.metrics)}" if kind.metrics else ""))
        return explain_schema(f"stage NAME: {name} {{ ... }}", kind.schema, extra)
    if name in BLOCKS:
        return explain_schema(f"{name} ...", BLOCKS[name])
    for keyword, family in SOURCES.items():
        if name in family:
            extra = {"synthetic": _synthetic_tasks_text, "transformer": presets_table,
                     "hf": presets_table}.get(name, str)()
            group = next((g for g, k in SOURCE_GROUPS.items() if k == keyword), "")
            if group:
                extra = f"origin: {origin_of(group, name).describe()}" + (f"\n{extra}" if extra else "")
            return explain_schema(f"{keyword} NAME = {name}(...)", family[name], extra)
        if name == keyword:
            return f"{keyword} NAME = " + " | ".join(f"{f}(...)" for f in family) + "\n"
    if name in OPTIMIZERS:
        return explain_schema(f"{name}(...)", OPTIMIZERS[name],
                              f"origin: {origin_of(OPTIMIZERS_GROUP, name).describe()}")
    if name in CALLS:
        return explain_schema(f"{name}(...)", CALLS[name])
    if name.endswith(".py") or ".py:" in name:  # a tool: `tnx explain tools.py:calculate`
        from pathlib import Path

        from tunix_dsl.schemas.tool_schema import explain_tool

        return explain_tool(name, Path.cwd())
    if name == "targets":
        from tunix_dsl.schemas.targets import targets_table

        return "tnx plan --target NAME: cpu (this host) or a TPU slice\n\n" + targets_table() + "\n"
    return None


def explainable_names() -> list[str]:
    """Every name `explain_text` knows, for did-you-mean suggestions."""
    load_installed()
    names = [*STAGE_KINDS, *BLOCKS, *SOURCES, *CALLS, "targets", "plugins"]
    for family in SOURCES.values():
        names += list(family)
    return names


__all__ = [
    "ADAPTERS", "BLOCKS", "CALLS", "OPTIMIZERS", "SOURCES", "STAGE_KINDS", "STRATEGIES",
    "DatasetInput", "EvalConfig", "ExportConfig", "Mesh", "ModelInput", "ModelRef",
    "PipelineSettings", "RefKind", "RewardInput", "Schema", "StageKind", "TokenizerInput",
    "TrainingConfig", "explain_text", "explainable_names", "type_name",
]

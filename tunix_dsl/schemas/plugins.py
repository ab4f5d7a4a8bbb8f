"""Plugins: stage kinds, rewards, datasets, models and optimizers from outside the tool.

One loader registers everything. The built-in kinds and sources are entries
(`BUILTIN_ENTRIES`) loaded exactly like a plugin package's entry points
(`[project.entry-points."tunix_dsl.stage_kinds"]` ...) or a pipeline's local
plugin files (`plugins = ["./my_kinds.py"]`): the entry's object is checked
against its group's base and added to the group's registry with its origin.

Discovery reads installed metadata without importing jax: a quick scan of
`sys.path` for `*.dist-info/entry_points.txt` files that mention a
`tunix_dsl.` group, then `importlib.metadata` for those distributions only
(the full `entry_points()` scan costs ~20 ms of `tnx lint`'s start-up).
A plugin's schema module must be jax-free; its lowering is a lazy reference.

A plugin that fails (import error, duplicate name, wrong base class) becomes a
`PluginProblem`, which the checker turns into a located diagnostic naming the
plugin; it never raises.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from tunix_dsl.schemas.base import Schema
from tunix_dsl.schemas.kinds import BUILTIN, Origin, StageKind, import_file, load_reference

GROUP_PREFIX = "tunix_dsl."
STAGE_KINDS_GROUP = "tunix_dsl.stage_kinds"
# entry-point group -> the `SOURCES` keyword its schemas join (None: optimizers / stage kinds)
SOURCE_GROUPS: dict[str, str] = {
    "tunix_dsl.rewards": "reward",
    "tunix_dsl.datasets": "dataset",
    "tunix_dsl.models": "model",
}
OPTIMIZERS_GROUP = "tunix_dsl.optimizers"
GROUPS: tuple[str, ...] = (STAGE_KINDS_GROUP, *SOURCE_GROUPS, OPTIMIZERS_GROUP)

# The built-in registrations, written as entry points: `name = module:attr`.
BUILTIN_ENTRIES: dict[str, tuple[str, ...]] = {
    STAGE_KINDS_GROUP: ("builtin = tunix_dsl.schemas.stages:BUILTIN_KINDS",),
    "tunix_dsl.rewards": ("builtin = tunix_dsl.schemas.sources:BUILTIN_REWARDS",),
    "tunix_dsl.datasets": ("builtin = tunix_dsl.schemas.sources:BUILTIN_DATASETS",),
    "tunix_dsl.models": ("builtin = tunix_dsl.schemas.sources:BUILTIN_MODELS",),
    OPTIMIZERS_GROUP: ("builtin = tunix_dsl.schemas.training:BUILTIN_OPTIMIZERS",),
}

# (group, name) -> where the registered kind / source / optimizer came from
ORIGINS: dict[tuple[str, str], Origin] = {}


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that could not be registered (the checker locates and reports it).

    `names`: the kind/source names the entry was meant to register (where the
    file uses one, the diagnostic points there); `local`: the index of the
    `plugins = [...]` item for a local plugin file.
    """

    code: str
    plugin: str
    message: str
    names: tuple[str, ...] = ()
    local: int | None = None


@dataclass(frozen=True)
class Entry:
    """One entry point: `name = module:attr` in `group`, from `origin`."""

    group: str
    name: str
    value: str
    origin: Origin


# ------------------------------------------------------------------ registration


def _items(obj: object) -> list[object]:
    return list(obj) if isinstance(obj, list | tuple) else [obj]


def _registry_of(group: str) -> dict[str, object]:
    from tunix_dsl.schemas.kinds import STAGE_KINDS
    from tunix_dsl.schemas.sources import SOURCES
    from tunix_dsl.schemas.training import OPTIMIZERS

    if group == STAGE_KINDS_GROUP:
        return STAGE_KINDS  # type: ignore[return-value]
    if group == OPTIMIZERS_GROUP:
        return OPTIMIZERS  # type: ignore[return-value]
    return SOURCES[SOURCE_GROUPS[group]]  # type: ignore[return-value]


def _base_of(group: str) -> type[Schema]:
    from tunix_dsl.schemas.datasets import DatasetSchema
    from tunix_dsl.schemas.sources import ModelSchema, RewardSchema
    from tunix_dsl.schemas.training import OptimizerBase

    return {"tunix_dsl.rewards": RewardSchema, "tunix_dsl.datasets": DatasetSchema,
            "tunix_dsl.models": ModelSchema, OPTIMIZERS_GROUP: OptimizerBase}[group]


def _check_item(group: str, item: object) -> tuple[str, object] | str:
    """(name, registered object) for a valid item, else why it is not one."""
    if group == STAGE_KINDS_GROUP:
        from tunix_dsl.schemas.stages import TrainingConfig

        if not isinstance(item, StageKind):
            return f"expected a `StageKind`, found {type(item).__name__}"
        if not (isinstance(item.schema, type) and issubclass(item.schema, TrainingConfig)):
            return (f"the schema of stage kind `{item.name}` does not derive from "
                    "`tunix_dsl.schemas.stages.TrainingConfig`")
        for name in (item.trained, *item.model_inputs):
            if name not in item.schema.model_fields:
                return f"stage kind `{item.name}` names model field `{name}`, which its schema lacks"
        return item.name, item
    base = _base_of(group)
    if not (isinstance(item, type) and issubclass(item, base)):
        shown = item.__name__ if isinstance(item, type) else type(item).__name__
        return f"`{shown}` does not derive from `{base.__module__}.{base.__name__}`"
    schema = item
    if not schema.call_name:
        return f"`{schema.__name__}` has no `call_name` (the function name used in source)"
    if group == "tunix_dsl.models" and "tokenizer" not in schema.model_fields:
        return f"model source `{schema.call_name}` has no `tokenizer` field"
    return schema.call_name, schema


def _register(group: str, name: str, obj: object, origin: Origin) -> str | None:
    """Add `obj` under `name`; why not when another origin registered the name first."""
    registry = _registry_of(group)
    known = ORIGINS.get((group, name))
    if known is not None and _is_local(known) and known.package not in _local_session:
        known = None  # a local file of an earlier check (another pipeline, an older copy)
    if name in registry and known is not None and known.package != origin.package:
        what = "stage kind" if group == STAGE_KINDS_GROUP else group.rsplit(".", 1)[1][:-1]
        return (f"{what} `{name}` is already registered by {known.describe()}; "
                "rename it in one of the plugins")
    if group == STAGE_KINDS_GROUP:
        assert isinstance(obj, StageKind)
        from tunix_dsl.data.datasets import BUILTIN_CONSUMERS, CONSUMERS

        if obj.layout is not None:
            if obj.layout.name in BUILTIN_CONSUMERS and CONSUMERS[obj.layout.name] != obj.layout:
                return (f"data layout `{obj.layout.name}` is built in; give the kind's own "
                        "layout another name")
            CONSUMERS[obj.layout.name] = obj.layout

        if obj.data not in CONSUMERS:
            return (f"stage kind `{name}` reads data layout `{obj.data}`, which nothing "
                    f"registers (layouts: {', '.join(CONSUMERS)})")
        if obj.origin != origin:
            obj = replace(obj, origin=origin)
    registry[name] = obj
    ORIGINS[(group, name)] = origin
    return None


def load_entry(entry: Entry, plugin_dir: Path | None = None,
               obj: object | None = None) -> list[PluginProblem]:
    """Import an entry's object (unless given) and register what it holds."""
    plugin = entry.origin.describe()
    if obj is None:
        try:
            obj = load_reference(entry.value)
        except Exception as err:  # noqa: BLE001 - a plugin's import may raise anything
            return [PluginProblem("TNX010", plugin, f"plugin {plugin}: importing `{entry.value}` "
                                  f"({entry.group}) failed: {type(err).__name__}: {err}",
                                  (entry.name,))]
    problems = []
    for item in _items(obj):
        checked = _check_item(entry.group, item)
        if isinstance(checked, str):
            problems.append(PluginProblem("TNX012", plugin, f"plugin {plugin} ({entry.group} "
                                          f"`{entry.name}`): {checked}", (entry.name,)))
            continue
        name, registered = checked
        if isinstance(registered, StageKind) and plugin_dir is not None:
            registered = replace(registered, plugin_dir=plugin_dir)
        why = _register(entry.group, name, registered, entry.origin)
        if why is not None:
            problems.append(PluginProblem("TNX011", plugin, f"plugin {plugin}: {why}", (name,)))
    return problems


def register_builtins() -> None:
    """Register the built-in kinds and sources through the plugin path."""
    for group, values in BUILTIN_ENTRIES.items():
        for text in values:
            name, _, value = (part.strip() for part in text.partition("="))
            problems = load_entry(Entry(group, name, value, BUILTIN))
            if problems:  # a broken built-in is a bug in this package, not user input
                raise RuntimeError("; ".join(p.message for p in problems))


# ------------------------------------------------------------------ installed plugins


def _hash_files(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        try:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        except OSError:
            continue
    return digest.hexdigest()[:16]


def _package_hash(module: str) -> str:
    """Content hash of the top-level package (or module) an entry point lives in."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(module.split(".")[0])
    except (ImportError, ValueError):
        return ""
    if spec is None:
        return ""
    if spec.submodule_search_locations:
        return _hash_files(p for d in spec.submodule_search_locations for p in Path(d).rglob("*.py"))
    return _hash_files([Path(spec.origin)]) if spec.origin else ""


def _plugin_distributions() -> list[importlib.metadata.Distribution]:
    """Installed distributions that declare a `tunix_dsl.*` entry point, first on sys.path wins."""
    found: dict[str, importlib.metadata.Distribution] = {}
    for directory in sys.path:
        try:
            listing = list(os.scandir(directory or "."))
        except OSError:
            continue
        for item in listing:
            if not item.name.endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(os.path.join(item.path, "entry_points.txt"), encoding="utf-8") as f:
                    if "[" + GROUP_PREFIX not in f.read():
                        continue
            except OSError:
                continue
            dist = importlib.metadata.PathDistribution(Path(item.path))
            name = dist.metadata["Name"] or item.name
            if name != "tunix-dsl":
                found.setdefault(name, dist)
    return list(found.values())


def installed_entries() -> list[Entry]:
    entries = []
    for dist in _plugin_distributions():
        name, version = dist.metadata["Name"], dist.version
        for ep in dist.entry_points:
            if ep.group in GROUPS:
                origin = Origin(name, version, _package_hash(ep.value.partition(":")[0]),
                                f"{ep.name} = {ep.value}")
                entries.append(Entry(ep.group, ep.name, ep.value, origin))
    return entries


_installed: list[PluginProblem] | None = None


def load_installed() -> list[PluginProblem]:
    """Register every installed plugin once per process; the problems found doing so."""
    global _installed
    if _installed is None:
        _installed = []
        for entry in installed_entries():
            _installed += load_entry(entry)
    return list(_installed)


# ------------------------------------------------------------------ local plugin files

# Local plugin files loaded by the current check: a name one of them registered may be taken
# over by a later check's file, but not by another file of the same check.
_local_session: set[str] = set()


def _is_local(origin: Origin) -> bool:
    return not origin.builtin and not origin.version


def begin_check() -> None:
    """A new pipeline is being checked: local files of earlier checks no longer claim names."""
    _local_session.clear()


# A local plugin file declares what it registers in a module-level dict,
# `TNX_PLUGIN = {"tunix_dsl.stage_kinds": [KIND], "tunix_dsl.rewards": [MyReward]}`.
LOCAL_ATTRIBUTE = "TNX_PLUGIN"


def load_local(path: str, base_dir: Path, index: int) -> list[PluginProblem]:
    """Import a `plugins = [...]` file (schemas only) and register what it declares."""
    file = Path(path) if Path(path).is_absolute() else base_dir / path
    if not file.is_file():
        return [PluginProblem("TNX013", path, f"plugin file `{path}` not found", local=index)]
    origin = Origin(str(file.resolve()), "", _hash_files([file]), path)
    _local_session.add(origin.package)
    shown = f"`{path}`"
    try:
        module = import_file(file)
    except Exception as err:  # noqa: BLE001 - plugin code may raise anything
        return [PluginProblem("TNX010", path, f"plugin {shown}: importing it failed: "
                              f"{type(err).__name__}: {err}", local=index)]
    declared = getattr(module, LOCAL_ATTRIBUTE, None)
    if not isinstance(declared, dict) or not declared:
        return [PluginProblem("TNX012", path, f"plugin {shown} declares no `{LOCAL_ATTRIBUTE}` "
                              f"dict (entry-point group -> objects, groups: {', '.join(GROUPS)})",
                              local=index)]
    problems = []
    for group, obj in declared.items():
        if group not in GROUPS:
            problems.append(PluginProblem("TNX012", path, f"plugin {shown}: unknown group "
                                          f"`{group}` (groups: {', '.join(GROUPS)})", local=index))
            continue
        entry = Entry(group, LOCAL_ATTRIBUTE, f"{path}:{LOCAL_ATTRIBUTE}", origin)
        found = load_entry(entry, file.parent, obj)
        problems += [replace(p, plugin=path, local=index,
                             message=p.message.replace(f"plugin {origin.describe()}",
                                                       f"plugin {shown}"))
                     for p in found]
    return problems


def origin_of(group: str, name: str) -> Origin:
    return ORIGINS.get((group, name), BUILTIN)


def plugins_table() -> str:
    """Every registered kind and source with its origin, for `tnx explain plugins`."""
    load_installed()
    lines = []
    titles = {STAGE_KINDS_GROUP: "stage kinds", "tunix_dsl.rewards": "reward sources",
              "tunix_dsl.datasets": "dataset sources", "tunix_dsl.models": "model sources",
              OPTIMIZERS_GROUP: "optimizers"}
    for group in GROUPS:
        lines.append(f"{titles[group]} ({group}):")
        for name in _registry_of(group):
            lines.append(f"  {name:<20} {origin_of(group, name).describe()}")
    return "\n".join(lines) + "\n"



def load_implementation(group: str, schema: type[Schema]) -> object:
    """The run-time half a plugin source names in `implementation = "module:attr"` (a
    local plugin may write `./file.py:attr`, relative to its own file); LoweringError if
    it is missing or does not import."""
    from tunix_dsl.schemas.kinds import LoweringError

    origin = origin_of(group, schema.call_name)
    reference = getattr(schema, "implementation", "")
    if not reference:
        raise LoweringError(f"`{schema.call_name}(...)` ({origin.describe()}) has no "
                            "`implementation` to run")
    plugin_dir = None if origin.builtin or origin.version else Path(origin.package).parent
    try:
        return load_reference(reference, plugin_dir)
    except LoweringError as err:
        raise LoweringError(f"`{schema.call_name}(...)` ({origin.describe()}): {err}") from None
    except Exception as err:  # noqa: BLE001 - plugin code may raise anything
        raise LoweringError(f"`{schema.call_name}(...)` ({origin.describe()}): importing "
                            f"`{reference}` failed: {type(err).__name__}: {err}") from None

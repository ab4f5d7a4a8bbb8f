"""Stage fingerprints: what a stage's output depends on, hashed.

A stage's fingerprint covers its kind and validated config, the pipeline
settings that change its numbers (seed, precision), the tool version, the
declarations it reads (model, tokenizer and dataset specs; for files, their
path, size and modification time; for user code such as `python("f.py:fn")`
rewards, the file's content) and, recursively, the fingerprints of the
stages whose outputs it consumes. Two runs with equal fingerprints compute
the same output, so the runtime can reuse a finished one (like a build
system's cache key). jax-free.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunix_dsl import __version__
from tunix_dsl.check.ir import Pipeline
from tunix_dsl.schemas.agents import AgentConfig, PythonEnvironment, PythonTool, ToolsEnvironment
from tunix_dsl.schemas.base import ModelRef, Schema
from tunix_dsl.schemas.sources import PythonReward

# Fields that decide how a stage is run, not what it computes: changing them
# must not invalidate a finished output or an interrupted stage's checkpoints.
# `eval_every`/`eval_data` only add held-out metrics beside the training: the weights do not
# depend on them (a cached stage keeps the eval.jsonl it wrote).
OPERATIONAL_FIELDS = frozenset({
    "checkpoint_every", "checkpoint_minutes", "keep_checkpoints", "on_nonfinite",
    "eval_every", "eval_data",
})
OPERATIONAL_DATASETS = frozenset({"eval_data"})  # dataset roles that are operational fields

# Sources that run user code, by schema: the file whose *content* the fingerprint hashes, so that
# editing the function re-runs the stages that call it (a path + mtime would miss a same-second
# edit, and a copy that changes only the mtime would re-run needlessly).
USER_CODE: dict[type, Callable[[Any], str]] = {
    PythonReward: lambda spec: spec.file, PythonTool: lambda spec: spec.file,
    PythonEnvironment: lambda spec: spec.file,
}
# Agent fields of RL stages, left out without an `environment` (where they do nothing), so
# the fingerprints of plain RL stages are the ones they had before agents existed.
AGENT_FIELDS = frozenset(AgentConfig.model_fields)


def _file_identity(path: Path) -> dict[str, Any]:
    """Cheap identity of a file or directory tree: paths, sizes, mtimes (no content read)."""
    if not path.exists():
        return {"path": str(path), "missing": True}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {
        "path": str(path),
        "files": [(str(f.relative_to(path)) if f != path else f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files],
    }


def _code_identity(path: Path) -> dict[str, Any]:
    """A user code file by its content (sha256)."""
    try:
        return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    except OSError:
        return {"path": str(path), "missing": True}


def _resolve(path: str, base_dir: Path) -> Path:
    return Path(path) if Path(path).is_absolute() else base_dir / path


def _spec_identity(spec: Schema, base_dir: Path) -> dict[str, Any]:
    dumped = spec.model_dump(mode="json")
    identity: dict[str, Any] = {"source": type(spec).call_name, "spec": dumped}
    path = dumped.get("path")
    if isinstance(path, str):
        identity["file"] = _file_identity(_resolve(path, base_dir))
    code_file = USER_CODE.get(type(spec))
    if code_file is not None:
        identity["code"] = _code_identity(_resolve(code_file(spec), base_dir))
    origin = _plugin_origin(spec)
    if origin is not None:  # a plugin's version and code hash: a plugin update re-runs its users
        identity["plugin"] = origin
    return identity


def _plugin_origin(spec: Any) -> dict[str, str] | None:
    """The origin of a plugin source or optimizer; None for built-ins (their fingerprints
    stay as they were, and the tool version covers them)."""
    from tunix_dsl.schemas.plugins import OPTIMIZERS_GROUP, ORIGINS, SOURCE_GROUPS

    name = getattr(type(spec), "call_name", "")
    for group in (*SOURCE_GROUPS, OPTIMIZERS_GROUP):
        origin = ORIGINS.get((group, name))
        if origin is not None and not origin.builtin:
            return origin.identity()
    return None


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_fingerprints(pipeline: Pipeline) -> dict[str, str]:
    """Fingerprint of every stage of a checked pipeline, by stage name."""
    base_dir = Path(pipeline.base_dir)
    settings = {"seed": pipeline.settings.seed, "precision": pipeline.settings.precision}
    if pipeline.settings.param_dtype != "float32":  # default left out: older fingerprints hold
        settings["param_dtype"] = pipeline.settings.param_dtype
    out: dict[str, str] = {}

    def model_identity(ref: ModelRef) -> dict[str, Any]:
        if ref.kind == "stage":
            return {"stage": ref.name, "output": ref.output, "fingerprint": out[ref.name]}
        decl = pipeline.models[ref.name]
        identity = {"model": ref.name, **_spec_identity(decl.spec, base_dir)}
        tokenizer = getattr(decl.spec, "tokenizer", None)
        if tokenizer is not None:
            identity["tokenizer"] = _spec_identity(pipeline.tokenizers[tokenizer].spec, base_dir)
        return identity

    def environment_identity(name: str) -> dict[str, Any]:
        spec = pipeline.environments[name].spec
        identity = _spec_identity(spec, base_dir)
        if isinstance(spec, ToolsEnvironment):
            identity["tools"] = [_spec_identity(pipeline.tools[t].spec, base_dir) for t in spec.tools]
            identity["reward"] = _spec_identity(pipeline.rewards[spec.reward].spec, base_dir)
        return identity

    for stage in pipeline.stages:  # topological order: inputs are fingerprinted first
        environment = getattr(stage.config, "environment", None)
        excluded = set(OPERATIONAL_FIELDS) | (AGENT_FIELDS if environment is None else set())
        tools = getattr(stage.config, "tools", None) or []  # an sft stage's rendered tools
        if not tools:  # unset: fingerprints from before the field are unchanged
            excluded.add("tools")
        payload = {
            "version": __version__,
            "settings": settings,
            "stage": stage.name,
            "kind": stage.kind,
            "config": stage.config.model_dump(mode="json", exclude=excluded),
            "models": {role: model_identity(ref) for role, ref in stage.models.items()},
            "datasets": {
                role: _spec_identity(pipeline.datasets[name].spec, base_dir)
                for role, name in stage.datasets.items() if role not in OPERATIONAL_DATASETS
            },
            "rewards": [_spec_identity(pipeline.rewards[name].spec, base_dir) for name in stage.rewards],
        }
        if not stage.info.origin.builtin:  # a plugin kind: its package version and code hash
            payload["kind_origin"] = stage.info.origin.identity()
        optimizer = _plugin_origin(getattr(stage.config, "optimizer", None))
        if optimizer is not None:
            payload["optimizer_origin"] = optimizer
        if environment is not None:
            payload["environment"] = environment_identity(environment)
        if tools:  # their files' content shapes the schemas the template lists
            payload["tools"] = [_spec_identity(pipeline.tools[t].spec, base_dir) for t in tools]
        out[stage.name] = _digest(payload)
    return out

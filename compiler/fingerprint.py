"""Stage fingerprints: what a stage's output depends on, hashed.

A stage's fingerprint covers its kind and validated config, the pipeline
settings that change its numbers (seed, precision), the tool version, the
declarations it reads (model, tokenizer and dataset specs; for files, their
path, size and modification time) and, recursively, the fingerprints of the
stages whose outputs it consumes. Two runs with equal fingerprints compute
the same output, so the runtime can reuse a finished one (like a build
system's cache key). jax-free.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tunix_dsl import __version__

# Fields that decide how a stage is run, not what it computes: changing them
# must not invalidate a finished output or an interrupted stage's checkpoints.
OPERATIONAL_FIELDS = frozenset(
    {"checkpoint_every", "checkpoint_minutes", "keep_checkpoints", "on_nonfinite"}
)


def _file_identity(path: Path) -> dict[str, Any]:
    """Cheap identity of a file or directory tree: paths, sizes, mtimes (no content read)."""
    if not path.exists():
        return {"path": str(path), "missing": True}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {
        "path": str(path),
        "files": [(str(f.relative_to(path)) if f != path else f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files],
    }


def _spec_identity(spec: Any, base_dir: Path) -> dict[str, Any]:
    dumped = spec.model_dump(mode="json")
    identity: dict[str, Any] = {"source": type(spec).call_name, "spec": dumped}
    path = dumped.get("path")
    if isinstance(path, str):
        resolved = Path(path) if Path(path).is_absolute() else base_dir / path
        identity["file"] = _file_identity(resolved)
    return identity


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_fingerprints(pipeline: Any) -> dict[str, str]:
    """Fingerprint of every stage of a checked pipeline, by stage name."""
    base_dir = Path(pipeline.base_dir)
    settings = {"seed": pipeline.settings.seed, "precision": pipeline.settings.precision}
    out: dict[str, str] = {}

    def model_identity(ref: Any) -> Any:
        if ref.kind == "stage":
            return {"stage": ref.name, "output": ref.output, "fingerprint": out[ref.name]}
        decl = pipeline.models[ref.name]
        identity = {"model": ref.name, **_spec_identity(decl.spec, base_dir)}
        tokenizer = getattr(decl.spec, "tokenizer", None)
        if tokenizer is not None:
            identity["tokenizer"] = _spec_identity(pipeline.tokenizers[tokenizer].spec, base_dir)
        return identity

    for stage in pipeline.stages:  # topological order: inputs are fingerprinted first
        payload = {
            "version": __version__,
            "settings": settings,
            "stage": stage.name,
            "kind": stage.kind,
            "config": stage.config.model_dump(mode="json", exclude=set(OPERATIONAL_FIELDS)),
            "models": {role: model_identity(ref) for role, ref in stage.models.items()},
            "datasets": {
                role: _spec_identity(pipeline.datasets[name].spec, base_dir)
                for role, name in stage.datasets.items()
            },
            "rewards": [_spec_identity(pipeline.rewards[name].spec, base_dir) for name in stage.rewards],
        }
        out[stage.name] = _digest(payload)
    return out

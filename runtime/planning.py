"""Planning a whole pipeline ahead of time (`tnx plan`): no weights, no data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tunix_dsl.compiler.fingerprint import stage_fingerprints
from tunix_dsl.compiler.plan import StagePlan, abstract_stage_models, plan_stage
from tunix_dsl.compiler.stages import LOWERINGS, reference_sharing
from tunix_dsl.compiler.targets import hbm_per_device, target_devices, target_mesh
from tunix_dsl.runtime.resources import Resources
from tunix_dsl.runtime.run_dir import RunDir, derived_seed, stage_statuses, unknown_stages
from tunix_dsl.schemas.stages import STAGE_KINDS
from tunix_dsl.targets import TARGETS, Target


def plan_pipeline(pipeline: Any, devices: int | None = None, target: Target | None = None,
                  mesh_spec: Mapping[str, int] | None = None) -> list[StagePlan]:
    """Plan every stage for `target` (default: this host), on the pipeline's mesh or `mesh_spec`."""
    target = target or TARGETS["cpu"]
    resources = Resources(pipeline)
    placed = target_devices(target, devices)
    if mesh_spec is None:
        mesh_spec = pipeline.settings.mesh.model_dump(include={"data", "fsdp", "tensor"})
    mesh = target_mesh(mesh_spec, placed, target)
    hbm = hbm_per_device(target, len(placed)) if target.is_tpu else 0
    plans = []
    for stage in pipeline.stages:
        if stage.kind not in LOWERINGS:
            raise ValueError(f"stage `{stage.name}`: kind {stage.kind} cannot be planned yet in this build")
        info = STAGE_KINDS[stage.kind]
        config = stage.config
        same_start, shared = reference_sharing(config, info.trained, info.model_inputs)
        cfgs = {}
        for name in info.model_inputs:
            ref = getattr(config, name, None)
            if name == "reference" and same_start:
                ref = None if shared else getattr(config, info.trained)
            if ref is not None:
                cfgs[name] = resources.config_for(ref)
        trained_cfg = cfgs[info.trained]
        seed = config.seed if config.seed is not None else derived_seed(pipeline.settings.seed, stage.name)
        models = abstract_stage_models(
            cfgs, trained=info.trained, adapter=getattr(config, "lora", None),
            shared_reference=shared, seed=seed,
        )
        seq_len = min(config.max_seq_len, trained_cfg.max_seq_len)
        plans.append(plan_stage(stage.name, stage.kind, config, models, info.consumer, seq_len, mesh,
                                hbm_bytes=hbm, target=target.name))
    return plans


def run_statuses(pipeline: Any, run_dir: Path, force: Iterable[str] = ()) -> dict[str, str]:
    """Per stage, what `tnx run` would do in `run_dir`: cached / will run / will resume at step N."""
    unknown = unknown_stages(pipeline, force)
    if unknown:
        raise ValueError(f"--force {unknown[0]}: no such stage; stages: "
                         + ", ".join(s.name for s in pipeline.stages))
    statuses = stage_statuses(pipeline, RunDir(run_dir), stage_fingerprints(pipeline), force)
    return {name: status.describe() for name, status in statuses.items()}

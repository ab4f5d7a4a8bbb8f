"""Planning a whole pipeline ahead of time (`tnx plan`): no weights, no data."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import jax
from jax.sharding import Mesh

from tunix_dsl.check.ir import Pipeline, Stage
from tunix_dsl.compiler.fingerprint import stage_fingerprints
from tunix_dsl.compiler.plan import StagePlan, abstract_stage_models, plan_stage
from tunix_dsl.compiler.rl_step import rl_config
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.compiler.targets import hbm_per_device, target_devices, target_mesh
from tunix_dsl.grammar.diagnostics import Diagnostic
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.rules.run_checks import mesh_batch_diagnostics, mesh_layout_problem
from tunix_dsl.runtime.preflight import PreflightError, Problem, preflight, stage_blockers
from tunix_dsl.runtime.resources import Resources, stage_inputs, stage_seed
from tunix_dsl.runtime.run_dir import (
    RunDir,
    source_conflict,
    stage_statuses,
    unknown_stages,
)
from tunix_dsl.schemas.kinds import LoweringError
from tunix_dsl.schemas.sources import HFModelSource, HFTokenizerSource
from tunix_dsl.schemas.stages import STAGE_KINDS, SequenceConfig
from tunix_dsl.schemas.targets import TARGETS, Target

_DOWNLOAD_CODES = ("TNX372", "TNX373")  # checkpoint / tokenizer directory problems


class MeshDiagnostics(ValueError):
    """The pipeline's batches do not split over the mesh on this many devices: the same
    TNX305 diagnostics `tnx lint` gives a fixed mesh, for the CLI to render."""

    def __init__(self, diagnostics: list[Diagnostic]):
        super().__init__("; ".join(d.message for d in diagnostics))
        self.diagnostics = diagnostics


def device_count(devices: int | None, present: int) -> int:
    """The device count to plan for: `devices` (at least 1, at most `present`) or all."""
    if devices is None:
        return present
    if devices < 1:
        raise ValueError(f"--devices {devices}: expected a device count of at least 1")
    if devices > present:
        raise ValueError(f"--devices {devices}: only {present} device(s) are visible")
    return devices


def check_mesh(pipeline: Pipeline, devices: int, flag: str = "") -> None:
    """Raise a message (bad layout) or `MeshDiagnostics` (TNX305) before any lowering, so a
    mesh that cannot carry the batches never reaches XLA's sharding errors."""
    problem = mesh_layout_problem(pipeline.settings.mesh, devices)
    if problem is not None:
        raise ValueError(f"{flag}{problem}: change `mesh` in the pipeline block or the device count")
    diagnostics = mesh_batch_diagnostics(pipeline, devices)
    if diagnostics:
        raise MeshDiagnostics(diagnostics)


def plan_pipeline(pipeline: Pipeline, devices: int | None = None, target: Target | None = None,
                  mesh_spec: Mapping[str, int] | None = None) -> list[StagePlan]:
    """Plan every stage for `target` (default: this host), on the pipeline's mesh or `mesh_spec`."""
    target = target or TARGETS["cpu"]
    resources = Resources(pipeline)
    if not target.is_tpu:
        device_count(devices, len(jax.devices()))  # the count's own message before any lowering
    placed = target_devices(target, devices)
    if mesh_spec is None:
        if not target.is_tpu:  # a target's mesh is checked by target_diagnostics (TNX381/TNX305)
            check_mesh(pipeline, len(placed), f"--devices {devices}: " if devices is not None else "")
        mesh_spec = pipeline.settings.mesh.axes()
    mesh = target_mesh(mesh_spec, placed, target)
    hbm = hbm_per_device(target, len(placed)) if target.is_tpu else 0
    plans = []
    for stage in pipeline.stages:
        info = STAGE_KINDS[stage.kind]
        try:  # a plugin's lowering may not import: say which stage and plugin
            info.load_lowering()
        except LoweringError as err:
            raise ValueError(f"stage `{stage.name}`: {err}") from None
        if info.program == "rl":  # one row per program: rollout, score, update
            plans.extend(_plan_rl(pipeline, resources, stage, mesh))
            continue
        config = stage.config
        models, trained_cfg = _abstract_models(pipeline, resources, stage)
        assert isinstance(config, SequenceConfig), f"supervised kind {stage.kind} has no max_seq_len"
        seq_len = min(config.max_seq_len, trained_cfg.max_seq_len)
        plans.append(plan_stage(stage.name, stage.kind, config, models, info.consumer, seq_len, mesh,
                                hbm_bytes=hbm, target=target.name))
    return plans


def _abstract_models(pipeline: Pipeline, resources: Resources, stage: Stage) -> tuple[StageModels, ModelConfig]:
    """The stage's models as shapes (and the trained model's config), resolved through the
    same `stage_inputs` / `stage_seed` helpers the executor uses."""
    inputs = stage_inputs(stage)
    cfgs = {role: resources.config_for(ref) for role, ref in inputs.refs.items()}
    if inputs.same_start and not inputs.shared_reference:
        cfgs["reference"] = cfgs[inputs.trained]  # a frozen copy of the starting weights
    models = abstract_stage_models(cfgs, trained=inputs.trained, adapter=stage.adapter,
                                   shared_reference=inputs.shared_reference, seed=stage_seed(pipeline, stage))
    return models, cfgs[inputs.trained]


def _plan_rl(pipeline: Pipeline, resources: Resources, stage: Stage, mesh: Mesh) -> list[StagePlan]:
    from tunix_dsl.compiler.rl_plan import plan_rl_stage

    config = rl_config(stage.config)
    models, _ = _abstract_models(pipeline, resources, stage)
    tokenizer = resources.tokenizer_for(config.policy)
    width, rollout = None, None
    if config.environment is not None:  # an episode: every turn and the observations between
        from functools import partial

        from tunix_dsl.rules.agent_checks import episode_tokens
        from tunix_dsl.runtime.agent_plan import agent_rollout_cost
        from tunix_dsl.runtime.agent_rollout import AgentSettings
        from tunix_dsl.runtime.tool_calls import CALL_CLOSE
        from tunix_dsl.schemas.agents import PythonEnvironment

        opening = isinstance(pipeline.environments[config.environment].spec, PythonEnvironment)
        width = episode_tokens(config, int(config.max_new_tokens), opening)
        settings = AgentSettings(int(config.max_turns), int(config.max_new_tokens),
                                 int(config.max_observation_tokens))
        stops = () if opening else (tuple(tokenizer.encode(CALL_CLOSE)),)  # as AgentRollout stops
        rollout = partial(agent_rollout_cost, settings=settings, prompt_len=int(config.max_prompt_len),
                          opening=opening, stops=stops)
    return plan_rl_stage(stage.name, stage.kind, config, models, mesh,
                         stop_ids=tuple(tokenizer.stop_ids), pad_id=tokenizer.pad_id, episode_width=width,
                         rollout=rollout)


def run_statuses(pipeline: Pipeline, run_dir: Path, force: Iterable[str] = ()) -> dict[str, str]:
    """Per stage, what `tnx run` would do in `run_dir`: cached / will run / will resume at step N."""
    unknown = unknown_stages(pipeline, force)
    if unknown:
        raise ValueError(f"--force {unknown[0]}: no such stage; stages: "
                         + ", ".join(s.name for s in pipeline.stages))
    statuses = stage_statuses(pipeline, RunDir(run_dir), stage_fingerprints(pipeline), force)
    return {name: status.describe() for name, status in statuses.items()}


@dataclass(frozen=True)
class Blocked:
    """`tnx run` would stop at its pre-flight check: per stage "will not run: ..." (cached
    stages stay "cached"), and whether the plan can still be computed (`plannable`)."""

    statuses: dict[str, str]
    plannable: bool


def blocked_statuses(pipeline: Pipeline, run_dir: Path, export_root: Path | None,
                     statuses: dict[str, str], color: bool = False) -> Blocked | None:
    """When `tnx run` would stop at its pre-flight check: the problems on stderr and the
    stages' statuses. None when the run may start."""
    problems = preflight(pipeline, run_dir, export_root)
    conflict = source_conflict(run_dir, pipeline.file)
    if not problems and conflict is None:
        return None
    if problems:
        print(PreflightError(problems, pipeline.sources).render(color), file=sys.stderr)
    if conflict is not None:
        print(f"error: {conflict}", file=sys.stderr)
    reasons = stage_blockers(problems, list(statuses)) if problems else {}
    return Blocked({name: status if status == "cached" else
                    reasons.get(name, "will not run: the run directory belongs to another .tnx file")
                    for name, status in statuses.items()},
                   plannable=conflict is None and only_not_downloaded(pipeline, problems))


def only_not_downloaded(pipeline: Pipeline, problems: list[Problem]) -> bool:
    """Every problem is an `hf(...)` / `hf_tokenizer(...)` directory that does not exist yet,
    and the checker knows every stage model's architecture (`hf(dir, preset = ...)`): the
    plan reads nothing from those directories, so it can be made before the download."""
    absent = {decl.field_spans.get(("path",), decl.name_span)
              for table in (pipeline.models, pipeline.tokenizers) for decl in table.values()
              if isinstance(decl.spec, HFModelSource | HFTokenizerSource)
              and not pipeline.resolve_path(decl.spec.path).exists()}
    if not problems or any(p.diagnostic.code not in _DOWNLOAD_CODES or p.diagnostic.span not in absent
                           for p in problems):
        return False
    return all(pipeline.model_config(ref) is not None
               for stage in pipeline.stages for ref in stage.models.values())

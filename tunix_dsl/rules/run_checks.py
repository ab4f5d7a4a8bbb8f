"""TNX3xx: constraints the compiler and runtime rely on, checked before anything runs.

Each rule here mirrors one place in `compiler/` or `runtime/` that would
otherwise fail after earlier stages trained: the distillation strategy's
shapes, an eval's generation budget, the mesh's batch split. The runtime keeps
only assertions for them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from tunix_dsl.check.ir import Pipeline
from tunix_dsl.data.datasets import MIN_SEQUENCE_TOKENS
from tunix_dsl.grammar.diagnostics import Diagnostic, Label, Severity
from tunix_dsl.rules.codes import _PRELUDE, _with_stage
from tunix_dsl.rules.registry import diagnostic, rule
from tunix_dsl.schemas.pipeline import Mesh
from tunix_dsl.schemas.training import AttentionStrategy, FeatureProjectionStrategy

E = Severity.ERROR
_TEACHER = 'model teacher = transformer(preset = "nano", tokenizer = chars{extra})\n'


def _distill(strategy: str, extra: str = "") -> str:
    return _PRELUDE + _TEACHER.format(extra=extra) + (
        "\nstage shrink: distill {\n  teacher  = teacher\n  student  = tiny\n  data     = sums\n"
        f"  strategy = {strategy}\n  steps    = 10\n}}\n\n"
        'export shrink.model to "out/shrink" as "hf"\n')


@rule("TNX310", "distill-shapes", E,
      "An attention or feature distillation whose teacher and student shapes do not pair up "
      "(head counts that do not divide, a layer index outside either model).",
      bad=_distill("attention(alpha = 0.5)", ", n_heads = 6, n_kv_heads = 2, head_dim = 16"),
      good=_distill("attention(alpha = 0.5)", ", n_heads = 8, n_kv_heads = 2, head_dim = 16"))
def distill_shapes(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in p.stages:
        strategy = getattr(stage.config, "strategy", None)
        if not isinstance(strategy, AttentionStrategy | FeatureProjectionStrategy):
            continue
        teacher, student = stage.models["teacher"], stage.models["student"]
        t_cfg, s_cfg = p.model_config(teacher), p.model_config(student)
        if t_cfg is None or s_cfg is None:
            continue
        if isinstance(strategy, AttentionStrategy) and t_cfg.n_heads % s_cfg.n_heads:
            # teacher maps are mean-pooled into groups of n_teacher / n_student heads
            yield diagnostic(
                "TNX310", f"attention distillation needs the teacher's heads to be a multiple "
                f"of the student's: {t_cfg.n_heads} and {s_cfg.n_heads} in stage `{stage.name}`",
                stage.span_of("strategy"), label="teacher heads pooled onto student heads",
                secondary=[Label(stage.span_of("teacher"), f"{t_cfg.n_heads} heads"),
                           Label(stage.span_of("student"), f"{s_cfg.n_heads} heads")],
                help="pick models whose head counts divide, or use `strategy = logit(...)`")
        if isinstance(strategy, FeatureProjectionStrategy):
            depth = min(t_cfg.n_layers, s_cfg.n_layers)
            if not -depth <= strategy.layer < depth:
                yield diagnostic(
                    "TNX310", f"feature layer {strategy.layer} is outside the models of stage "
                    f"`{stage.name}` ({s_cfg.n_layers} student and {t_cfg.n_layers} teacher "
                    "blocks)", stage.span_of("strategy", "layer"),
                    label=f"valid: {-depth} … {depth - 1}",
                    help="the same index is read from both models' block outputs; -1 is the "
                         "last block")


@rule("TNX311", "eval-context", E,
      "An eval whose `max_new_tokens` leaves a model's context too short for a prompt "
      "(bos and two tokens).",
      bad=_with_stage("model = tiny\ndata = sums\nsteps = 10").replace(
          'export', 'reward ok = exact_match()\n\neval check {\n  models = [tune.model]\n'
          '  data = sums\n  metric = ok\n  max_new_tokens = 127\n}\n\nexport'),
      good=_with_stage("model = tiny\ndata = sums\nsteps = 10").replace(
          'export', 'reward ok = exact_match()\n\neval check {\n  models = [tune.model]\n'
          '  data = sums\n  metric = ok\n  max_new_tokens = 8\n}\n\nexport'))
def eval_context(p: Pipeline) -> Iterator[Diagnostic]:
    for ev in p.evals:
        new = ev.config.max_new_tokens
        for i, ref in enumerate(ev.config.models):
            cfg = p.model_config(ref)
            if cfg is None or cfg.max_seq_len - new >= MIN_SEQUENCE_TOKENS:
                continue
            yield diagnostic(
                "TNX311", f"eval `{ev.name}` generates {new} tokens, which leaves no room for "
                f"a prompt in the {cfg.max_seq_len}-token context of `{ref}`",
                ev.field_spans.get(("max_new_tokens",), ev.name_span),
                label="generated tokens per prompt",
                secondary=[Label(ev.field_spans.get(("models", i), ev.name_span),
                                 f"context {cfg.max_seq_len}")],
                help=f"use max_new_tokens ≤ {max(cfg.max_seq_len - MIN_SEQUENCE_TOKENS, 1)}")
            break


def batch_axes(dcn: int) -> str:
    """How messages name the batch axes: `dcn` joins them only when the mesh has slices."""
    return "dcn × data × fsdp" if dcn > 1 else "data × fsdp"


def batch_shards(mesh: Mesh, devices: int | None = None) -> tuple[int, bool] | None:
    """(dcn × data × fsdp, exact) for `mesh` on `devices`; with a -1 axis and no device count,
    the fixed part of those axes (exact False): any device count splits the batch a multiple
    of it. None: the mesh cannot be laid out on `devices` at all."""
    sizes = mesh.axes()
    free = [axis for axis, size in sizes.items() if size == -1]
    if free and devices is not None:
        fixed = math.prod(size for size in sizes.values() if size != -1)
        if devices % fixed:
            return None
        sizes[free[0]] = devices // fixed
    elif devices is not None and math.prod(sizes.values()) != devices:
        return None
    exact = not free or devices is not None
    return math.prod(max(sizes[a], 1) for a in ("dcn", "data", "fsdp")), exact


def mesh_batch_diagnostics(p: Pipeline, devices: int | None = None) -> list[Diagnostic]:
    """TNX305 / TNX350 for every stage whose batch does not split over the mesh; with `devices`,
    the mesh's -1 axis takes the devices left (what `tnx plan --devices N` and the run see)."""
    mesh = p.settings.mesh
    found = batch_shards(mesh, devices)
    if found is None or found[0] == 1:
        return []
    shards, exact = found
    names = batch_axes(mesh.dcn)
    axes = (f"mesh {names} = {shards}" if exact else
            f"with any device count, mesh {names} is a multiple of {shards}")
    where = f" on {devices} devices" if devices is not None and not _fixed(mesh) else ""
    return batch_split_diagnostics(p, shards, where, axes)


def batch_split_diagnostics(p: Pipeline, shards: int, where: str, axes: str) -> list[Diagnostic]:
    """At every stage whose batch does not split into `shards` batch shards (lint's fixed mesh,
    `--devices`, the run's devices, or the mesh a `--target` resolves): TNX305 for a
    micro-batch, TNX350 for an RL stage's prompts per step (the rollout's leading axis)."""
    found = []
    for stage in p.stages:
        config = stage.config
        if (micro := config.batch_size // config.grad_accum) % shards:
            found.append(diagnostic(
                "TNX305", f"micro-batch {micro} does not split over {shards} batch shards{where}",
                stage.span_of("batch_size"), label=f"batch_size / grad_accum = {micro}",
                help=f"{axes}: make batch_size / grad_accum a multiple of {shards}"))
        generations = getattr(config, "generations", 1)
        if stage.info.program == "rl" and (prompts := config.batch_size // generations) % shards:
            fixed = -(-prompts // shards) * shards
            found.append(diagnostic(
                "TNX350", f"{prompts} prompts per step of stage `{stage.name}` do not split over "
                f"{shards} batch shards{where}", stage.span_of("batch_size"),
                label=f"batch_size / generations = {prompts} prompts",
                help=f"{axes}: use batch_size = {fixed * generations} ({fixed} prompts × {generations})"))
    return found


def _fixed(mesh: Mesh) -> bool:
    return -1 not in mesh.axes().values()


def mesh_layout_problem(mesh: Mesh, devices: int) -> str | None:
    """Why `mesh` cannot be laid out on `devices` devices, or None."""
    sizes = mesh.axes()
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if _fixed(mesh):
        return None if fixed == devices else (
            f"the mesh {sizes} needs {fixed} devices, not {devices}")
    return None if devices % fixed == 0 else (
        f"{devices} devices do not divide by the mesh's fixed axes (product {fixed})")

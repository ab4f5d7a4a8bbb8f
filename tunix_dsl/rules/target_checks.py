"""Checks that need the mesh resolved against a device count, or a target (TNX38x, TNX450,
TNX236–237).

TNX305 (batch vs mesh) is lint's code; here it is given for the mesh a target resolves.

`tnx plan --target NAME` runs `target_diagnostics` before compiling: the mesh
must use exactly the target's devices, and every stage's micro-batch must
split over the resolved dcn × data × fsdp axes (the global batch is cut into one
slice per batch shard, so across hosts it also divides by the process count).
On a multi-slice target (`tpu-v5e-16x2`) the mesh's `dcn` axis must be the
slice count, and a single-slice target takes no `dcn` (TNX236, TNX237).
Tensor-axis replication is also a lint rule whenever the mesh block fixes
`tensor`: today `compiler/sharding.py` silently replicates a dimension the
tensor axis does not divide, which costs memory on every device.

jax-free: sizes come from `ModelConfig`, devices from `tunix_dsl.schemas.targets`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

from tunix_dsl.check.ir import Pipeline
from tunix_dsl.grammar.diagnostics import Diagnostic, Severity
from tunix_dsl.grammar.spans import Span
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.rules.codes import _with_stage
from tunix_dsl.rules.registry import declare, diagnostic, rule
from tunix_dsl.rules.run_checks import batch_axes, batch_split_diagnostics
from tunix_dsl.schemas.targets import Target

E, W = Severity.ERROR, Severity.WARNING
MESH_AXES = ("dcn", "data", "fsdp", "tensor")
_ON_V5E_8 = "# tnx plan example.tnx --target tpu-v5e-8\n"
_BIG = _with_stage("model = big\ndata = sums\nsteps = 10\nbatch_size = 16\nmax_seq_len = 512",
                   extra='model big = transformer(preset = "llama3.1-8b", tokenizer = chars)\n'
                   ).replace('model tiny = transformer(preset = "pico", tokenizer = chars)\n', "")


def _on_v5e_8(mesh: str, body: str = _BIG) -> str:
    return f"{_ON_V5E_8}pipeline demo {{\n  precision = \"bfloat16\"\n  mesh = {{ {mesh} }}\n}}\n\n{body}"


_QWEN = _with_stage("model = tiny\ndata = sums\nsteps = 10\nbatch_size = 8").replace(
    'preset = "pico"', 'preset = "qwen3-0.6b"')

declare("TNX380", "stage-does-not-fit", E,
        "A stage whose step needs more memory per device than the target has "
        "(`tnx plan --target`).",
        bad=_on_v5e_8("data = -1"),
        good=_on_v5e_8("data = 1, fsdp = -1",
                       _BIG.replace("max_seq_len = 512", "max_seq_len = 512\n  lora = lora(rank = 16)")),
        owner="plan")
declare("TNX381", "mesh-vs-target", E,
        "A mesh block whose sizes do not use exactly the target's devices (`tnx plan --target`).",
        bad=_on_v5e_8("data = 2, fsdp = 2"), good=_on_v5e_8("data = 2, fsdp = -1"), owner="plan")

_ON_V5E_8X2 = "# tnx plan example.tnx --target tpu-v5e-8x2\n"
_SMALL = _with_stage("model = tiny\ndata = sums\nsteps = 10\nbatch_size = 16")


def _mesh_file(header: str, mesh: str) -> str:
    return f"{header}pipeline demo {{\n  mesh = {{ {mesh} }}\n}}\n\n{_SMALL}"


declare("TNX236", "dcn-on-one-slice", E,
        "A mesh with `dcn` above 1 planned for a single-slice target: `dcn` spans slices "
        "joined over the data-center network (`tnx plan --target`).",
        bad=_mesh_file(_ON_V5E_8, "dcn = 2, data = -1"),
        good=_mesh_file(_ON_V5E_8X2, "dcn = 2, data = -1"), owner="plan")
declare("TNX237", "dcn-vs-slices", E,
        "A multi-slice target whose slice count differs from the mesh's `dcn` axis "
        "(`tnx plan --target`).",
        bad=_mesh_file(_ON_V5E_8X2, "data = -1"),
        good=_mesh_file(_ON_V5E_8X2, "dcn = 2, data = -1"), owner="plan")


def dcn_diagnostics(p: Pipeline, target: Target, dcn: int, overridden: bool) -> list[Diagnostic]:
    """TNX236/237: the mesh's `dcn` against the target's slices (the hybrid mesh puts exactly
    one slice at each `dcn` index, the other axes inside the slice)."""
    if not target.is_tpu or dcn == target.slices:
        return []
    span = p.settings_spans.get(("mesh", "dcn")) or p.settings_spans.get(("mesh",)) \
        or pipeline_span(p)
    where = "--mesh" if overridden else "the mesh block"
    if target.slices == 1:
        return [diagnostic(
            "TNX236", f"dcn = {dcn} in {where}, but {target.name} is one slice", span,
            label="slices over the data-center network",
            help=f"plan {dcn} slices with `--target {target.name}x{dcn}`, or move the "
                 f"{dcn} onto `data` (one slice has no DCN axis)")]
    return [diagnostic(
        "TNX237", f"{target.name} has {target.slices} slices, but {where} has dcn = {dcn}",
        span, label=f"must be {target.slices}: one slice per dcn index",
        help=f"write `dcn = {target.slices}` in the mesh block (slices are data-parallel "
             f"replicas; the other axes split each slice's {target.chips} chips)")]


def pipeline_span(p: Pipeline) -> Span:
    """Where the `pipeline` block is named (the mesh lives there); else the first stage."""
    for attrs in p.dataflow.nodes.values():
        if attrs.get("kind") == "pipeline":
            return attrs["span"]
    return p.stages[0].name_span


def resolve_mesh(spec: Mapping[str, int], devices: int) -> dict[str, int] | str:
    """The mesh sizes on `devices` devices, or why they cannot be resolved."""
    sizes = {a: int(spec.get(a, 1)) for a in MESH_AXES}
    fixed = math.prod(s for s in sizes.values() if s != -1)
    free = [a for a, s in sizes.items() if s == -1]
    if free:
        if devices % fixed:
            return f"the fixed axes use {fixed} devices, which does not divide {devices}"
        sizes[free[0]] = devices // fixed
    elif fixed != devices:
        return f"the mesh uses {fixed} devices but the target has {devices}"
    return sizes


def target_diagnostics(p: Pipeline, target: Target, devices: int,
                       mesh: Mapping[str, int] | None = None) -> list[Diagnostic]:
    """Mesh vs the target's devices, then batches and tensor splits on the resolved mesh."""
    spec = dict(mesh) if mesh is not None else p.settings.mesh.axes()
    slices = dcn_diagnostics(p, target, int(spec.get("dcn", 1)), mesh is not None)
    if slices:  # before the device count: a wrong dcn is the cause, not its symptom
        return slices
    written = ", ".join(f"{a} = {spec.get(a, 1)}" for a in MESH_AXES
                        if a != "dcn" or spec.get(a, 1) != 1)
    sizes = resolve_mesh(spec, devices)
    if isinstance(sizes, str):
        return [diagnostic(
            "TNX381", f"mesh {{ {written} }} does not fit {target.name} ({devices} devices)",
            pipeline_span(p), label=sizes,
            help=f"let one axis take the rest, e.g. `mesh = {{ data = -1 }}`, or sizes whose "
                 f"product is {devices}")]
    shards = sizes["dcn"] * sizes["data"] * sizes["fsdp"]
    found = batch_split_diagnostics(  # lint's TNX305, on the mesh the target resolves
        p, shards, f" on {target.name}",
        f"on {target.name}, {batch_axes(sizes['dcn'])} = {shards} (or move devices to `tensor`)")
    found += tensor_replication(p, sizes["tensor"])
    return found


def replicated_dims(cfg: ModelConfig, tensor: int) -> dict[str, tuple[int, int]]:
    """Logical axis → (its width, parameters that carry it) for axes `tensor` does not divide.

    Heads are split as heads × head_dim columns, so a width that divides is split even
    when the head count does not (GSPMD handles the cut head)."""
    hd, d, layers = cfg.head_dim, cfg.d_model, cfg.n_layers
    carriers = {  # the dimension compiler/sharding.py splits, as it splits it
        "heads": (cfg.n_heads * hd, layers * 2 * d * cfg.n_heads * hd),
        "kv_heads": (cfg.n_kv_heads * hd, layers * 2 * d * cfg.n_kv_heads * hd),
        "mlp": (cfg.mlp_dim, layers * 3 * d * cfg.mlp_dim),
        "vocab": (cfg.vocab_size, cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)),
    }
    return {axis: v for axis, v in carriers.items() if v[0] % tensor}


def tensor_replication(p: Pipeline, tensor: int) -> Iterator[Diagnostic]:
    if tensor <= 1:
        return
    seen: set[str] = set()
    for stage in p.stages:
        for field, ref in stage.models.items():
            cfg = p.model_config(ref)
            key = f"{p.root(ref).name}"
            if cfg is None or key in seen:
                continue
            seen.add(key)
            dims = replicated_dims(cfg, tensor)
            if not dims:
                continue
            width = {"float32": 4}.get(cfg.dtype, 2)
            extra = sum(n for _, n in dims.values()) * width * (tensor - 1) // tensor
            names = ", ".join(f"{axis} ({size})" for axis, (size, _) in dims.items())
            yield diagnostic(
                "TNX450", f"tensor axis {tensor} does not divide {names} of model `{key}`: "
                f"those weights are replicated", stage.span_of(field),
                label=f"+{extra / 2**20:,.0f} MiB of {cfg.dtype} weights per device "
                      f"(and as much again per gradient and optimizer moment)",
                help=f"use a tensor size that divides {names}, or put those devices on "
                     f"`fsdp` instead")


@rule("TNX450", "tensor-replicates", W,
      "A tensor axis that does not divide a model's heads, kv-heads, MLP width or vocabulary: "
      "those weights are replicated on every device instead of split.",
      bad="pipeline demo {\n  mesh = { data = 1, tensor = 3 }\n}\n\n" + _QWEN,
      good="pipeline demo {\n  mesh = { data = 1, tensor = 4 }\n}\n\n" + _QWEN)
def tensor_replicates(p: Pipeline) -> Iterator[Diagnostic]:
    tensor = p.settings.mesh.tensor
    if tensor > 1:  # -1 is resolved only against devices: `tnx plan` checks that case
        yield from tensor_replication(p, tensor)

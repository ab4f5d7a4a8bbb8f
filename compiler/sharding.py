"""Meshes and shardings.

The pipeline's `mesh` block names the sizes of four axes — `dcn`, `data`,
`fsdp`, `tensor` — with `-1` meaning "every device left". `dcn` is the
outermost, data-parallel axis across TPU slices (multi-slice: slices talk
over the data-center network, far slower than the chips' ICI links), so
only the once-per-step gradient reduction crosses it. Model parameters carry
*logical* axis names (`vocab`, `embed`, `heads`, `kv_heads`, `head_dim`,
`mlp`, and `layers`, the leading axis of stacked blocks); `LOGICAL_RULES` maps those to mesh axes. A dimension that does not
divide evenly by its mesh axes is replicated instead (tiny models on many
devices), so a rule never turns into a runtime error.

Batches shard their leading (example) axis over (`dcn`, `data`, `fsdp`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES: tuple[str, ...] = ("dcn", "data", "fsdp", "tensor")
BATCH_AXES: tuple[str, ...] = ("dcn", "data", "fsdp")

# logical parameter axis -> mesh axes it is split over (None: replicated).
LOGICAL_RULES: dict[str, tuple[str, ...] | None] = {
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": None,
    "mlp": ("tensor",),
    "layers": None,  # the stacked layer axis (models.layer_stack): each device holds every layer
}


def mesh_shape(spec: Mapping[str, int], n_devices: int) -> dict[str, int]:
    """Resolve a mesh block (`{data = -1, tensor = 2}`) against `n_devices`.

    Axes not named get size 1; at most one axis may be -1 and takes what is
    left. The product must equal the device count.
    """
    sizes = {axis: int(spec.get(axis, 1)) for axis in MESH_AXES}
    unknown = set(spec) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected {list(MESH_AXES)}")
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ValueError(f"only one mesh axis may be -1, got {free}")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if n_devices % fixed:
            raise ValueError(f"{n_devices} devices do not divide by the fixed mesh axes ({fixed})")
        sizes[free[0]] = n_devices // fixed
    if math.prod(sizes.values()) != n_devices:
        raise ValueError(
            f"mesh {sizes} needs {math.prod(sizes.values())} devices, but {n_devices} are present"
        )
    return sizes


def slice_count(devices: Sequence[Any]) -> int:
    """How many TPU slices `devices` span (devices without `slice_index` form one)."""
    return len({getattr(d, "slice_index", 0) for d in devices})


def hybrid_grid(sizes: Mapping[str, int], devices: Sequence[Any]) -> np.ndarray:
    """Devices of several slices as a grid over MESH_AXES: `dcn` across slices, the other
    axes inside each slice laid out along its ICI (`create_hybrid_device_mesh`)."""
    from jax.experimental import mesh_utils

    slices = slice_count(devices)
    if sizes["dcn"] != slices:
        raise ValueError(f"mesh dcn = {sizes['dcn']}, but the devices span {slices} slices: "
                         f"set `dcn = {slices}` in the pipeline's mesh block")
    inner = tuple(1 if a == "dcn" else sizes[a] for a in MESH_AXES)
    outer = tuple(sizes["dcn"] if a == "dcn" else 1 for a in MESH_AXES)
    return mesh_utils.create_hybrid_device_mesh(inner, outer, list(devices),
                                                allow_split_physical_axes=True)


def make_mesh(spec: Mapping[str, int], devices: Sequence[Any] | None = None) -> Mesh:
    """The mesh over `devices`, in their order; by default over every device of every process,
    laid out by `jax.make_mesh` after the physical topology (host-local neighbours on TPU).
    Devices of several slices get the hybrid ICI × DCN layout, `dcn` across slices."""
    present = list(jax.devices()) if devices is None else list(devices)
    sizes = mesh_shape(spec, len(present))
    if slice_count(present) > 1:
        return Mesh(hybrid_grid(sizes, present), MESH_AXES)
    if devices is None:
        return jax.make_mesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES,
                             axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))
    grid = np.asarray(present).reshape(tuple(sizes[a] for a in MESH_AXES))
    return Mesh(grid, MESH_AXES)


def batch_parallelism(mesh: Mesh) -> int:
    """How many ways a batch's example axis is split."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def logical_axes_of(variable: nnx.Variable) -> tuple[str | None, ...] | None:
    """The logical axis names a model attached to a parameter, if any."""
    meta = variable.get_metadata()
    for key in ("logical_axes", "sharding_names", "out_sharding", "sharding"):
        names = meta.get(key)
        if names is not None:
            return tuple(names)
    return None


def spec_for(shape: Sequence[int], logical: Sequence[str | None] | None, mesh: Mesh) -> PartitionSpec:
    """Map logical axis names to a PartitionSpec, replicating what doesn't divide."""
    if logical is None:
        return PartitionSpec()
    used: set[str] = set()
    parts: list[tuple[str, ...] | None] = []
    for dim, name in zip(shape, logical, strict=False):
        axes = LOGICAL_RULES.get(name) if name else None
        axes = tuple(a for a in (axes or ()) if a not in used and mesh.shape[a] > 1)
        if axes and dim % math.prod(mesh.shape[a] for a in axes) == 0:
            parts.append(axes if len(axes) > 1 else axes[0])  # type: ignore[arg-type]
            used.update(axes)
        else:
            parts.append(None)
    return PartitionSpec(*parts)


def state_shardings(state: nnx.State, mesh: Mesh) -> nnx.State:
    """A NamedSharding for every leaf of an nnx State (abstract or concrete)."""

    def one(variable: nnx.Variable) -> nnx.Variable:
        value = variable.get_value() if hasattr(variable, "get_value") else variable.value
        spec = spec_for(value.shape, logical_axes_of(variable), mesh)
        return variable.replace(NamedSharding(mesh, spec))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, ndim: int, leading: int = 0) -> NamedSharding:
    """Shard axis `leading` of a batch array over (dcn, data, fsdp), the rest replicated."""
    parts: list[Any] = [None] * ndim
    parts[leading] = BATCH_AXES
    return NamedSharding(mesh, PartitionSpec(*parts))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def place(host: Mapping[str, np.ndarray], shardings: Mapping[str, NamedSharding]) -> dict[str, jax.Array]:
    """Global arrays from host values that every process holds in full (RL batches, eval prompts).

    One process: `device_put`. Several: each process fills only the shards its own
    devices hold, from its (identical) copy, so no process sends data to another's
    devices; the callers make sure the copies agree (same data order, rewards
    checked with `runtime.distributed.agree`).
    """
    if jax.process_count() == 1:
        return jax.device_put(dict(host), dict(shardings))

    def global_array(value: np.ndarray, where: NamedSharding) -> jax.Array:
        whole = np.asarray(value)

        def shard(index: Any) -> np.ndarray:
            return whole[index]

        return jax.make_array_from_callback(whole.shape, where, shard)

    return {name: global_array(value, shardings[name]) for name, value in host.items()}


def parameter_sharding_fn(mesh: Mesh):
    """`fn(path, shape, logical_axes) -> NamedSharding`, for loaders that place tensor by tensor."""

    def place(_path: str, shape: Sequence[int], logical: Sequence[str | None] | None) -> NamedSharding:
        return NamedSharding(mesh, spec_for(shape, logical, mesh))

    return place

"""Devices to compile for: this host's, or a TPU slice described without the hardware.

With `libtpu` installed, `jax.experimental.topologies.get_topology_desc`
describes a TPU slice on any machine; jitting onto a mesh of those
compile-only devices produces the real TPU executable, whose
`memory_analysis()` is what the chips would hold. Nothing runs on them.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from tunix_dsl.compiler import sharding
from tunix_dsl.schemas.targets import Target

INSTALL_HINT = ('install the TPU compiler: pip install "tunix-dsl[tpu]" (or: pip install libtpu); '
                "it compiles for TPU topologies on this machine, no TPU needed")


class TargetUnavailable(RuntimeError):
    """The target's compiler cannot be loaded here (libtpu missing or failing); exit 2."""


@contextmanager
def _native_stderr_captured() -> Iterator[list[str]]:
    """libtpu logs to file descriptor 2 while probing for hardware that a planning host does
    not have; keep that noise out of the plan and hand it back in case of a real failure."""
    captured: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


def libtpu_installed() -> bool:
    return importlib.util.find_spec("libtpu") is not None


def target_devices(target: Target, devices: int | None = None) -> list[Any]:
    """The devices a plan for `target` compiles for (all of the slice, or this host's)."""
    if not target.is_tpu:
        present = jax.devices()
        if devices is not None and devices > len(present):
            raise ValueError(f"--devices {devices}: only {len(present)} device(s) are visible")
        return present[: devices or len(present)]
    if devices is not None:
        raise ValueError(f"--devices applies to --target cpu; {target.name} has its own devices")
    if not libtpu_installed():
        raise TargetUnavailable(f"--target {target.name}: {INSTALL_HINT}")
    from jax.experimental import topologies

    # libtpu takes a machine-wide lock meant for processes that drive the chips; a plan only
    # compiles, so two plans (or a plan beside a TPU job) may share the library.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    with _native_stderr_captured() as log:
        try:
            topology = topologies.get_topology_desc(platform="tpu", topology_name=target.topology,
                                                    num_slices=target.slices)
            error = None
        except Exception as e:  # noqa: BLE001 — any libtpu failure becomes one message
            error = e
    if error is not None:
        raise TargetUnavailable(
            f"--target {target.name}: libtpu could not describe topology {target.topology!r}: "
            f"{error}\n{log[0].strip()}") from None
    return list(topology.devices)


def hbm_per_device(target: Target, n_devices: int) -> int:
    """HBM one compile device owns (v4's topology has one device per TensorCore)."""
    return target.hbm_per_chip * target.all_chips // max(n_devices, 1)


def target_mesh(spec: Mapping[str, int], devices: Sequence[Any], target: Target) -> Mesh:
    """The pipeline's mesh over the target's devices; on a TPU slice laid out along the
    interconnect (`mesh_utils`), so the axes that talk most get the nearest chips; over
    several slices the hybrid ICI × DCN mesh, `dcn` across slices."""
    if not target.is_tpu:
        return sharding.make_mesh(spec, devices)
    from jax.experimental import mesh_utils

    sizes = sharding.mesh_shape(spec, len(devices))
    if target.slices > 1:
        return Mesh(sharding.hybrid_grid(sizes, devices), sharding.MESH_AXES)
    shape = tuple(sizes[a] for a in sharding.MESH_AXES)
    try:
        grid = mesh_utils.create_device_mesh(shape, list(devices))
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices).reshape(shape)  # a shape the ICI cannot map: plain order
    return Mesh(grid, sharding.MESH_AXES)


def parse_mesh(text: str) -> dict[str, int]:
    """`--mesh data=2,fsdp=8` → {"dcn": 1, "data": 2, "fsdp": 8, "tensor": 1}; unnamed axes
    default to 1."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        axis, sep, value = part.partition("=")
        axis = axis.strip()
        if not sep or axis not in sharding.MESH_AXES:
            raise ValueError(f"--mesh {text!r}: expected AXIS=SIZE pairs over "
                             f"{', '.join(sharding.MESH_AXES)}, e.g. data=2,fsdp=8")
        try:
            out[axis] = int(value)
        except ValueError:
            raise ValueError(f"--mesh {text!r}: size of `{axis}` must be an integer") from None
        if out[axis] == 0 or out[axis] < -1:
            raise ValueError(f"--mesh {text!r}: `{axis}` must be a positive size or -1")
        if axis == "dcn" and out[axis] < 1:
            raise ValueError(f"--mesh {text!r}: `dcn` counts slices: a positive size, not -1")
    return {axis: out.get(axis, 1) for axis in sharding.MESH_AXES}

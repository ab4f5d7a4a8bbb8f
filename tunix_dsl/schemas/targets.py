"""Where a pipeline is meant to run: `cpu` (this host) or a TPU slice, by name.

One table, jax-free (lint reads it): each TPU target names the topology XLA
compiles for (`jax.experimental.topologies.get_topology_desc`), its chips and
the HBM of one chip. Names follow Cloud TPU's accelerator types: for v4 and
v5p the number counts TensorCores (two per chip: `tpu-v5p-8` is 4 chips), for
v5e and v6e it counts chips (`tpu-v5e-16` is 16 chips).

HBM per chip (Cloud TPU documentation): v4 32 GiB, v5e 16 GiB, v5p 95 GiB,
v6e 32 GiB.

Multi-slice: `tpu-v5e-16x2` is two `tpu-v5e-16` slices joined over the
data-center network (DCN), as Cloud TPU Multislice provisions them (one
accelerator type, `--num-slices 2`). XLA compiles for all of them at once; the
pipeline's mesh then needs `dcn` equal to the slice count (TNX236).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace

GIB = 2**30


@dataclass(frozen=True)
class Target:
    name: str  # "tpu-v5e-16"
    generation: str  # "v5e"
    topology: str  # XLA topology name, "v5e:4x4"
    chips: int  # of one slice
    hbm_per_chip: int  # bytes
    slices: int = 1  # slices joined over DCN (`tpu-v5e-16x2`: 2)

    @property
    def is_tpu(self) -> bool:
        return self.generation != "cpu"

    @property
    def all_chips(self) -> int:
        return self.chips * self.slices


@dataclass(frozen=True)
class Generation:
    hbm_gib: int
    cores_per_chip_in_name: int  # v4/v5p names count TensorCores, v5e/v6e chips
    shapes: tuple[str, ...]  # chip grids, "2x2x1"


GENERATIONS: dict[str, Generation] = {
    "v4": Generation(32, 2, ("2x2x1", "2x2x2", "2x2x4", "2x4x4", "4x4x4", "4x4x8", "4x8x8",
                             "8x8x8", "8x8x16", "8x16x16")),
    "v5p": Generation(95, 2, ("2x2x1", "2x2x2", "2x2x4", "2x4x4", "4x4x4", "4x4x8", "4x8x8",
                              "8x8x8", "8x8x16", "8x16x16")),
    "v5e": Generation(16, 1, ("1x1", "2x2", "2x4", "4x4", "4x8", "8x8", "8x16", "16x16")),
    "v6e": Generation(32, 1, ("1x1", "2x2", "2x4", "4x4", "4x8", "8x8", "8x16", "16x16")),
}


def _chips(shape: str) -> int:
    n = 1
    for side in shape.split("x"):
        n *= int(side)
    return n


def _build() -> dict[str, Target]:
    table = {"cpu": Target("cpu", "cpu", "", 0, 0)}
    for gen, spec in GENERATIONS.items():
        for shape in spec.shapes:
            chips = _chips(shape)
            name = f"tpu-{gen}-{chips * spec.cores_per_chip_in_name}"
            table[name] = Target(name, gen, f"{gen}:{shape}", chips, spec.hbm_gib * GIB)
    return table


TARGETS: dict[str, Target] = _build()


class TargetError(ValueError):
    """An unknown target name; the message lists the close ones."""


_MULTI_SLICE = re.compile(r"(?P<slice>tpu-[a-z0-9]+-[0-9]+)x(?P<slices>[0-9]+)")


def get_target(name: str) -> Target:
    """A target by name; `NAMExN` is N slices of the TPU target NAME (multi-slice)."""
    if name in TARGETS:
        return TARGETS[name]
    multi = _MULTI_SLICE.fullmatch(name)
    if multi is not None and multi["slice"] in TARGETS:
        slices = int(multi["slices"])
        if slices < 1:
            raise TargetError(f"target {name!r}: the slice count after `x` must be at least 1")
        if slices == 1:
            return TARGETS[multi["slice"]]
        return replace(TARGETS[multi["slice"]], name=name, slices=slices)
    close = difflib.get_close_matches(name, list(TARGETS), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "targets: cpu, " + ", ".join(
        f"tpu-{g}-N" for g in GENERATIONS) + " (xK for K slices)"
    raise TargetError(f"unknown target {name!r}; {hint} (`tnx explain targets` lists all)")


def targets_table() -> str:
    lines = [f"{'target':<16}{'topology':<14}{'chips':>6}{'HBM/chip':>10}"]
    lines += [f"{t.name:<16}{t.topology:<14}{t.chips:>6}{t.hbm_per_chip // GIB:>8}Gi"
              for t in TARGETS.values() if t.is_tpu]
    lines.append("multi-slice: append xK for K slices over DCN, e.g. tpu-v5e-16x2 "
                 "(mesh needs dcn = K)")
    return "\n".join(lines)

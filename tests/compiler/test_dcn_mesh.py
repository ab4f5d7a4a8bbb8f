"""The `dcn` mesh axis: a hybrid ICI × DCN mesh over devices of several TPU slices.

Real multi-slice devices exist only on a pod; the mesh code reads nothing from a
device but `slice_index` (and what `mesh_utils` reads of a CPU device), so
stand-ins with those attributes exercise the same path.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from tunix_dsl.compiler import sharding


@dataclass(frozen=True)
class FakeDevice:
    id: int
    slice_index: int
    platform: str = "cpu"
    device_kind: str = "cpu"
    process_index: int = 0


def two_slices(per_slice: int = 4) -> list[FakeDevice]:
    devices = [FakeDevice(i, i // per_slice) for i in range(2 * per_slice)]
    random.Random(0).shuffle(devices)  # the mesh must group by slice, not trust the order
    return devices


def test_each_dcn_index_holds_one_whole_slice() -> None:
    mesh = sharding.make_mesh({"dcn": 2, "data": 1, "fsdp": -1}, two_slices())
    assert dict(mesh.shape) == {"dcn": 2, "data": 1, "fsdp": 4, "tensor": 1}
    for index in range(2):
        assert {d.slice_index for d in mesh.devices[index].flat} == {index}
    # batches split over every slice and every chip of it
    assert sharding.batch_parallelism(mesh) == 8
    assert sharding.batch_sharding(mesh, 2).spec[0] == ("dcn", "data", "fsdp")


def test_a_dcn_that_is_not_the_slice_count_says_what_to_write() -> None:
    with pytest.raises(ValueError, match=r"devices span 2 slices: set `dcn = 2`"):
        sharding.make_mesh({"data": -1}, two_slices())


def test_one_slice_gets_a_plain_mesh_with_dcn_outermost() -> None:
    devices = [FakeDevice(i, 0) for i in range(8)]
    mesh = sharding.make_mesh({"dcn": 2, "data": -1}, devices)
    assert dict(mesh.shape) == {"dcn": 2, "data": 4, "fsdp": 1, "tensor": 1}
    assert [d.id for d in mesh.devices.flat] == list(range(8))

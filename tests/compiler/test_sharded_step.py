"""A sharded step equals a single-device step; accumulation and k-steps-per-call are exact.

Each configuration runs in a subprocess that sees 8 fake CPU devices
(`--xla_force_host_platform_device_count=8`), so the parent's jax is untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("sharded_run.py")


@cache
def run(kind: str, mesh: str, devices: int, accum: int = 1, per_call: int = 1) -> dict:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, str(SCRIPT), kind, mesh, str(devices), str(accum), str(per_call)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def assert_same(a: dict, b: dict, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(a["losses"], b["losses"], atol=tol, rtol=0)
    for x, y in zip(a["params"], b["params"], strict=True):
        np.testing.assert_allclose(x, y, atol=tol, rtol=0)


SINGLE = '{"data": 1}'
MESH_222 = '{"data": 2, "fsdp": 2, "tensor": 2}'


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_mesh_2x2x2_matches_one_device(kind: str) -> None:
    sharded = run(kind, MESH_222, 8)
    assert sharded["devices"] == 8
    assert_same(sharded, run(kind, SINGLE, 1))


def test_grad_accumulation_matches_big_batch() -> None:
    assert_same(run("sft", SINGLE, 1, accum=4), run("sft", SINGLE, 1, accum=1))


def test_steps_per_call_matches_one_step_per_call() -> None:
    assert_same(run("sft", SINGLE, 1, per_call=3), run("sft", SINGLE, 1, per_call=1))


def test_losses_change_across_steps() -> None:
    # guards against a step that silently does nothing
    losses = run("sft", SINGLE, 1)["losses"]
    assert losses[0] != losses[-1]

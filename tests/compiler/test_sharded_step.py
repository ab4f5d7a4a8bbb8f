"""A sharded step equals a single-device step; accumulation and k-steps-per-call are exact.

All configurations run in one subprocess that sees 8 fake CPU devices
(`--xla_force_host_platform_device_count=8`), so the parent's jax is untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("sharded_run.py")
SINGLE = {"data": 1}
MESH_222 = {"data": 2, "fsdp": 2, "tensor": 2}
MESH_DCN = {"dcn": 2, "data": 2, "fsdp": 2}  # a dcn axis shards the batch like data
# name -> [kind, mesh, devices, grad_accum, steps_per_call]
CONFIGS = {
    "sft_1": ["sft", SINGLE, 1, 1, 1],
    "sft_222": ["sft", MESH_222, 8, 1, 1],
    "sft_dcn": ["sft", MESH_DCN, 8, 1, 1],
    "dpo_1": ["dpo", SINGLE, 1, 1, 1],
    "dpo_222": ["dpo", MESH_222, 8, 1, 1],
    "sft_accum4": ["sft", SINGLE, 1, 4, 1],
    "sft_per_call3": ["sft", SINGLE, 1, 1, 3],
}


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, str(SCRIPT), json.dumps(list(CONFIGS.values()))],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(zip(CONFIGS, json.loads(out.stdout.strip().splitlines()[-1]), strict=True))


def assert_same(a: dict, b: dict, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(a["losses"], b["losses"], atol=tol, rtol=0)
    for x, y in zip(a["params"], b["params"], strict=True):
        np.testing.assert_allclose(x, y, atol=tol, rtol=0)


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_mesh_2x2x2_matches_one_device(results: dict, kind: str) -> None:
    assert results[f"{kind}_222"]["devices"] == 8
    assert_same(results[f"{kind}_222"], results[f"{kind}_1"])


def test_dcn_axis_matches_one_device(results: dict) -> None:
    assert results["sft_dcn"]["devices"] == 8
    assert_same(results["sft_dcn"], results["sft_1"])


def test_grad_accumulation_matches_big_batch(results: dict) -> None:
    assert_same(results["sft_accum4"], results["sft_1"])


def test_steps_per_call_matches_one_step_per_call(results: dict) -> None:
    assert_same(results["sft_per_call3"], results["sft_1"])


def test_losses_change_across_steps(results: dict) -> None:
    # guards against a step that silently does nothing
    losses = results["sft_1"]["losses"]
    assert losses[0] != losses[-1]

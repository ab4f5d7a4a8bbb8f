"""`tnx plan`: memory and FLOPs from XLA on abstract shapes, no weights allocated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LARGE = """
pipeline big {{ seed = 0 }}
tokenizer t = bytes()
model m = transformer(preset = "micro", tokenizer = t, d_model = 2048, n_heads = 16,
                      n_kv_heads = 8, head_dim = 128, mlp_dim = 8192, n_layers = {layers})
dataset d = synthetic("addition", count = 100)
stage s: sft {{
  model = m
  data = d
  steps = 10
  batch_size = 8
  max_seq_len = 64
  lora = lora(rank = 8)
}}
"""

PEAK_RSS = """
import sys
from tunix_dsl.runtime.cli_commands import main
code = main("plan", [sys.argv[1], "--format", "json"])
# VmHWM, not ru_maxrss: Linux carries the parent's peak (pytest's) into a spawned child's ru_maxrss.
hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print("RSS_MB", hwm_kb / 1024)
sys.exit(code)
"""


def test_plan_of_a_large_model_allocates_no_weights(tmp_path: Path) -> None:
    # 12 layers of d_model 2048 / mlp 8192: ~0.8 B parameters, 3.2 GB of float32 weights.
    (tmp_path / "big.tnx").write_text(LARGE.format(layers=12))
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, str(tmp_path / "big.tnx")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    plans = json.loads(out.stdout[: out.stdout.rindex("RSS_MB")])
    rss_mb = float(out.stdout.rsplit("RSS_MB", 1)[1])
    (plan,) = plans
    weight_mb = plan["total_params"] * 4 / 2**20
    assert plan["total_params"] > 700_000_000
    assert plan["argument_bytes"] > plan["total_params"] * 4  # XLA sees the whole model as input
    assert plan["flops_per_step"] > 0 and plan["temp_bytes"] > 0
    # The process (jax, XLA's compile of the chunked-loss step) stays far below the weights.
    assert rss_mb < weight_mb / 3, (rss_mb, weight_mb)


SHARING = """
pipeline share {{ seed = 0 }}
tokenizer t = bytes()
model a = transformer(preset = "nano", tokenizer = t)
model b = transformer(preset = "nano", tokenizer = t)
dataset p = synthetic("addition_preferences", count = 100)
stage s: dpo {{
  policy = a
  {reference}
  data = p
  steps = 10
  batch_size = 8
  max_seq_len = 32
  lora = lora(rank = 4)
}}
stage keep_b_used: sft {{
  model = b
  data = q
  steps = 1
  batch_size = 8
}}
dataset q = synthetic("addition", count = 100)
"""


def plan_json(path: Path) -> list[dict]:
    from tunix_dsl.api import load
    from tunix_dsl.runtime.planning import plan_pipeline

    pipeline = load(str(path))
    assert pipeline.ok, pipeline.diagnostics
    return [p.as_dict() for p in plan_pipeline(pipeline)]


def test_lora_dpo_reference_is_the_base_with_adapters_off(tmp_path: Path) -> None:
    shared, separate = tmp_path / "shared.tnx", tmp_path / "separate.tnx"
    shared.write_text(SHARING.format(reference=""))
    separate.write_text(SHARING.format(reference="reference = b"))
    with_shared = plan_json(shared)[0]
    with_copy = plan_json(separate)[0]
    model_bytes = with_shared["total_params"] * 4  # trainable adapters + frozen base, float32
    # A separate reference adds a whole second copy of the weights to the step's inputs;
    # the shared one adds nothing.
    extra = with_copy["argument_bytes"] - with_shared["argument_bytes"]
    assert extra == pytest.approx(with_copy["total_params"] * 4 - model_bytes, rel=0.01)
    assert extra > 0.9 * (model_bytes - with_shared["trainable_params"] * 4)


def test_plan_on_four_devices_splits_the_batch(tmp_path: Path) -> None:
    # The batch is sharded over (data, fsdp) as in a run, so per-device activations and
    # FLOPs drop with the device count while the (replicated) parameters do not.
    example = Path(__file__).parents[2] / "examples" / "dpo.tnx"

    def plan(devices: int) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "tunix_dsl", "plan", str(example), "--format", "json",
             "--devices", str(devices), "--run-dir", str(tmp_path / "run")],
            capture_output=True, text=True, timeout=600,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        (stage,) = json.loads(out.stdout)
        return stage

    one, four = plan(1), plan(4)
    assert four["devices"] == 4
    assert four["flops_per_step"] == pytest.approx(one["flops_per_step"] / 4, rel=0.1)
    assert four["temp_bytes"] < one["temp_bytes"] / 2

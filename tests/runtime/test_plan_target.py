"""`tnx plan --target tpu-…`: TPU executables compiled on this CPU host (libtpu), fit or not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunix_dsl.api import parse
from tunix_dsl.compiler import targets as compiler_targets
from tunix_dsl.rules.registry import RULES
from tunix_dsl.rules.target_checks import target_diagnostics
from tunix_dsl.runtime.cli_commands import main
from tunix_dsl.schemas.targets import GIB, TARGETS, TargetError, get_target

ROOT = Path(__file__).resolve().parents[2]

EIGHT_B = """pipeline big {{
  precision = "bfloat16"
  mesh = {{ {mesh} }}
}}
tokenizer t = bytes()
model m = transformer(preset = "llama3.1-8b", tokenizer = t, remat = true)
dataset d = synthetic("addition", count = 100)

stage tune: sft {{
  model = m
  data = d
  steps = 10
  batch_size = 32
  max_seq_len = 128
}}
export tune.model to "out" as "hf"
"""


def plan(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main("plan", [*argv, "--run-dir", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    return code, out, err


def test_target_table_names_chips_and_hbm() -> None:
    assert (TARGETS["tpu-v5e-16"].topology, TARGETS["tpu-v5e-16"].chips) == ("v5e:4x4", 16)
    assert (TARGETS["tpu-v5p-8"].topology, TARGETS["tpu-v5p-8"].chips) == ("v5p:2x2x1", 4)
    assert TARGETS["tpu-v5p-64"].hbm_per_chip == 95 * GIB
    assert TARGETS["tpu-v6e-256"].chips == 256 and TARGETS["tpu-v4-8"].hbm_per_chip == 32 * GIB
    with pytest.raises(TargetError, match="did you mean .*tpu-v5e-16"):
        get_target("tpu-v5e-61")


def test_multi_slice_targets_are_named_slice_x_count() -> None:
    two = get_target("tpu-v5e-16x2")
    assert (two.topology, two.chips, two.slices, two.all_chips) == ("v5e:4x4", 16, 2, 32)
    assert get_target("tpu-v5p-8x1") == TARGETS["tpu-v5p-8"]
    with pytest.raises(TargetError, match="did you mean"):
        get_target("tpu-v5e-15x2")


SMALL_ON_SLICES = """pipeline small {{
  mesh = {{ {mesh} }}
}}
tokenizer t = bytes()
model m = transformer(preset = "pico", tokenizer = t)
dataset d = synthetic("addition", count = 100)

stage tune: sft {{
  model = m
  data = d
  steps = 10
  batch_size = 16
  max_seq_len = 32
}}
export tune.model to "out" as "hf"
"""


def test_small_pipeline_plans_on_two_slices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # fsdp within each slice: XLA:TPU cannot lower a dcn × data reduction of replicated weights
    (tmp_path / "small.tnx").write_text(SMALL_ON_SLICES.format(mesh="dcn = 2, data = 1, fsdp = -1"))
    code, out, err = plan(tmp_path, capsys, str(tmp_path / "small.tnx"), "--target", "tpu-v5e-4x2",
                          "--format", "json")
    assert code == 0, err
    (stage,) = json.loads(out)
    assert stage["target"] == "tpu-v5e-4x2" and stage["devices"] == 8
    assert stage["mesh"] == {"dcn": 2, "data": 1, "fsdp": 4, "tensor": 1}
    assert stage["compiled"] and stage["fits"] is True and stage["hbm_bytes"] == 16 * GIB


def test_dcn_must_match_the_targets_slices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "small.tnx").write_text(SMALL_ON_SLICES.format(mesh="data = -1"))
    code, _, err = plan(tmp_path, capsys, str(tmp_path / "small.tnx"), "--target", "tpu-v5e-4x2")
    assert code == 1 and "error[TNX237]" in err and "small.tnx:2:10" in err
    assert "dcn = 2" in err


def test_small_pipeline_plans_on_a_v5e_slice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = plan(tmp_path, capsys, str(ROOT / "examples" / "dpo.tnx"),
                          "--target", "tpu-v5e-16", "--format", "json")
    assert code == 0, err
    (stage,) = json.loads(out)
    assert stage["target"] == "tpu-v5e-16" and stage["devices"] == 16
    assert stage["mesh"] == {"dcn": 1, "data": 16, "fsdp": 1, "tensor": 1}
    assert stage["hbm_bytes"] == 16 * GIB and stage["fits"] is True
    assert stage["compiled"] and stage["generated_code_bytes"] > 0 and stage["flops_per_step"] > 0
    # the step holds at least its state; XLA's peak is above the analytic floor
    assert 0 < stage["floor_bytes"] <= stage["needed_bytes"] < 16 * GIB


def test_8b_full_sft_does_not_fit_v5e_8_at_the_stage_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "big.tnx").write_text(EIGHT_B.format(mesh="data = -1"))
    code, out, err = plan(tmp_path, capsys, str(tmp_path / "big.tnx"), "--target", "tpu-v5e-8")
    assert code == 1
    assert "error[TNX380]: stage `tune` needs" in err and "big.tnx:9:7" in err
    assert "fsdp" in err and "lora" in err  # the hint names the ways out
    assert "NO" in out.splitlines()[-3]


def test_8b_full_sft_with_fsdp_fits_v5p_64(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "big.tnx").write_text(EIGHT_B.format(mesh="data = 1, fsdp = -1"))
    code, out, err = plan(tmp_path, capsys, str(tmp_path / "big.tnx"), "--target", "tpu-v5p-64",
                          "--format", "json")
    assert code == 0, err
    (stage,) = json.loads(out)
    assert stage["mesh"]["fsdp"] == 32 and stage["fits"] is True and stage["compiled"]
    # bf16 compute keeps float32 master parameters: parameters, gradients and both Adam
    # moments, 4 bytes each, split 32 ways
    assert stage["floor_bytes"] == pytest.approx(8.03e9 * 16 / 32, rel=0.02)


def test_without_libtpu_the_message_says_what_to_install(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiler_targets, "libtpu_installed", lambda: False)
    code, _, err = plan(tmp_path, capsys, str(ROOT / "examples" / "dpo.tnx"), "--target", "tpu-v5e-16")
    assert code == 2
    assert 'pip install "tunix-dsl[tpu]"' in err


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dpo = str(ROOT / "examples" / "dpo.tnx")
    assert plan(tmp_path, capsys, dpo, "--target", "tpu-v9-8")[0] == 2
    code, _, err = plan(tmp_path, capsys, dpo, "--mesh", "data=2,model=4")
    assert code == 2 and "expected AXIS=SIZE" in err


def target_codes(text: str) -> list[str]:
    """Target diagnostics of a rule example, for the target its first line names."""
    pipeline = parse(text, "example.tnx", base_dir=ROOT)
    assert pipeline.ok, pipeline.diagnostics
    target = get_target(text.splitlines()[0].split("--target ")[1])
    return [d.code for d in target_diagnostics(pipeline, target, devices=target.all_chips)]


@pytest.mark.parametrize("code", ["TNX381", "TNX236", "TNX237"])
def test_mesh_vs_target_examples(code: str) -> None:
    entry = RULES[code]
    assert code in target_codes(entry.bad)
    assert target_codes(entry.good) == []


def test_dcn_on_one_slice_points_at_the_dcn_value() -> None:
    text = RULES["TNX236"].bad
    pipeline = parse(text, "example.tnx", base_dir=ROOT)
    (found,) = target_diagnostics(pipeline, TARGETS["tpu-v5e-8"], devices=8)
    line = text.splitlines()[found.span.line - 1]
    assert line[found.span.column - 1:found.span.end_column - 1] == "2" and "dcn" in line
    assert "--target tpu-v5e-8x2" in (found.help or "")


def test_batch_is_checked_on_the_mesh_the_target_resolves() -> None:
    # data = -1 lints clean (lint cannot know the device count); on 8 devices 12 does not split
    good = RULES["TNX381"].good.replace("data = 2, fsdp = -1", "data = -1")
    assert target_codes(good) == []
    assert target_codes(good.replace("batch_size = 16", "batch_size = 12")) == ["TNX305"]


def test_mesh_override_is_checked_against_the_target(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = plan(tmp_path, capsys, str(ROOT / "examples" / "dpo.tnx"),
                        "--target", "tpu-v5e-16", "--mesh", "data=4,fsdp=2")
    assert code == 1 and "error[TNX381]" in err and "16 devices" in err

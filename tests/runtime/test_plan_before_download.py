"""`tnx plan` before the checkpoint is downloaded: `hf(dir, preset = ...)` gives the
architecture, so the pre-flight's missing-directory errors do not stop the plan (the
stages still say "will not run"); any other pre-flight problem does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunix_dsl.api import parse
from tunix_dsl.runtime.planning import blocked_statuses

ROOT = Path(__file__).resolve().parents[2]

PIPELINE = """tokenizer t = {tokenizer}
model base = hf("ckpt", tokenizer = t{preset})
dataset d = {dataset}

stage tune: sft {{
  model = base
  data = d
  steps = 1
  batch_size = 2
  max_seq_len = 16
}}
export tune.model to "out" as "hf"
"""


def blocked(tmp_path: Path, tokenizer: str = "bytes()", preset: str = ', preset = "qwen3-0.6b"',
            dataset: str = 'synthetic("addition", count = 4)'):
    text = PIPELINE.format(tokenizer=tokenizer, preset=preset, dataset=dataset)
    (tmp_path / "p.tnx").write_text(text, encoding="utf-8")
    pipeline = parse(text, str(tmp_path / "p.tnx"), base_dir=tmp_path)
    assert pipeline.ok, pipeline.diagnostics
    return blocked_statuses(pipeline, tmp_path / "run", None, {"tune": "will run"})


def test_missing_checkpoint_of_a_preset_is_planned_but_will_not_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = blocked(tmp_path)
    assert result is not None and result.plannable
    assert result.statuses["tune"].startswith("will not run: TNX372")
    assert "error[TNX372]" in capsys.readouterr().err
    # the tokenizer directory is not there either: still only downloads missing
    result = blocked(tmp_path, tokenizer='hf_tokenizer("ckpt")')
    assert result is not None and result.plannable


def test_without_a_preset_or_with_other_problems_nothing_is_planned(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = blocked(tmp_path, preset="")  # no architecture without config.json
    assert result is not None and not result.plannable
    bad_rows = ROOT / "examples" / "data" / "qa_bad_rows.jsonl"  # the TNX371 example's file
    result = blocked(tmp_path, dataset=f'jsonl("{bad_rows}", prompt = "question", '
                                       'completion = "answer")')  # bad rows are not a download
    assert result is not None and not result.plannable
    assert "error[TNX371]" in capsys.readouterr().err


def test_a_present_but_broken_checkpoint_is_not_a_download(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()  # there, but no config.json or weights
    result = blocked(tmp_path)
    assert result is not None and not result.plannable

"""Stage fingerprints change exactly when a stage or something upstream of it changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tunix_dsl.api import load
from tunix_dsl.compiler.fingerprint import OPERATIONAL_FIELDS, stage_fingerprints

EXAMPLES = Path(__file__).parents[2] / "examples"
EXAMPLE = EXAMPLES / "supervised.tnx"


def fingerprints(tmp_path: Path, edit: tuple[str, str] | None = None) -> dict[str, str]:
    text = EXAMPLE.read_text()
    if edit:
        assert edit[0] in text
        text = text.replace(edit[0], edit[1], 1)
    path = tmp_path / "p.tnx"
    path.write_text(text)
    pipeline = load(str(path))
    assert pipeline.ok, pipeline.diagnostics
    return stage_fingerprints(pipeline)


def test_unchanged_pipeline_has_stable_fingerprints(tmp_path: Path) -> None:
    assert fingerprints(tmp_path) == fingerprints(tmp_path)


def test_editing_a_stage_changes_it_and_its_dependents_only(tmp_path: Path) -> None:
    before = fingerprints(tmp_path)
    after = fingerprints(tmp_path, ("beta        = 0.1", "beta        = 0.2"))  # stage `prefer`
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"prefer", "shrink"}


def test_editing_a_dataset_changes_its_consumers(tmp_path: Path) -> None:
    before = fingerprints(tmp_path)
    after = fingerprints(tmp_path, ('count = 5000, seed = 3', 'count = 5000, seed = 4'))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"prefer", "shrink"}


def test_param_override_changes_the_stages_that_use_it(tmp_path: Path) -> None:
    path = tmp_path / "p.tnx"
    path.write_text(EXAMPLE.read_text())
    base = stage_fingerprints(load(str(path)))
    scaled = stage_fingerprints(load(str(path), overrides={"scale": "0.5"}))
    assert all(base[name] != scaled[name] for name in base)


def test_checkpoint_settings_do_not_change_fingerprints(tmp_path: Path) -> None:
    before = fingerprints(tmp_path)
    after = fingerprints(tmp_path, ("  beta        = 0.1\n", "  beta        = 0.1\n  checkpoint_every = 5\n  keep_checkpoints = 4\n"))
    assert before == after


# One edit per operational field (each alone, on stage `prefer`): none may re-run a finished stage.
OPERATIONAL_EDITS = {
    "checkpoint_every": "checkpoint_every = 5",
    "checkpoint_minutes": "checkpoint_minutes = 0.5",
    "keep_checkpoints": "keep_checkpoints = 4",
    "on_nonfinite": 'on_nonfinite = "skip"',
    "eval_every": "eval_every = 10\n  eval_data = sum_prefs",
    "eval_data": "eval_data = sum_prefs",
}


def test_every_operational_field_has_an_edit_below() -> None:
    assert set(OPERATIONAL_EDITS) == OPERATIONAL_FIELDS


@pytest.mark.parametrize("field", sorted(OPERATIONAL_EDITS))
def test_operational_field_does_not_change_fingerprints(tmp_path: Path, field: str) -> None:
    before = fingerprints(tmp_path)
    line = "  beta        = 0.1\n"
    after = fingerprints(tmp_path, (line, f"{line}  {OPERATIONAL_EDITS[field]}\n"))
    assert before == after


def test_a_computing_field_beside_them_still_changes_the_fingerprint(tmp_path: Path) -> None:
    before = fingerprints(tmp_path)
    line = "  beta        = 0.1\n"
    after = fingerprints(tmp_path, (line, f"{line}  grad_accum = 2\n"))
    assert {n for n in before if before[n] != after[n]} == {"prefer", "shrink"}


def python_reward_fingerprints(tmp_path: Path, body: str) -> dict[str, str]:
    shutil.copy(EXAMPLES / "ppo.tnx", tmp_path / "p.tnx")
    (tmp_path / "rewards.py").write_text(body)
    pipeline = load(str(tmp_path / "p.tnx"))
    assert pipeline.ok, pipeline.diagnostics
    return stage_fingerprints(pipeline)


def test_python_reward_file_content_is_part_of_the_fingerprint(tmp_path: Path) -> None:
    original = (EXAMPLES / "rewards.py").read_text()
    before = python_reward_fingerprints(tmp_path, original)
    assert python_reward_fingerprints(tmp_path, original) == before  # re-writing the same text
    edited = original.replace("1.0 if c.strip().isdigit() else 0.0", "1.0 if c.strip() else 0.0")
    assert edited != original
    after = python_reward_fingerprints(tmp_path, edited)
    assert after["solve"] != before["solve"]

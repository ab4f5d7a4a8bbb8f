"""Stage fingerprints change exactly when a stage or something upstream of it changes."""

from __future__ import annotations

from pathlib import Path

from tunix_dsl.api import load
from tunix_dsl.compiler.fingerprint import stage_fingerprints

EXAMPLE = Path(__file__).parents[2] / "examples" / "supervised.tnx"


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

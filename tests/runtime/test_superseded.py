"""Moving a stage's work aside and back (jax-free, on hand-made stage directories): finished work is
never deleted unless a finished output of the same configuration replaces it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tunix_dsl.runtime.run_dir import StageDir, stage_status
from tunix_dsl.runtime.superseded import (
    FINGERPRINT_FILE,
    KEEP_SUPERSEDED,
    adopt,
    finish_work,
    move_aside,
    recorded_fingerprint,
    start_work,
)


def add_checkpoint(directory: StageDir, fingerprint: str, step: int) -> None:
    meta = directory.checkpoints / str(step) / "meta"
    meta.mkdir(parents=True)
    (meta / "metadata").write_text(json.dumps({"fingerprint": fingerprint, "step": step}))
    (directory.checkpoints / str(step) / "state").mkdir()


def finish(directory: StageDir, fingerprint: str, weights: bytes = b"w" * 8) -> None:
    directory.output.mkdir(parents=True, exist_ok=True)
    (directory.output / "model.safetensors").write_bytes(weights)
    directory.mark_finished({"fingerprint": fingerprint})
    (directory.root / FINGERPRINT_FILE).write_text(fingerprint)


def test_an_edit_moves_the_work_aside_and_undoing_it_brings_it_back(tmp_path: Path) -> None:
    stage, log = StageDir(tmp_path / "s"), []
    add_checkpoint(stage, "old", 3)
    finish(stage, "old")
    start_work(stage, "new", fresh=False, log=log.append)
    assert not stage.output.exists() and not stage.checkpoints.exists()
    assert recorded_fingerprint(stage) == "new"
    assert stage.superseded("old").finished_with("old") is not None
    assert stage_status(stage, "old").action == "cached" and stage_status(stage, "old").superseded
    add_checkpoint(stage, "new", 1)  # the edited run got one checkpoint in, then failed
    adopt(stage, "old", log.append)
    assert stage.finished_with("old") is not None and stage.checkpoint_steps("old") == [3]
    assert stage.superseded("new").checkpoint_steps("new") == [1]
    status = stage_status(stage, "new")
    assert (status.action, status.resume_step, status.superseded) == ("resume", 1, True)


def test_damaged_output_is_not_cached(tmp_path: Path) -> None:
    stage = StageDir(tmp_path / "s")
    add_checkpoint(stage, "fp", 4)
    finish(stage, "fp")
    (stage.output / "model.safetensors").write_bytes(b"w" * 3)  # truncated
    status = stage_status(stage, "fp")
    assert (status.action, status.resume_step) == ("resume", 4)
    assert status.broken == "output/model.safetensors has 3 bytes, not the 8 it was written with"
    assert status.describe() == "will resume at step 4 (output damaged)"


def test_a_forced_attempt_never_replaces_a_finished_output_until_it_finishes(tmp_path: Path) -> None:
    stage, log = StageDir(tmp_path / "s"), []
    finish(stage, "fp", b"old-weights")
    start_work(stage, "fp", fresh=True, log=log.append)  # --force: everything moves aside
    assert stage.superseded("fp").finished_with("fp") is not None
    add_checkpoint(stage, "fp", 2)  # ... and the forced run is interrupted
    assert stage_status(stage, "fp").action == "cached"  # the old output still counts
    move_aside(stage, log.append)  # a later fresh start: the unfinished attempt goes, the output stays
    assert not stage.checkpoints.exists()
    assert (stage.superseded("fp").output / "model.safetensors").read_bytes() == b"old-weights"
    start_work(stage, "fp", fresh=True, log=log.append)
    finish(stage, "fp", b"new-weights")
    finish_work(stage, "fp", log.append)  # the new output is finished: now the old one goes
    assert not stage.superseded_root.exists()
    assert (stage.output / "model.safetensors").read_bytes() == b"new-weights"


def test_checkpoints_of_several_configurations_each_go_to_their_own_place(tmp_path: Path) -> None:
    stage = StageDir(tmp_path / "s")
    add_checkpoint(stage, "a", 1)
    add_checkpoint(stage, "b", 2)  # an older run directory mixed configurations in one place
    move_aside(stage, lambda _line: None)
    assert stage.superseded("a").checkpoint_steps("a") == [1]
    assert stage.superseded("b").checkpoint_steps("b") == [2]


def test_only_the_newest_superseded_configurations_are_kept(tmp_path: Path) -> None:
    stage, log = StageDir(tmp_path / "s"), []
    for i in range(KEEP_SUPERSEDED + 2):
        finish(stage, f"fp{i}")
        start_work(stage, f"fp{i + 1}", fresh=False, log=log.append)
        os.utime(stage.superseded(f"fp{i}").root, ns=(i * 10**9, i * 10**9))  # distinct ages
    finish(stage, f"fp{KEEP_SUPERSEDED + 2}")
    finish_work(stage, f"fp{KEEP_SUPERSEDED + 2}", log.append)
    kept = sorted(p.name for p in stage.superseded_root.iterdir())
    assert kept == [f"fp{i}" for i in range(2, KEEP_SUPERSEDED + 2)]
    assert sum("only the 3 newest superseded configurations are kept" in line for line in log) == 2

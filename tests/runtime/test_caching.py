"""Stage caching by fingerprint: unchanged stages never run again, edits and --force re-run
exactly the stage and its dependents, and `tnx plan` says what a run would do."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.durable_helpers import fresh_workdir, hf_tensors, output_tensors
from tunix_dsl.api import load
from tunix_dsl.runtime.cli_commands import main as tnx
from tunix_dsl.runtime.executor import Executor
from tunix_dsl.runtime.planning import run_statuses


class Interrupt(Exception):
    pass


def run(work: Path, *, overrides: dict[str, str] | None = None, force: tuple[str, ...] = (),
        stop_at: tuple[str, int] | None = None) -> tuple[Counter, list[str]]:
    """Run in-process; returns dispatches per stage and the log lines."""
    pipeline = load(str(work / "p.tnx"), overrides=overrides or {})
    assert pipeline.ok
    dispatched: Counter = Counter()
    lines: list[str] = []

    def on_dispatch(stage: str, step: int) -> None:
        dispatched[stage] += 1
        if stop_at == (stage, step):
            raise Interrupt

    Executor(pipeline, work / "run", log=lines.append, force=force, on_dispatch=on_dispatch).run()
    return dispatched, lines


def statuses(work: Path, **kwargs: Any) -> dict[str, str]:
    overrides = kwargs.pop("overrides", {})
    return run_statuses(load(str(work / "p.tnx"), overrides=overrides), work / "run", **kwargs)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = fresh_workdir(tmp_path_factory.mktemp("first"), "durable_three.tnx")
    assert statuses(work) == {"base": "will run", "tune": "will run", "side": "will run"}
    dispatched, _ = run(work)
    assert set(dispatched) == {"base", "tune", "side"}
    return work


@pytest.fixture
def work(first_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished first run."""
    shutil.copy(first_run / "p.tnx", tmp_path / "p.tnx")
    shutil.copytree(first_run / "run", tmp_path / "run")
    return tmp_path


def test_unchanged_rerun_executes_no_training_step(work: Path) -> None:
    assert set(statuses(work).values()) == {"cached"}
    markers = {s: (work / "run" / "stages" / s / "output" / "tnx_finished.json").stat().st_mtime_ns
               for s in ("base", "tune", "side")}
    dispatched, lines = run(work)
    assert dispatched == Counter()
    assert sum("cached (fingerprint" in line for line in lines) == 3
    # Outputs are loaded only where needed: the exports read tune and side, nobody reads base.
    loaded = {line.split()[1] for line in lines if line.strip().startswith("loading ")}
    assert loaded == {"tune.model", "side.model"}
    for stage, mtime in markers.items():
        assert (work / "run" / "stages" / stage / "output" / "tnx_finished.json").stat().st_mtime_ns == mtime
    exported, finished = hf_tensors(work / "exported_tune"), output_tensors(work / "run", "tune")
    assert all((exported[k] == v).all() for k, v in finished.items())


def test_editing_a_stage_reruns_exactly_it_and_its_dependents(work: Path) -> None:
    edit = {"base_lr": "2e-2"}
    assert statuses(work, overrides=edit) == {"base": "will run", "tune": "will run", "side": "cached"}
    side_before = output_tensors(work / "run", "side")
    base_before = output_tensors(work / "run", "base")
    dispatched, _ = run(work, overrides=edit)
    assert dispatched == Counter({"base": 3, "tune": 3})
    assert all((output_tensors(work / "run", "side")[k] == v).all() for k, v in side_before.items())
    assert any((output_tensors(work / "run", "base")[k] != v).any() for k, v in base_before.items())
    plan = json.loads((work / "run" / "plan.json").read_text())
    assert [s["status"] for s in plan["stages"]] == ["will run", "will run", "cached"]
    assert plan["stages"][1]["inputs"] == ["base"]


def test_force_reruns_the_stage_and_its_dependents(work: Path) -> None:
    assert statuses(work, force=["base"]) == {
        "base": "will run (forced)", "tune": "will run (forced)", "side": "cached"}
    dispatched, lines = run(work, force=("base",))
    assert dispatched == Counter({"base": 3, "tune": 3})


def test_interrupted_forced_run_keeps_the_old_output_and_resumes_when_forced_again(
    work: Path, capsys: pytest.CaptureFixture
) -> None:
    before = output_tensors(work / "run", "side")
    with pytest.raises(Interrupt):
        run(work, force=("side",), stop_at=("side", 3))  # checkpoints at steps 1 and 2 kept
    # The finished output is superseded only by a finished one: without --force it is still used.
    assert statuses(work) == {"base": "cached", "tune": "cached", "side": "cached"}
    forced = {"base": "cached", "tune": "cached", "side": "will resume at step 2 (forced)"}
    assert statuses(work, force=["side"]) == forced
    assert tnx("plan", [str(work / "p.tnx"), "--run-dir", str(work / "run"), "--format", "json",
                        "--force", "side"]) == 0
    shown = {p["name"]: p["status"] for p in json.loads(capsys.readouterr().out)}
    assert shown == forced
    dispatched, lines = run(work, force=("side",))
    assert dispatched == Counter({"side": 2})
    assert any("resuming at step 2" in line for line in lines)
    assert not (work / "run" / "stages" / "side" / "superseded").exists()  # the old one is replaced
    after = output_tensors(work / "run", "side")
    assert all((after[k] == v).all() for k, v in before.items())  # same config, same numbers


def test_undoing_an_edit_after_a_failed_run_retrains_nothing(work: Path) -> None:
    before = output_tensors(work / "run", "base")
    with pytest.raises(Interrupt):  # the edited run dies in `base`, after its first step
        run(work, overrides={"base_lr": "2e-2"}, stop_at=("base", 1))
    stage = work / "run" / "stages" / "base"
    assert not (stage / "output").exists() and (stage / "superseded").is_dir()
    assert statuses(work) == {"base": "cached", "tune": "cached", "side": "cached"}
    dispatched, lines = run(work)
    assert dispatched == Counter()
    assert any("restored the work of stage `base`" in line for line in lines)
    after = output_tensors(work / "run", "base")
    assert all((after[k] == v).all() for k, v in before.items())
    # What the edited run left (metrics, no checkpoint yet) waits aside in turn.
    assert statuses(work, overrides={"base_lr": "2e-2"})["base"] == "will run"
    assert len(list((stage / "superseded").iterdir())) == 1


def test_edit_then_undo_then_redo_reuses_both_finished_outputs(work: Path) -> None:
    original = output_tensors(work / "run", "tune")
    edit = {"base_lr": "2e-2"}
    assert run(work, overrides=edit)[0] == Counter({"base": 3, "tune": 3})
    edited = output_tensors(work / "run", "tune")
    assert run(work)[0] == Counter()  # undo: both stages come back from superseded/
    assert all((output_tensors(work / "run", "tune")[k] == v).all() for k, v in original.items())
    assert run(work, overrides=edit)[0] == Counter()  # redo: and back again
    assert all((output_tensors(work / "run", "tune")[k] == v).all() for k, v in edited.items())


def test_force_with_a_failing_upstream_touches_nothing_downstream(work: Path) -> None:
    from tunix_dsl.runtime.training import NonFiniteLoss

    marker = work / "run" / "stages" / "tune" / "output" / "tnx_finished.json"
    written = marker.read_text()
    with pytest.raises(NonFiniteLoss):  # `base` re-runs with a learning rate that diverges
        run(work, overrides={"base_lr": "1e30"}, force=("tune",))
    assert marker.read_text() == written and not (marker.parents[2] / "superseded").exists()
    assert statuses(work) == {"base": "cached", "tune": "cached", "side": "cached"}


def test_a_deleted_output_file_is_remade_not_reported_cached(work: Path) -> None:
    before = output_tensors(work / "run", "base")
    (work / "run" / "stages" / "base" / "output" / "model.safetensors").unlink()
    assert statuses(work) == {"base": "will resume at step 3 (output damaged)", "tune": "cached",
                              "side": "cached"}
    dispatched, lines = run(work)
    assert dispatched == Counter()  # the final checkpoint holds the trained state: no step re-runs
    assert any("is damaged (output/model.safetensors is missing); making it again" in line for line in lines)
    after = output_tensors(work / "run", "base")
    assert all((after[k] == v).all() for k, v in before.items())
    assert statuses(work)["base"] == "cached"


def test_unknown_force_stage_is_a_clear_error(work: Path, capsys: pytest.CaptureFixture) -> None:
    code = tnx("run", [str(work / "p.tnx"), "--run-dir", str(work / "run"), "--force", "nope"])
    err = capsys.readouterr().err
    assert code == 1
    assert "--force nope: no such stage; stages: base, tune, side" in err and "Traceback" not in err

"""Interrupted runs resume bit-identically: SIGKILL (also mid-checkpoint-write), SIGTERM,
a truncated latest checkpoint, and a NaN that stops the stage.

Every resumed run must end with stage outputs whose float32 tensors equal,
bit for bit, those of one uninterrupted run of the same pipeline.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.durable_helpers import (
    assert_bit_identical,
    fresh_workdir,
    interrupt,
    metric_rows,
    subprocess_env,
    tensorboard_scalars,
)
from tunix_dsl.runtime.cli_commands import main as tnx


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run."""
    work = fresh_workdir(tmp_path_factory.mktemp("reference"))
    assert tnx("run", [str(work / "p.tnx"), "--run-dir", str(work / "run")]) == 0
    return work / "run"


def rerun(work: Path, capsys: pytest.CaptureFixture) -> str:
    code = tnx("run", [str(work / "p.tnx"), "--run-dir", str(work / "run")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Traceback" not in out.out + out.err
    return out.out


def assert_every_step_once(run_dir: Path) -> None:
    """metrics.jsonl and the TensorBoard events hold every step's loss exactly once."""
    for stage, steps in (("base", 12), ("tune", 8)):
        rows = metric_rows(run_dir, stage)
        assert [r["step"] for r in rows] == list(range(1, steps + 1))
        events = tensorboard_scalars(run_dir / "stages" / stage / "events", "loss")
        assert sorted(events) == list(range(1, steps + 1))
        assert all(events[r["step"]] == pytest.approx(r["loss"], rel=1e-6) for r in rows)


def test_metrics_and_events_of_an_uninterrupted_run(reference: Path) -> None:
    assert_every_step_once(reference)
    rows = metric_rows(reference, "base")
    assert {"loss", "accuracy", "grad_norm", "lr"} <= set(rows[0])
    report = (reference / "report.md").read_text()
    assert "| base | pretrain | 12 |" in report and "| tune | sft | 8 |" in report
    plan = json.loads((reference / "plan.json").read_text())
    assert plan["order"] == ["base", "tune"] and len(plan["stages"][0]["fingerprint"]) == 16
    log = (reference / "run.log").read_text()
    assert "stage base (pretrain): 12 steps" in log and "base step 12/12" in log


@pytest.mark.parametrize(
    ("stage", "step", "during_save"),
    [
        ("base", 5, False),  # between checkpoints (the step-3 one possibly still committing)
        ("base", 9, True),  # killed while the step-9 checkpoint is being written
        ("tune", 6, False),  # upstream finished (loaded from output/), tune resumes at 4
    ],
    ids=["base-between-checkpoints", "base-mid-checkpoint-write", "tune-after-upstream-finished"],
)
def test_sigkill_then_rerun_is_bit_identical(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture, stage: str, step: int,
    during_save: bool,
) -> None:
    work = fresh_workdir(tmp_path)
    killed = interrupt(work, stage, step, during_save=during_save)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (work / "run" / "stages" / stage / "output" / "tnx_finished.json").exists()
    # The step-4 checkpoint of `tune` was written asynchronously: committed or not by the kill.
    committed = (work / "run" / "stages" / "tune" / "checkpoints" / "4").is_dir()
    out = rerun(work, capsys)
    if stage == "tune":
        assert "stage base (pretrain): cached" in out
        assert "loading base.model from" in out
        assert ("resuming at step 4" in out) == committed
    assert_bit_identical(reference, work / "run")
    assert_every_step_once(work / "run")


def test_sigterm_saves_at_the_current_step_exits_3_and_resumes(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    work = fresh_workdir(tmp_path)
    cmd = [sys.executable, "-m", "tunix_dsl", "run", str(work / "p.tnx"), "--run-dir", str(work / "run")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env())
    assert proc.stdout is not None
    for line in proc.stdout:
        if "base step 4/" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err[-2000:]  # interrupted, resumable: never 0
    stopped = next(line for line in rest.splitlines() if line.startswith("stopped by SIGTERM"))
    step = int(stopped.split(" at step ")[1].split("/")[0])
    assert 4 <= step < 12
    assert (work / "run" / "stages" / "base" / "checkpoints" / str(step)).is_dir()
    out = rerun(work, capsys)
    assert f"resuming at step {step} from" in out
    assert_bit_identical(reference, work / "run")
    assert_every_step_once(work / "run")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax's aborted reads
def test_truncated_latest_checkpoint_falls_back_with_a_warning(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    work = fresh_workdir(tmp_path)
    shutil.copytree(reference, work / "run")
    stage_dir = work / "run" / "stages" / "base"
    (stage_dir / "output" / "tnx_finished.json").unlink()  # base must run again: from step 12
    latest = stage_dir / "checkpoints" / "12"
    biggest = max((p for p in latest.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with biggest.open("r+b") as fh:
        fh.truncate(biggest.stat().st_size // 2)
    out = rerun(work, capsys)
    assert f"warning: checkpoint {latest.resolve()} is unreadable" in out
    assert "resuming at step 9 from" in out
    assert (stage_dir / "checkpoints_corrupt" / "12").is_dir()
    assert "stage tune (sft): cached" in out  # same fingerprint: still finished
    assert_bit_identical(reference, work / "run")


def test_nan_loss_stops_the_stage_naming_stage_and_step(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    work = fresh_workdir(tmp_path)
    code = tnx("run", [str(work / "p.tnx"), "--run-dir", str(work / "run"), "--set", "base_lr=1e30"])
    err = capsys.readouterr().err
    assert code == 1
    assert re.search(r"stage `base`: (loss|grad_norm) = (nan|inf|-inf) at step \d+;", err), err
    assert "Traceback" not in err
    # The poisoned state was never checkpointed nor marked finished.
    assert not (work / "run" / "stages" / "base" / "checkpoints" / "3").exists()
    assert not (work / "run" / "stages" / "base" / "output" / "tnx_finished.json").exists()


def test_second_sigint_exits_at_once_without_saving() -> None:
    script = (
        "import os, signal, time\n"
        "from tunix_dsl.runtime.preemption import StopSignals\n"
        "with StopSignals() as stop:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.05)\n"
        "    assert stop.requested == 'SIGINT'\n"
        "    print('first SIGINT recorded', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "print('not reached')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=subprocess_env(), timeout=60)
    assert out.returncode == 130 and out.stdout == "first SIGINT recorded\n", out.stderr


def test_a_stage_whose_every_update_was_skipped_fails_and_is_not_finished(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    work = fresh_workdir(tmp_path)
    text = (work / "p.tnx").read_text()
    (work / "p.tnx").write_text(text.replace("  keep_checkpoints = 3\n", "  keep_checkpoints = 3\n  on_nonfinite     = \"skip\"\n", 1))
    code = tnx("run", [str(work / "p.tnx"), "--run-dir", str(work / "run"), "--set", "base_lr=1e30"])
    out = capsys.readouterr()
    assert code == 1, out.err
    assert re.search(r"stage `base`: step \d+ skipped", out.out + out.err)
    assert "error: stage `base`: all 12 updates were skipped" in out.err and "Traceback" not in out.err
    rows = metric_rows(work / "run", "base")
    assert len(rows) == 12 and all(r["skipped"] for r in rows)
    assert not (work / "run" / "stages" / "base" / "output" / "tnx_finished.json").exists()
    assert not (work / "run" / "stages" / "tune").exists()  # nothing downstream started


@pytest.mark.parametrize("command", ["run", "plan"])
def test_help_lists_every_exit_status(command: str, capsys: pytest.CaptureFixture) -> None:
    from tunix_dsl.runtime.cli_commands import EXIT_CODES

    with pytest.raises(SystemExit) as done:
        tnx(command, ["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    listed = [int(line.split()[0]) for line in text.split("exit status:\n")[1].splitlines() if line.strip()]
    assert listed == [code for code, _ in EXIT_CODES[command]]
    if command == "run":
        assert listed == [0, 1, 2, 3, 130] and "run the same command to resume" in text

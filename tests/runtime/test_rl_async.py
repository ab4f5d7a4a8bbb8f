"""`rollout = "async"` on a GRPO stage: the update of step n trains on a rollout of weights at
most `max_staleness` steps old, runs are reproducible, and a resume after a kill replays the
uninterrupted run bit for bit (the rollouts in flight are saved with each checkpoint)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.runtime.durable_helpers import (
    assert_bit_identical,
    fresh_workdir,
    interrupt,
    metric_rows,
)
from tunix_dsl.runtime.cli_commands import main as tnx

STAGES = ("base", "solve")


def async_workdir(tmp: Path, staleness: int = 2) -> Path:
    work = fresh_workdir(tmp, "rl_small.tnx")
    text = (work / "p.tnx").read_text()
    text = text.replace("  checkpoint_every = 5\n", f'  checkpoint_every = 5\n  rollout = "async"\n'
                        f"  max_staleness = {staleness}\n")
    (work / "p.tnx").write_text(text.replace("param rl_steps  = 15", "param rl_steps  = 9"))
    return work


def stable(rows: list[dict]) -> list[dict]:
    """Metric rows without the wall-clock ones."""
    return [{k: v for k, v in r.items() if k != "rollout_tokens_per_s"} for r in rows]


def run(work: Path) -> int:
    return tnx("run", [str(work / "p.tnx"), "--run-dir", str(work / "run")])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = async_workdir(tmp_path_factory.mktemp("rl_async"))
    assert run(work) == 0
    return work / "run"


def test_async_updates_train_on_rollouts_at_most_max_staleness_old(reference: Path) -> None:
    rows = metric_rows(reference, "solve")
    assert [r["step"] for r in rows] == list(range(1, 10))
    # max_staleness = 2: steps 0 and 1 roll out on the starting weights, every later step
    # on the weights of two steps before (row "step" counts updates done, so step n + 1)
    assert [r["rollout_staleness"] for r in rows] == [0.0, 1.0] + [2.0] * 7
    # the behaviour log-probs come from older weights: the ratio is no longer exactly 1
    assert rows[0]["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert any(abs(r["ratio"] - 1.0) > 1e-6 for r in rows[2:])
    saved = sorted(p.name for p in (reference / "stages" / "solve" / "async_rollouts").iterdir())
    assert saved == ["5.npz", "9.npz"]


def test_two_async_runs_are_identical(reference: Path, tmp_path: Path) -> None:
    work = async_workdir(tmp_path)
    assert run(work) == 0
    assert stable(metric_rows(work / "run", "solve")) == stable(metric_rows(reference, "solve"))
    assert_bit_identical(reference, work / "run", STAGES)


def test_sigkill_mid_async_grpo_then_rerun_is_bit_identical(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    work = async_workdir(tmp_path)
    killed = interrupt(work, "solve", 7)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    committed = (work / "run" / "stages" / "solve" / "checkpoints" / "5").is_dir()
    assert run(work) == 0
    assert ("resuming at step 5 from" in capsys.readouterr().out) == committed
    assert stable(metric_rows(work / "run", "solve")) == stable(metric_rows(reference, "solve"))
    assert_bit_identical(reference, work / "run", STAGES)

"""`tnx report RUN_DIR`: report.md + PNG plots from a run directory's files alone."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tunix_dsl.runtime.cli_commands import main as tnx
from tunix_dsl.runtime.plots import panels_for

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _jsonl(path: Path, rows: list[dict], torn: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + torn)


def make_run(root: Path) -> Path:
    """A run directory: a finished pretrain (with held-out loss), a GRPO stage still running
    (its metrics.jsonl ends in a torn line), and an eval block over two models."""
    plan = {"pipeline": "demo", "order": ["base", "solve"], "stages": [
        {"name": "base", "kind": "pretrain", "steps": 40},
        {"name": "solve", "kind": "grpo", "steps": 30}]}
    root.mkdir(parents=True)
    (root / "plan.json").write_text(json.dumps(plan))
    base = root / "stages" / "base"
    _jsonl(base / "metrics.jsonl", [{"step": s, "loss": 3.0 * math.exp(-s / 15) + 0.5,
                                     "lr": 1e-3 * min(1.0, s / 5), "grad_norm": 1.0}
                                    for s in range(1, 41)])
    _jsonl(base / "eval.jsonl", [{"step": s, "loss": 3.2 * math.exp(-s / 15) + 0.6}
                                 for s in (10, 20, 30, 40)])
    (base / "output").mkdir()
    (base / "output" / "tnx_finished.json").write_text(json.dumps(
        {"steps": 40, "wall_s": 12.5, "tokens_per_s": 2048.0}))
    _jsonl(root / "stages" / "solve" / "metrics.jsonl",
           [{"step": s, "loss": 0.1 / s, "reward": 0.2 + 0.02 * s, "kl_ref": 0.001 * s,
             "clip_fraction": 0.05, "lr": 1e-5} for s in range(1, 13)],
           torn='{"step": 13, "loss": 0.0')  # killed mid-write
    (root / "evals.json").write_text(json.dumps({"accuracy": [
        {"model": "base.model", "score": 0.42, "rows": 50,
         "examples": [{"prompt": "1+2=", "completion": "3", "score": 1.0}]},
        {"model": "solve.model", "score": 0.61, "rows": 50, "examples": []}]}))
    return root


def test_report_draws_every_stage_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = make_run(tmp_path / "run")
    assert tnx("report", [str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run / 'report.md'}"
    for png in ("base.png", "solve.png", "eval_accuracy.png"):
        data = (run / "plots" / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, png
    report = (run / "report.md").read_text()
    assert report.startswith("# run demo")
    assert "| base | pretrain | 40 | 3.307 | 0.7085 | 12.5 | 2,048 | finished |" in report
    assert "| solve | grpo | 12/30 |" in report and "running or interrupted" in report
    assert "![base](plots/base.png)" in report and "![solve](plots/solve.png)" in report
    assert "![eval accuracy](plots/eval_accuracy.png)" in report
    assert "| base.model | 0.42 | 50 |" in report and "| solve.model | 0.61 | 50 |" in report
    # held-out loss of the finished stage; the RL curves of the running one
    assert "| loss | 3.307 | 0.7085 | 0.8223 |" in report
    for key in ("reward", "kl_ref", "clip_fraction", "lr"):
        assert f"| {key} |" in report


def test_rl_stage_gets_reward_kl_and_clip_panels() -> None:
    rows = [{"step": 1, "loss": 0.1, "reward": 0.5, "kl": 0.1, "clip_fraction": 0.0, "lr": 1e-4,
             "grad_norm": 2.0}]
    titles = [panel.title for panel, _ in panels_for(rows)]
    assert titles == ["loss", "reward", "KL", "clip fraction", "learning rate"]
    assert [key for _, key in panels_for(rows)][2] == "kl"  # kl_ref absent: distill's `kl`


def test_agent_stage_adds_tool_success_and_turns_panels() -> None:
    rows = [{"step": 1, "loss": 0.1, "reward": 1.2, "agent/tool_success": 0.8, "agent/turns": 1.9,
             "agent/tool_latency": 0.05, "lr": 1e-4}]
    titles = [panel.title for panel, _ in panels_for(rows)]
    assert titles == ["loss", "reward", "episodes with a working tool call", "turns per episode",
                      "learning rate"]


def test_not_a_run_directory_is_a_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert tnx("report", [str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no readable plan.json" in err and "Traceback" not in err


def test_report_verb_never_imports_jax(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    code = ("import sys; from tunix_dsl.cli import main; rc = main(['report', sys.argv[1]]); "
            "assert 'jax' not in sys.modules, 'jax imported'; raise SystemExit(rc)")
    done = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr

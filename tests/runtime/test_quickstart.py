"""The README's main job, `examples/quickstart.tnx`, scaled down to a few steps per stage.

The file itself runs (only `--set` changes it): every stage writes its metrics,
the eval block scores the starting model and every stage's model, the report
has its plots, the HF export loads in transformers, and running the same
command again trains nothing and prints the same eval table.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from tunix_dsl.runtime.cli_commands import main as tnx

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.tnx"
# Every stage takes one step: the file writes steps as `max(1, round(N * scale))`.
SMALL = ["--set", "scale=0.001"]
STAGES = ["base", "tune", "prefer", "solve", "shrink"]
MODELS = ["tiny", "base.model", "tune.model", "prefer.model", "solve.model", "shrink.model"]
PNG = b"\x89PNG\r\n\x1a\n"


def eval_rows(output: str) -> list[list[str]]:
    """The rows of the terminal's `eval accuracy` table (plain output: aligned columns)."""
    lines = output.splitlines()
    start = lines.index("eval accuracy") + 2  # title, header
    return [line.split() for line in lines[start:start + len(MODELS)]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(run directory, output of the first run, output of the second run)."""
    work = tmp_path_factory.mktemp("quickstart")
    shutil.copy(QUICKSTART, work / "quickstart.tnx")
    outputs = []
    for _ in range(2):
        stream = io.StringIO()
        with redirect_stdout(stream):
            code = tnx("run", [str(work / "quickstart.tnx"), *SMALL, "--run-dir", str(work / "run")])
        assert code == 0, stream.getvalue()[-3000:]
        outputs.append(stream.getvalue())
    return work / "run", outputs[0], outputs[1]


def test_every_stage_logs_metrics(runs: tuple[Path, str, str]) -> None:
    run_dir = runs[0]
    for stage in STAGES:
        rows = [json.loads(line) for line in (run_dir / "stages" / stage / "metrics.jsonl").open()]
        assert rows and all(r["step"] >= 1 for r in rows), stage
        assert (run_dir / "stages" / stage / "output" / "tnx_finished.json").exists()


def test_eval_scores_the_start_and_every_stage(runs: tuple[Path, str, str]) -> None:
    run_dir, first, _ = runs
    evals = json.loads((run_dir / "evals.json").read_text())["accuracy"]
    assert [r["model"] for r in evals] == MODELS
    assert all(r["rows"] == 500 and 0.0 <= r["score"] <= 1.0 for r in evals)
    # the terminal ends with the same table, before the report's path
    table = eval_rows(first)
    assert [row[0] for row in table] == MODELS
    assert [float(row[1]) for row in table] == pytest.approx([r["score"] for r in evals], abs=1e-4)
    assert first.rstrip().splitlines()[-1] == f"report: {run_dir / 'report.md'}"


def test_report_has_a_plot_per_stage_and_the_eval_chart(runs: tuple[Path, str, str]) -> None:
    run_dir = runs[0]
    report = (run_dir / "report.md").read_text()
    for name in [*STAGES, "eval_accuracy"]:
        assert f"(plots/{name}.png)" in report, name
        assert (run_dir / "plots" / f"{name}.png").read_bytes().startswith(PNG), name
    for model in MODELS:
        assert re.search(rf"^\| {re.escape(model)} \| [0-9.]+ \| 500 \|$", report, re.MULTILINE), model


def test_export_loads_in_transformers(runs: tuple[Path, str, str]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    export = runs[0] / "exports" / "out" / "adder"
    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModelForCausalLM.from_pretrained(export)
    inputs = tok("12+34=", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_second_run_trains_nothing_and_reprints_the_results(runs: tuple[Path, str, str]) -> None:
    run_dir, first, second = runs
    for stage in STAGES:
        assert re.search(rf"^stage {stage} \(\w+\): cached \(fingerprint", second, re.MULTILINE), stage
        assert re.search(rf"^{stage}\s+\S+\s+\d+\s+\S+\s+\S+\s+\S+\s+cached\s*$", second, re.MULTILINE), stage
    assert " step " not in second  # no training step was logged
    assert eval_rows(second) == eval_rows(first)

"""`tnx run` of pretrain → sft (LoRA) → dpo (LoRA, shared reference) → distill.

The pipeline must learn in every stage: the mean loss of the last fifth of
the steps is below that of the first fifth, and the DPO reward margin grows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tunix_dsl.runtime.cli_commands import main as tnx

HERE = Path(__file__).parent


def window_means(rows: list[dict], key: str) -> tuple[float, float]:
    n = max(1, len(rows) // 5)
    return (sum(r[key] for r in rows[:n]) / n, sum(r[key] for r in rows[-n:]) / n)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("supervised")
    shutil.copy(HERE / "supervised_small.tnx", work / "p.tnx")
    assert tnx("run", [str(work / "p.tnx"), "--run-dir", str(work / "run")]) == 0
    return work / "run"


def metrics(run_dir: Path, stage: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stages" / stage / "metrics.jsonl").open()]


@pytest.mark.parametrize("stage", ["base", "tune", "prefer", "shrink"])
def test_loss_falls_in_every_stage(run_dir: Path, stage: str) -> None:
    rows = metrics(run_dir, stage)
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    first, last = window_means(rows, "loss")
    assert last < first, (stage, first, last)


def test_dpo_margin_grows_and_starts_at_log2(run_dir: Path) -> None:
    rows = metrics(run_dir, "prefer")
    # The shared reference is the policy's own base: at step 1 policy == reference.
    assert rows[0]["loss"] == pytest.approx(0.6931472, abs=1e-5)
    first, last = window_means(rows, "rewards/margin")
    assert last > first


def test_every_stage_saves_a_loadable_model(run_dir: Path) -> None:
    from tunix_dsl.models.hf import load_hf

    for stage in ["base", "tune", "prefer", "shrink"]:
        out = run_dir / "stages" / stage / "output"
        assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    model = load_hf(run_dir / "stages" / "tune" / "output")
    # LoRA was merged into the saved weights: plain Dense modules, no adapters.
    from tunix_dsl.models.lora import lora_modules

    assert lora_modules(model) == []


def test_malformed_jsonl_row_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = ['{"prompt": "1+1=", "completion": "2"}', '{"prompt": "2+2=", "completion": 4}']
    (tmp_path / "d.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "p.tnx").write_text(
        'pipeline bad { seed = 0 }\n'
        'tokenizer t = bytes()\n'
        'model m = transformer(preset = "pico", tokenizer = t)\n'
        'dataset d = jsonl("d.jsonl", prompt = "prompt", completion = "completion")\n'
        'stage s: sft { model = m\n data = d\n steps = 2\n batch_size = 2 }\n'
    )
    code = tnx("run", [str(tmp_path / "p.tnx"), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1
    assert "d.jsonl:2:" in err and "Traceback" not in err


def test_eval_block_scores_models_and_exports_are_written(run_dir: Path) -> None:
    evals = json.loads((run_dir / "evals.json").read_text())
    scores = {r["model"]: r for r in evals["accuracy"]}
    assert set(scores) == {"base.model", "shrink.model"}
    for result in scores.values():
        assert result["rows"] == 40 and 0.0 <= result["score"] <= 1.0
        assert result["examples"] and "completion" in result["examples"][0]
    # base has learned one-digit sums well enough to get some right after 150 steps
    assert scores["base.model"]["score"] > 0.0
    assert "## eval accuracy" in (run_dir / "report.md").read_text()
    exports = run_dir / "exports"  # relative destinations follow --run-dir
    assert (exports / "out" / "shrink" / "config.json").exists()
    assert not (run_dir.parent / "out").exists()
    adapter = exports / "out" / "tune_adapter"
    assert adapter.is_dir() and any(adapter.iterdir())

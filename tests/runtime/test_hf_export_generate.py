"""An exported `bytes()`-tokenizer model generates in transformers what tnx's own eval generated.

The plain calls a user makes — `pipeline("text-generation")` and `AutoTokenizer` + `generate` —
must see the sequence the model was trained on (bos first) and stop where tnx stops.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunix_dsl.runtime.cli_commands import main as tnx

PIPELINE = """
pipeline hfout { seed = 0 }
tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars)
dataset sums = synthetic("addition", digits = 1, count = 500, seed = 1)
stage base: pretrain {
  model = tiny
  data = sums
  steps = 40
  batch_size = 16
  max_seq_len = 16
  optimizer = adamw(lr = 1e-2, warmup = 5)
}
reward correct = exact_match(field = "answer")
eval accuracy {
  models = [base.model]
  data = sums
  metric = correct
  max_new_tokens = 3
  limit = 8
  batch_size = 8
}
export base.model to "out/base" as "hf"
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    work = tmp_path_factory.mktemp("hfout")
    (work / "p.tnx").write_text(PIPELINE)
    assert tnx("run", [str(work / "p.tnx"), "--run-dir", str(work / "run")]) == 0
    evals = json.loads((work / "run" / "evals.json").read_text())
    examples = evals["accuracy"][0]["examples"]
    assert len(examples) == 3
    assert all(e["completion"] for e in examples)  # an empty completion would match anything
    return work / "run" / "exports" / "out" / "base", examples


def test_pipeline_text_generation_matches_tnx_eval(exported: tuple[Path, list[dict]]) -> None:
    from transformers import pipeline

    directory, examples = exported
    generate = pipeline("text-generation", model=str(directory), device="cpu")
    for example in examples:
        out = generate(example["prompt"], max_new_tokens=3, do_sample=False,
                       return_full_text=False)
        assert out[0]["generated_text"] == example["completion"], example


def test_tokenizer_and_generate_match_tnx_eval(exported: tuple[Path, list[dict]]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, examples = exported
    tok = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    for example in examples:
        inputs = tok(example["prompt"], return_tensors="pt")
        assert inputs["input_ids"][0, 0].item() == tok.bos_token_id  # trained with bos first
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        completion = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        assert completion == example["completion"], example


def test_run_ends_with_a_report_and_its_plots(exported: tuple[Path, list[dict]]) -> None:
    run = exported[0].parents[2]
    report = (run / "report.md").read_text()
    assert "![base](plots/base.png)" in report and "![eval accuracy](plots/eval_accuracy.png)" in report
    assert "| base | pretrain | 40 |" in report and "| base.model |" in report
    for png in ("base.png", "eval_accuracy.png"):
        assert (run / "plots" / png).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

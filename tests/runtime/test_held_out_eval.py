"""`eval_every` + `eval_data`: held-out metrics equal a direct forward over the whole eval set."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from tunix_dsl.data.datasets import synthetic_rows
from tunix_dsl.data.tokenizers import ByteTokenizer
from tunix_dsl.models.hf import load_hf
from tunix_dsl.runtime.cli_commands import main as tnx
from tunix_dsl.runtime.data import tokenize_rows

PIPELINE = """
pipeline held { seed = 0 }
tokenizer t = bytes()
model m = transformer(preset = "pico", tokenizer = t)
dataset train = synthetic("addition", digits = 1, count = 200, seed = 1)
dataset held  = synthetic("addition", digits = 1, count = 21, seed = 9)
stage s: sft {
  model       = m
  data        = train
  steps       = 10
  batch_size  = 8
  max_seq_len = 16
  eval_every  = 5
  eval_data   = held
  optimizer   = adamw(lr = 1e-2)
}
"""


def test_held_out_loss_matches_a_full_forward(tmp_path: Path) -> None:
    (tmp_path / "p.tnx").write_text(PIPELINE)
    assert tnx("run", [str(tmp_path / "p.tnx"), "--run-dir", str(tmp_path / "run")]) == 0
    stage = tmp_path / "run" / "stages" / "s"
    rows = [json.loads(line) for line in (stage / "eval.jsonl").open()]
    assert [r["step"] for r in rows] == [5, 10]
    # 21 examples in micro-batches of 8: the last batch has 3 filler rows, which must not count.
    tok = ByteTokenizer()
    data = tokenize_rows(synthetic_rows("addition", digits=1, count=21, seed=9), "prompt_completion", tok, 16)
    batch = data.collate(np.arange(len(data)), 16)
    model = load_hf(stage / "output")
    logits = model(jnp.asarray(batch["tokens"]), positions=jnp.asarray(batch["positions"]),
                   attention_mask=jnp.asarray(batch["attention_mask"]))
    logp = np.asarray(logits - jnp.asarray(logits).max(-1, keepdims=True), np.float64)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
    mask = batch["loss_mask"]
    assert rows[-1]["tokens"] == mask.sum()
    assert rows[-1]["loss"] == pytest.approx(float((nll * mask).sum() / mask.sum()), abs=1e-4)

"""`eval NAME { models = [...], data = ..., metric = reward }`: score models by generation.

Each model completes every prompt of the dataset (greedy at temperature 0,
else sampled with a fixed seed), the completions are decoded without special
tokens, and the metric reward scores them against the rows' columns. The
result per model is the mean score over the rows (padding rows of the last
batch are excluded) plus a few example completions for the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from tunix_dsl.data.tokenizers import Tokenizer
from tunix_dsl.models import Transformer
from tunix_dsl.models.sampler import Sampler
from tunix_dsl.runtime.batches import length_buckets, ordered_batches
from tunix_dsl.runtime.data import tokenize_rows
from tunix_dsl.runtime.distributed import host_copy
from tunix_dsl.runtime.rewards import RewardFn, RowName, score_rows


@dataclass
class EvalResult:
    model: str
    score: float  # mean metric over the rows
    rows: int
    examples: list[dict[str, Any]] = field(default_factory=list)  # first few (prompt, completion, score)


def completions_text(tokens: np.ndarray, lengths: np.ndarray, tokenizer: Tokenizer) -> list[str]:
    return [tokenizer.decode(row[:n].tolist(), skip_special=True) for row, n in zip(tokens, lengths, strict=True)]


def evaluate_model(
    name: str,
    model: Transformer,
    tokenizer: Tokenizer,
    rows: Sequence[Mapping[str, Any]],
    metric: RewardFn,
    *,
    max_new_tokens: int,
    temperature: float,
    batch_size: int,
    seed: int,
    examples: int = 3,
    row_name: RowName = lambda row: f"row {row + 1}",  # names a row when the metric fails on it
) -> EvalResult:
    prompt_budget = model.cfg.max_seq_len - max_new_tokens
    if prompt_budget < 2:
        raise ValueError(
            f"eval of `{name}`: max_new_tokens {max_new_tokens} leaves no room for a prompt in the "
            f"model's context of {model.cfg.max_seq_len} tokens"
        )
    data = tokenize_rows(rows, "prompt", tokenizer, prompt_budget, source="eval")
    # The sampler's compiled prefill/decode programs: the one generation path (RL rollouts too).
    sampler = Sampler(model, pad_id=tokenizer.pad_id, stop_ids=tokenizer.stop_ids, seed=seed)
    key = jax.random.key(seed)
    scores: list[np.ndarray] = []
    shown: list[dict[str, Any]] = []
    for i, batch in enumerate(ordered_batches(data, batch_size, length_buckets(prompt_budget))):
        prompts = [row[real].tolist() for row, real in zip(batch["tokens"], batch["attention_mask"], strict=True)]
        out = sampler(prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                      prompt_length=batch["tokens"].shape[1], key=jax.random.fold_in(key, i))
        tokens, lengths = host_copy((out.tokens, out.lengths))
        texts = completions_text(np.asarray(tokens), np.asarray(lengths), tokenizer)
        row_ids = batch["example_ids"]
        chosen = [rows[int(r)] for r in row_ids]
        columns = {c: [row.get(c) for row in chosen] for c in chosen[0]}
        def batch_row(i: int, ids: np.ndarray = row_ids) -> str:  # completion i -> its dataset row
            return row_name(int(ids[i]))

        score = score_rows(metric, [row["prompt"] for row in chosen], texts, np.asarray(lengths), columns,
                           batch_row)
        valid = batch["valid"]
        scores.append(score[valid])
        for row, text, s, ok in zip(chosen, texts, score, valid, strict=True):
            if ok and len(shown) < examples:
                shown.append({"prompt": row["prompt"], "completion": text, "score": float(s)})
    all_scores = np.concatenate(scores)
    return EvalResult(name, float(all_scores.mean()), int(all_scores.size), shown)

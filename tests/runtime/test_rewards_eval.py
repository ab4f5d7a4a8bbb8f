"""Built-in and user rewards; eval scores equal a hand computation over greedy samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from tunix_dsl.data.tokenizers import ByteTokenizer
from tunix_dsl.models import Transformer
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.models.sampler import Sampler
from tunix_dsl.runtime.evaluation import evaluate_model
from tunix_dsl.runtime.rewards import RewardError, build_reward
from tunix_dsl.schemas.sources import (
    ExactMatchReward,
    LengthPenaltyReward,
    PythonReward,
    RegexReward,
)


def call(spec, completions, lengths=None, columns=None, base: Path = Path(".")):
    fn = build_reward(spec, base, "r")
    lengths = np.asarray(lengths if lengths is not None else [len(c) for c in completions])
    return fn(["p"] * len(completions), completions, lengths, columns or {})


def test_exact_match_strips_by_default() -> None:
    scores = call(ExactMatchReward(), [" 46", "47", "46\n"], columns={"answer": ["46", "46", "46"]})
    np.testing.assert_array_equal(scores, [1.0, 0.0, 1.0])
    strict = call(ExactMatchReward(strip=False), [" 46"], columns={"answer": ["46"]})
    np.testing.assert_array_equal(strict, [0.0])


def test_regex_and_token_length_penalty() -> None:
    np.testing.assert_array_equal(call(RegexReward(pattern=r"^\d+$", score=2.0), ["12", "x1"]), [2.0, 0.0])
    # counted in tokens (the lengths array), not characters
    penalty = call(LengthPenaltyReward(target=3, weight=0.5), ["a", "b", "c"], lengths=[2, 3, 7])
    np.testing.assert_allclose(penalty, [0.0, 0.0, -2.0])


def test_python_reward_loads_at_run_time_with_columns(tmp_path: Path) -> None:
    (tmp_path / "r.py").write_text(
        "def fn(prompts, completions, answer):\n"
        "    return [float(c == a) for c, a in zip(completions, answer)]\n"
    )
    spec = PythonReward(target="r.py:fn", columns=["answer"])
    scores = call(spec, ["1", "2"], columns={"answer": ["1", "3"], "other": ["x", "y"]}, base=tmp_path)
    np.testing.assert_array_equal(scores, [1.0, 0.0])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("def fn(p, c, **k):\n    return [1.0]\n", "returned 1 scores for 2 completions"),
        ("def fn(p, c, **k):\n    return ['x', 'y']\n", "must return a list of numbers"),
        ("def fn(p, c, **k):\n    raise KeyError('answer')\n", "raised KeyError"),
        ("def fn(p, c, **k):\n    return [float('nan'), 1.0]\n", "NaN or infinite"),
        ("import nonexistent_module_xyz\n", "importing"),
        ("def other(p, c):\n    return []\n", "has no function `fn`"),
    ],
)
def test_python_reward_errors_name_the_reward(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "r.py").write_text(body)
    with pytest.raises(RewardError, match=message):
        call(PythonReward(target="r.py:fn"), ["1", "2"], base=tmp_path)


def test_eval_score_is_mean_exact_match_of_greedy_completions() -> None:
    tok = ByteTokenizer()
    cfg = ModelConfig.from_preset("pico", tok.vocab_size)
    model = Transformer(cfg, rngs=nnx.Rngs(3))
    rows = [{"prompt": f"{a}+{a}=", "answer": str(2 * a)} for a in range(7)]
    greedy = Sampler(model, pad_id=tok.pad_id, stop_ids=tok.stop_ids, seed=0)
    # The metric: "answer" equals the greedy completion for rows 0, 2, 4 — make it so by
    # building the expected answers from the sampler's own greedy output.
    prompts = [[tok.bos_id, *tok.encode(r["prompt"])] for r in rows]
    out = greedy(prompts, max_new_tokens=4, temperature=0.0)
    texts = [tok.decode(t[:n].tolist()) for t, n in zip(np.asarray(out.tokens), np.asarray(out.lengths), strict=True)]
    for i, row in enumerate(rows):
        row["answer"] = texts[i] if i % 2 == 0 else texts[i] + "!"
    result = evaluate_model(
        "m", model, tok, rows, build_reward(ExactMatchReward(), Path("."), "acc"),
        max_new_tokens=4, temperature=0.0, batch_size=3, seed=0,
    )
    assert result.rows == 7  # the filler rows of the last batch are not scored
    assert result.score == pytest.approx(4 / 7)
    assert [e["completion"] for e in result.examples] == texts[:3]

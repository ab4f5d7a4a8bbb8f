"""The `unpaired` data layout (tokenize + collate) and the `unpaired_addition` rows (numpy only).

A row becomes `bos + prompt + completion + eos` with loss on the completion, plus its label.
A batch holds those sequences, the same prompts each followed by the NEXT row's completion
(`kl_*`, the mismatched pairs KTO's reference point is estimated on) and `label [B]` float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunix_dsl.runtime.data import Batch, ConsumerRules, TokenIds, TokenSeq, right_padded


@dataclass(frozen=True)
class UnpairedExample:
    seq: TokenSeq  # bos + prompt + completion (+ eos), completion weighted 1
    prompt_len: int  # tokens before the completion (bos included)
    label: float  # 1.0 desirable, 0.0 undesirable

    def __len__(self) -> int:
        return len(self.seq)


def _label(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int) and value in (0, 1):
        return float(value)
    raise ValueError(f"`label` must be true/false (or 1/0), found {value!r}")


def tokenize(row: Mapping[str, Any], ids: TokenIds) -> tuple[UnpairedExample | None, bool]:
    prompt, completion = ids.encode(row["prompt"]), [*ids.encode(row["completion"]), ids.eos]
    kept = ids.fit_prompt(prompt, len(completion))
    if kept is None:
        return None, False
    seq = ids.seq(kept, completion)
    return UnpairedExample(seq, len(seq) - len(completion), _label(row["label"])), len(kept) < len(prompt)


def collate(examples: Sequence[Any], length: int, pad: int) -> Batch:
    rows: Sequence[UnpairedExample] = examples
    n = len(rows)
    mismatched = []
    for i, row in enumerate(rows):
        other = rows[(i + 1) % n]
        tokens = np.concatenate([row.seq.tokens[: row.prompt_len],
                                 other.seq.tokens[other.prompt_len:]])[:length]
        weights = np.concatenate([np.zeros(row.prompt_len, np.float32),
                                  other.seq.weights[other.prompt_len:]])[:length]
        mismatched.append(TokenSeq(tokens, weights))
    return {**right_padded([r.seq for r in rows], length, pad),
            **right_padded(mismatched, length, pad, "kl_"),
            "label": np.asarray([r.label for r in rows], np.float32)}


UNPAIRED_RULES = ConsumerRules(tokenize, collate)


def unpaired_addition_rows(spec: Any, base_dir: Path, consumer: str | None = None,
                           required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """`count` rows `a+b=` → a completion, right with probability `desirable_fraction`
    (generated rows always have their four columns: `consumer`, `required` need no check)."""
    rng = np.random.default_rng([spec.seed, spec.digits])
    high = 10 ** spec.digits
    rows = []
    for _ in range(spec.count):
        a, b = (int(x) for x in rng.integers(0, high, size=2))
        right = bool(rng.random() < spec.desirable_fraction)
        if right:
            shown = str(a + b)
        elif spec.undesirable == "near":
            shown = str(a + b + int(rng.integers(1, 10)) * (1 if rng.random() < 0.5 else -1))
        else:  # babble: letters where a number belongs
            shown = "".join(chr(ord("a") + int(i)) for i in rng.integers(0, 26, size=len(str(a + b))))
        rows.append({"prompt": f"{a}+{b}=", "completion": shown, "label": right,
                     "answer": str(a + b)})
    return rows

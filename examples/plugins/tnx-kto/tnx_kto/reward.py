"""The `number_close` reward at run time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def build(spec: Any, base_dir: Path, name: str):
    def score(prompts: Sequence[str], completions: Sequence[str], lengths: Any,
              columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        out = []
        for completion, expected in zip(completions, columns[spec.field], strict=True):
            got, want = _number(completion), _number(str(expected))
            out.append(float(got is not None and want is not None
                             and abs(got - want) <= spec.tolerance))
        return np.asarray(out, np.float32)

    return score

"""A local plugin: `plugins = ["my_rewards.py"]` in a pipeline block adds the `contains` reward.

The file is imported by `tnx lint` for its schema, so it stays light (no jax, numpy only
inside the scoring function that `tnx run` builds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from tunix_dsl.schemas.sources import RewardSchema


class ContainsReward(RewardSchema):
    """`score` when the completion contains `text`, else 0.0."""

    call_name = "contains"
    positional = ("text",)
    implementation = "./my_rewards.py:build"  # relative to this file, imported by `tnx run`
    text: str = Field(min_length=1, description="substring looked for in the completion")
    score: float = Field(1.0, description="reward when it is found")


def build(spec: ContainsReward, base_dir: Path, name: str):
    import numpy as np

    def score(prompts: Sequence[str], completions: Sequence[str], lengths: Any,
              columns: Mapping[str, Sequence[Any]]) -> Any:
        return np.asarray([spec.score if spec.text in c else 0.0 for c in completions], np.float32)

    return score


TNX_PLUGIN = {"tunix_dsl.rewards": [ContainsReward]}

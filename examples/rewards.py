"""Example reward functions for `reward NAME = python("rewards.py:FUNCTION")`.

Called at run time as `fn(prompts, completions, **columns) -> list[float]`.
"""

from __future__ import annotations


def score(prompts: list[str], completions: list[str], **columns: list[str]) -> list[float]:
    """1.0 for a completion that is only digits (a well-formed sum), else 0.0."""
    return [1.0 if c.strip().isdigit() else 0.0 for c in completions]

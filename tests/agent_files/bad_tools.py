"""Deliberately unusable tools and environments: lint rule examples (TNX511, TNX513)."""


def total(*values: int) -> int:
    """Sum numbers: `*values` has no name the model could pass."""
    return sum(values)


class Silent:
    """An environment without `step`."""

    def reset(self, row: dict[str, str]) -> str:
        return ""

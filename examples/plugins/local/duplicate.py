"""A plugin that registers a reward name the tool already has (`exact_match`): TNX011."""

from tunix_dsl.schemas.sources import RewardSchema


class MyExactMatch(RewardSchema):
    """Another `exact_match`."""

    call_name = "exact_match"


TNX_PLUGIN = {"tunix_dsl.rewards": [MyExactMatch]}

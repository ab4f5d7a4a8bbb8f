"""A plugin whose reward does not derive from `RewardSchema`: TNX012."""

from pydantic import BaseModel


class Shout(BaseModel):
    call_name: str = "shout"


TNX_PLUGIN = {"tunix_dsl.rewards": [Shout]}

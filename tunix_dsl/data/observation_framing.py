"""The chat-template text around an observation in a multi-turn episode (jax-free).

`runtime/agent_rollout.py` frames every observation with it; lint (TNX528) sizes the
framing against `max_observation_tokens` for tokenizers it can build without files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tunix_dsl.data.tokenizers import Tokenizer


class FramingError(ValueError):
    """A chat template that cannot frame an observation after an assistant turn."""


_MARK, _BODY = "\x00TNX-TURN\x00", "\x00TNX-OBSERVATION\x00"


@dataclass(frozen=True)
class ObservationFraming:
    """Text around an observation, after a model turn: `end_of_turn`, then `before +
    observation + after`.

    `end_of_turn` is what the template writes after an assistant message's content; the
    tokens of a chat SFT transcript add eos to it when the template writes no stop token
    (`runtime/chat_data.py`), and `AgentRollout` does the same, so an episode reads like
    the transcripts the model was taught on."""

    end_of_turn: str
    before: str
    after: str

    @classmethod
    def of(cls, tokenizer: Tokenizer, role: str,
           tools: Sequence[Mapping[str, Any]] | None = None) -> ObservationFraming:
        """Read from the chat template: what follows an assistant message when a `role`
        message and the generation prompt come next (rendered with the prompts' `tools`)."""
        user = {"role": "user", "content": "?"}
        alone = tokenizer.apply_chat_template([user, {"role": "assistant", "content": _MARK}],
                                              tools=tools)
        then = tokenizer.apply_chat_template(
            [user, {"role": "assistant", "content": _MARK}, {"role": role, "content": _BODY}],
            add_generation_prompt=True, tools=tools)
        end = alone.index(_MARK) + len(_MARK)
        end_of_turn = alone[end:]
        if not then.startswith(alone) or _BODY not in then:
            raise FramingError(f"the chat template does not render a `{role}` message after "
                               "an assistant turn; declare `tool_format` or use a template "
                               "with tool messages")
        body = then.index(_BODY)
        return cls(end_of_turn, then[end + len(end_of_turn):body], then[body + len(_BODY):])

    def ids(self, tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
        """(tokens before the observation, tokens after it): the turn's end (with eos when the
        template writes no stop token, as a chat transcript's reply ends, `chat_data.py`) and
        `before`; then `after`."""
        turn_end = tokenizer.encode(self.end_of_turn)
        if tokenizer.eos_id is not None and not set(turn_end) & set(tokenizer.stop_ids):
            turn_end.append(tokenizer.eos_id)
        return turn_end + tokenizer.encode(self.before), tokenizer.encode(self.after)

"""Conversations to tokens with exact assistant masks, through the tokenizer's chat template.

A conversation is rendered once, whole, by the tokenizer's template (HF ``chat_template`` via
jinja2, or the byte tokenizer's built-in one). The text is then cut at the boundaries of each
assistant turn: turn ``i`` starts where ``render(messages[:i], add_generation_prompt=True)``
ends and stops where ``render(messages[:i + 1])`` ends. Both renders must be prefixes of the
whole one; a template that renders an earlier turn differently once the conversation goes on
(Qwen3's drops past ``<think>`` blocks) cannot give exact masks, and the row is refused with
that reason. Each piece is encoded on its own, so no token straddles a mask boundary, and an
assistant piece that holds no stop token gets the tokenizer's eos (the byte template writes
none), so the model learns to end its turn.

Loss falls on every assistant piece (with its end-of-turn tokens), on nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tunix_dsl.data.messages import assistant_turns, preference_parts

Render = Callable[[Sequence[Mapping[str, Any]], bool], str]


class ChatError(ValueError):
    """A conversation the template cannot turn into exact training tokens; says why."""


@dataclass(frozen=True)
class ChatCodec:
    """What chat tokenisation needs from a tokenizer."""

    encode: Callable[[str], list[int]]  # no special tokens added (those in the text are kept)
    render: Render
    bos: int | None
    eos: int
    stop_ids: frozenset[int]

    def pieces(self, text: str) -> list[int]:
        """Tokens of rendered text; a bos the template wrote itself is dropped (the sequence
        builder adds bos once, as for plain text)."""
        ids = self.encode(text)
        return ids[1:] if ids and self.bos is not None and ids[0] == self.bos else ids

    def reply(self, text: str) -> list[int]:
        """Tokens of an assistant piece, ending in eos unless the template wrote a stop token."""
        ids = self.encode(text)
        return ids if self.stop_ids & set(ids) else [*ids, self.eos]


def _prefix_end(full: str, part: str, what: str) -> int:
    if not full.startswith(part):
        raise ChatError(f"the chat template renders {what} differently inside the whole "
                        "conversation, so assistant masks would not be exact; give each row a "
                        "single assistant turn or use a template that keeps earlier turns as is")
    return len(part)


def sft_tokens(messages: Sequence[Mapping[str, Any]], codec: ChatCodec) -> tuple[list[int], list[float]]:
    """(tokens, weights) of a conversation without bos; weight 1 on every assistant turn."""
    full = codec.render(messages, False)
    tokens: list[int] = []
    weights: list[float] = []
    pos = 0
    for i in assistant_turns(messages):
        start = _prefix_end(full, codec.render(messages[:i], True), f"the turns before message {i}")
        end = _prefix_end(full, codec.render(messages[: i + 1], False), f"message {i}")
        if start < pos or end < start:
            raise ChatError(f"the chat template's render of message {i} overlaps the turn before it")
        context = codec.pieces(full[pos:start]) if pos == 0 else codec.encode(full[pos:start])
        reply = codec.reply(full[start:end])
        tokens += [*context, *reply]
        weights += [0.0] * len(context) + [1.0] * len(reply)
        pos = end
    tail = codec.encode(full[pos:])  # whatever the template writes after the last turn
    return [*tokens, *tail], [*weights, *[0.0] * len(tail)]


def prompt_tokens(prompt: Sequence[Mapping[str, Any]], codec: ChatCodec) -> list[int]:
    """Tokens of a conversation to be answered: rendered with the generation prompt."""
    return codec.pieces(codec.render(prompt, True))


def preference_tokens(row: Mapping[str, Any], codec: ChatCodec) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen reply, rejected reply) tokens of a conversational preference row."""
    prompt, chosen, rejected = preference_parts(row)
    head = codec.render(prompt, True)
    replies = []
    for reply in (chosen, rejected):
        whole = codec.render([*prompt, *reply], False)
        start = _prefix_end(whole, head, "the prompt")
        replies.append(codec.reply(whole[start:]))
    return codec.pieces(head), replies[0], replies[1]

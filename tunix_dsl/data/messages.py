"""Conversations as data: the shape of a `messages` column, checked without any dependency.

A conversation is a list of ``{"role": str, "content": str}`` objects, as Hugging Face chat
datasets and chat templates spell it. SFT reads a ``messages`` column and trains on every
assistant turn; DPO/ORPO read ``chosen`` and ``rejected`` either as strings (with a string
``prompt``) or as conversations that share everything but their last, assistant, message
(with an optional ``prompt`` conversation before both).

jax-free and import-light: the checker uses it on the rows it peeks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

Conversation = list[dict[str, Any]]

# Columns that may hold a conversation instead of a string; `messages` must hold one.
CONVERSATION_COLUMNS: frozenset[str] = frozenset({"messages", "prompt", "chosen", "rejected"})
ROLES = ("system", "user", "assistant", "tool")


def is_conversation(value: Any) -> bool:
    return isinstance(value, list)


def conversation_problem(value: Any) -> str | None:
    """Why ``value`` is not a conversation (a non-empty list of role/content objects), or None."""
    if not isinstance(value, list):
        return f"expected a list of {{role, content}} messages, got {_type_name(value)}"
    if not value:
        return "the conversation has no messages"
    for n, message in enumerate(value):
        if not isinstance(message, Mapping):
            return f"message {n} must be an object with role and content, got {_type_name(message)}"
        for key in ("role", "content"):
            if key not in message:
                return f"message {n} has no {key!r} (keys: {', '.join(sorted(map(str, message)))})"
            if not isinstance(message[key], str):
                return f"message {n}: {key!r} must be a string, got {_type_name(message[key])}"
    return None


def assistant_turns(messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """Indices of the assistant messages: the turns SFT trains on."""
    return [i for i, m in enumerate(messages) if m.get("role") == "assistant"]


def sft_problem(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a conversation cannot train SFT (no assistant turn to learn), or None."""
    if not assistant_turns(messages):
        return "the conversation has no assistant message to train on"
    return None


def preference_parts(row: Mapping[str, Any]) -> tuple[Conversation, Conversation, Conversation]:
    """(prompt, chosen reply, rejected reply) of a conversational preference row.

    The prompt is the row's ``prompt`` conversation, followed by whatever ``chosen`` and
    ``rejected`` share before their last message; each reply is that last message, which
    must come from the assistant. Raises ValueError with the reason otherwise.
    """
    prompt = list(row.get("prompt") or [])
    chosen, rejected = list(row["chosen"]), list(row["rejected"])
    if chosen[:-1] != rejected[:-1]:
        raise ValueError("chosen and rejected conversations must differ only in their last message")
    for name, conversation in (("chosen", chosen), ("rejected", rejected)):
        if conversation[-1].get("role") != "assistant":
            raise ValueError(f"the last message of {name!r} must be the assistant's, "
                             f"got role {conversation[-1].get('role')!r}")
    return [*prompt, *chosen[:-1]], [chosen[-1]], [rejected[-1]]


def value_problem(column: str, value: Any) -> str | None:
    """Why a canonical column's value has the wrong shape, or None.

    ``messages`` holds a conversation; ``prompt``, ``chosen`` and ``rejected`` hold a string or
    a conversation (the conversation forms are read by preference data); the rest hold strings.
    """
    if column == "messages":
        return conversation_problem(value)
    if column in CONVERSATION_COLUMNS and is_conversation(value):
        problem = conversation_problem(value)
        return None if problem is None else f"must be a string or a conversation ({problem})"
    if value is None:
        return "must be a string, got null"
    if not isinstance(value, str):
        shown = json.dumps(value, default=str)[:40]
        return f"must be a string, got {_type_name(value)} {shown}"
    return None


def row_problem(row: Mapping[str, Any], consumer: str, columns: Sequence[str]) -> str | None:
    """Why a row whose values have the right shapes still cannot feed ``consumer`` reading
    ``columns`` (its accepted column set), or None."""
    if consumer == "prompt_completion" and columns == ("messages",):
        return sft_problem(row["messages"])
    if consumer in ("prompt_completion", "lm"):
        wrong = next((c for c in columns if not isinstance(row[c], str)), None)
        return None if wrong is None else f"column {wrong!r} must be a string for {consumer} data"
    if consumer == "preference":
        pair = [is_conversation(row["chosen"]), is_conversation(row["rejected"])]
        if pair[0] != pair[1]:
            return "chosen and rejected must both be strings or both be conversations"
        if not pair[0]:
            if not isinstance(row.get("prompt"), str):
                return "string chosen/rejected need a string prompt column"
            return None
        if "prompt" in row and not is_conversation(row["prompt"]):
            return "with conversations as chosen/rejected, prompt must be a conversation too"
        try:
            preference_parts(row)
        except ValueError as err:
            return str(err)
    return None


def _type_name(value: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string",
             list: "array", dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)

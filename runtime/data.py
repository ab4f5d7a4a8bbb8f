"""Rows -> token examples -> padded, bucketed numpy batches in a resumable order.

Numpy only (no jax): the compiled step programs take these arrays as inputs.

Tokenisation, per consumer (``tunix_dsl.data.datasets.CONSUMERS``); ``bos`` is left
out when the tokenizer has none, and the eos id always ends a completion:

- ``lm``: ``bos + text + eos`` (``text`` or else ``prompt + completion``); loss
  on every token after bos. Too long: cut from the right (keep the beginning).
- ``prompt_completion``: ``bos + prompt + completion + eos``; loss on
  completion and eos only. A ``messages`` conversation instead: ``bos +`` the
  chat template's rendering, loss on every assistant turn (``chat_data.py``);
  too long: cut from the right, dropped when no assistant token is left.
- ``preference``: ``bos + prompt + chosen + eos`` and ``bos + prompt + rejected
  + eos``; loss on each completion and eos. Conversations as chosen/rejected:
  the shared turns rendered as the prompt, each last (assistant) message as
  the completion.
- ``prompt``: ``bos + prompt``, left-padded, for generation; no loss. A
  conversation is rendered with the template's generation prompt.

Truncation keeps the completion whole and cuts the prompt from the left (the
end of a prompt is what the completion follows). A row whose completion(s)
alone do not fit, leaving no prompt token, is dropped. Both are counted in
``TokenizedData.truncated`` / ``.dropped``. Prompt and completion are encoded
separately, so the loss-mask boundary is exact for every tokenizer.

Batching these examples in a resumable order is ``runtime/batches.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunix_dsl.data.datasets import CONSUMERS, DataError
from tunix_dsl.data.messages import is_conversation
from tunix_dsl.data.row_tools import TOOLS_COLUMN, offered
from tunix_dsl.data.tokenizers import Tokenizer, TokenizerError
from tunix_dsl.runtime.chat_data import (
    ChatCodec,
    ChatError,
    preference_tokens,
    prompt_tokens,
    sft_tokens,
)

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class TokenSeq:
    """One token sequence; ``weights[i]`` is 1 where token i is trained as a target."""

    tokens: np.ndarray  # [L] int32
    weights: np.ndarray  # [L] float32

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class PreferencePair:
    chosen: TokenSeq
    rejected: TokenSeq

    def __len__(self) -> int:
        return max(len(self.chosen), len(self.rejected))


Example = TokenSeq | PreferencePair


@dataclass(frozen=True)
class TokenIds:
    """A tokenizer's ids resolved once, plus the length limit."""

    encode: Callable[[str], list[int]]
    bos: list[int]
    eos: int
    max_len: int
    chat: ChatCodec  # conversations (`messages`, conversational prompt/chosen/rejected)

    def seq(self, prompt: list[int], completion: list[int]) -> TokenSeq:
        tokens = [*self.bos, *prompt, *completion]
        weights = [0.0] * (len(self.bos) + len(prompt)) + [1.0] * len(completion)
        return TokenSeq(np.asarray(tokens, np.int32), np.asarray(weights, np.float32))

    def fit_prompt(self, prompt: list[int], longest_completion: int) -> list[int] | None:
        """The prompt cut from the left to fit; None when not even one prompt token fits."""
        budget = self.max_len - len(self.bos) - longest_completion
        if budget < min(len(prompt), 1):
            return None
        return prompt[len(prompt) - budget:] if len(prompt) > budget else prompt


# A consumer's tokenize turns a row into (example or None when dropped, truncated?).
_RowTokenizer = Callable[[Mapping[str, Any], TokenIds], tuple[Example | None, bool]]


def _tokenize_lm(row: Mapping[str, Any], ids: TokenIds) -> tuple[Example | None, bool]:
    text = row["text"] if "text" in row else row["prompt"] + row["completion"]
    seq = ids.seq([], [*ids.encode(text), ids.eos])
    if len(seq) <= ids.max_len:
        return seq, False
    return TokenSeq(seq.tokens[: ids.max_len], seq.weights[: ids.max_len]), True


def _tokenize_chat(row: Mapping[str, Any], ids: TokenIds) -> tuple[Example | None, bool]:
    """Every assistant turn trained; too long: cut from the right, dropped when no assistant
    token is left."""
    tokens, weights = sft_tokens(row["messages"], ids.chat)
    seq = TokenSeq(np.asarray([*ids.bos, *tokens], np.int32),
                   np.asarray([0.0] * len(ids.bos) + weights, np.float32))
    if len(seq) <= ids.max_len:
        return seq, False
    cut = TokenSeq(seq.tokens[: ids.max_len], seq.weights[: ids.max_len])
    return (cut, True) if cut.weights.any() else (None, False)


def _tokenize_prompt_completion(row: Mapping[str, Any], ids: TokenIds) -> tuple[Example | None, bool]:
    if CONSUMERS["prompt_completion"].read_columns(row) == ("messages",):
        return _tokenize_chat(row, ids)
    prompt, completion = ids.encode(row["prompt"]), [*ids.encode(row["completion"]), ids.eos]
    kept = ids.fit_prompt(prompt, len(completion))
    if kept is None:
        return None, False
    return ids.seq(kept, completion), len(kept) < len(prompt)


def _tokenize_preference(row: Mapping[str, Any], ids: TokenIds) -> tuple[Example | None, bool]:
    if is_conversation(row["chosen"]):
        prompt, chosen, rejected = preference_tokens(row, ids.chat)
    else:
        prompt = ids.encode(row["prompt"])
        chosen = [*ids.encode(row["chosen"]), ids.eos]
        rejected = [*ids.encode(row["rejected"]), ids.eos]
    # One cut for both, so the pair shares exactly the same prompt tokens.
    kept = ids.fit_prompt(prompt, max(len(chosen), len(rejected)))
    if kept is None:
        return None, False
    return PreferencePair(ids.seq(kept, chosen), ids.seq(kept, rejected)), len(kept) < len(prompt)


def _tokenize_prompt(row: Mapping[str, Any], ids: TokenIds) -> tuple[Example | None, bool]:
    conversation = is_conversation(row["prompt"])
    prompt = prompt_tokens(row["prompt"], ids.chat) if conversation else ids.encode(row["prompt"])
    kept = ids.fit_prompt(prompt, 0)
    if kept is None:
        return None, False
    return ids.seq(kept, []), len(kept) < len(prompt)


def right_padded(seqs: Sequence[TokenSeq], length: int, pad: int, prefix: str = "") -> Batch:
    """Right-pad to ``length``; targets and loss mask shifted left by one."""
    n = len(seqs)
    tokens = np.full((n, length), pad, np.int32)
    weights = np.zeros((n, length), np.float32)
    attention = np.zeros((n, length), bool)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s.tokens
        weights[i, : len(s)] = s.weights
        attention[i, : len(s)] = True
    targets = np.full((n, length), pad, np.int32)
    targets[:, :-1] = tokens[:, 1:]
    loss_mask = np.zeros((n, length), np.float32)
    loss_mask[:, :-1] = weights[:, 1:]
    positions = np.broadcast_to(np.arange(length, dtype=np.int32), (n, length)).copy()
    return {f"{prefix}tokens": tokens, f"{prefix}targets": targets, f"{prefix}loss_mask": loss_mask,
            f"{prefix}attention_mask": attention, f"{prefix}positions": positions}


def _collate_seqs(examples: Sequence[Example], length: int, pad: int) -> Batch:
    return right_padded(examples, length, pad)  # type: ignore[arg-type]


def _collate_pairs(examples: Sequence[Example], length: int, pad: int) -> Batch:
    pairs: Sequence[PreferencePair] = examples  # type: ignore[assignment]
    return {**right_padded([p.chosen for p in pairs], length, pad, "chosen_"),
            **right_padded([p.rejected for p in pairs], length, pad, "rejected_")}


def _collate_prompts(examples: Sequence[Example], length: int, pad: int) -> Batch:
    """Left-pad so every prompt ends at the last column, where generation starts."""
    n = len(examples)
    tokens = np.full((n, length), pad, np.int32)
    attention = np.zeros((n, length), bool)
    for i, s in enumerate(examples):
        tokens[i, length - len(s):] = s.tokens  # type: ignore[union-attr]
        attention[i, length - len(s):] = True
    positions = np.maximum(np.cumsum(attention, axis=1, dtype=np.int32) - 1, 0)
    return {"tokens": tokens, "attention_mask": attention, "positions": positions}


@dataclass(frozen=True)
class ConsumerRules:
    """How a data layout becomes arrays: `tokenize(row, ids) -> (example or None, truncated)`
    and `collate(examples, length, pad) -> batch` (a plugin layout supplies its own)."""

    tokenize: _RowTokenizer
    collate: Callable[[Sequence[Example], int, int], Batch]


CONSUMER_RULES: dict[str, ConsumerRules] = {
    "lm": ConsumerRules(_tokenize_lm, _collate_seqs),
    "prompt_completion": ConsumerRules(_tokenize_prompt_completion, _collate_seqs),
    "preference": ConsumerRules(_tokenize_preference, _collate_pairs),
    "prompt": ConsumerRules(_tokenize_prompt, _collate_prompts),
}


def consumer_rules(consumer: str) -> ConsumerRules:
    """A data layout's tokenize/collate rules: built in, or the `ConsumerRules` a plugin's
    layout names lazily (`ConsumerInfo.rules = "module:attr"`)."""
    if consumer in CONSUMER_RULES:
        return CONSUMER_RULES[consumer]
    info = CONSUMERS.get(consumer)
    if info is None or not info.rules:
        raise ValueError(f"unknown consumer {consumer!r}; known: {', '.join(CONSUMERS)}")
    from tunix_dsl.schemas.kinds import load_reference

    rules = load_reference(info.rules)
    if not isinstance(rules, ConsumerRules):
        raise TypeError(f"data layout {consumer!r}: `{info.rules}` is not a ConsumerRules")
    return rules


@dataclass
class TokenizedData:
    """A dataset tokenised for one consumer; ``row_ids[i]`` is example i's source row."""

    consumer: str
    examples: list[Example]
    row_ids: np.ndarray  # [N] int64
    lengths: np.ndarray  # [N] int64, the longest sequence of each example
    pad_id: int
    max_len: int
    rows: int
    truncated: int = 0
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.examples)

    def collate(self, indices: np.ndarray, length: int) -> Batch:
        """The examples at ``indices`` padded to ``length``, with their ``example_ids``."""
        collate = consumer_rules(self.consumer).collate
        batch = collate([self.examples[i] for i in indices], length, self.pad_id)
        batch["example_ids"] = self.row_ids[indices]
        return batch

    def summary(self) -> str:
        return (f"{self.rows} rows -> {len(self)} {self.consumer} examples (max_len {self.max_len}): "
                f"{self.truncated} truncated (prompt cut from the left), "
                f"{self.dropped} dropped (completion alone longer than max_len)")


def tokenize_rows(
    rows: Sequence[Mapping[str, Any]], consumer: str, tokenizer: Tokenizer, max_len: int,
    source: str = "dataset", tools: Sequence[Mapping[str, Any]] | None = None,
) -> TokenizedData:
    """Tokenise ``rows`` for ``consumer`` with sequences of at most ``max_len`` tokens;
    conversations are rendered with ``tools`` (JSON schemas) as the chat template's `tools`,
    narrowed by a row's own `tools` column to the ones it names (`data/row_tools.py`)."""
    if tokenizer.eos_id is None:
        raise ValueError("the tokenizer has no eos id; completions need one to end")
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    bos = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
    if max_len < len(bos) + 2:
        raise ValueError(f"max_len {max_len} is too short for a sequence")
    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_bos=False)

    def token_ids(offered: Sequence[Mapping[str, Any]] | None) -> TokenIds:
        chat = ChatCodec(encode, lambda messages, generation: tokenizer.apply_chat_template(
            messages, add_generation_prompt=generation, tools=offered or None), tokenizer.bos_id,
            tokenizer.eos_id, frozenset(tokenizer.stop_ids))
        return TokenIds(encode, bos, tokenizer.eos_id, max_len, chat)

    ids = token_ids(tools)
    rules, info = consumer_rules(consumer), CONSUMERS[consumer]
    examples: list[Example] = []
    row_ids: list[int] = []
    truncated = dropped = 0
    for i, row in enumerate(rows):
        missing = info.missing(row)
        if missing:
            raise DataError(source, None, f"row {i + 1} has no column {missing[0]!r}, which "
                            f"{consumer} data needs ({', '.join(info.required)})")
        try:
            row_ids_of = ids  # a row's own `tools` narrows what its conversation lists
            if tools is not None and row.get(TOOLS_COLUMN) is not None:
                row_ids_of = token_ids(offered(row, tools))
            example, cut = rules.tokenize(row, row_ids_of)
        except (ChatError, TokenizerError, ValueError) as err:  # a conversation the template refuses
            raise DataError(source, None, f"row {i + 1}: {err}") from None
        if example is None:
            dropped += 1
            continue
        truncated += cut
        examples.append(example)
        row_ids.append(i)
    if not examples:
        raise DataError(source, None, f"all {len(rows)} rows are longer than max_len {max_len} "
                        "without their prompt; raise max_seq_len or shorten the completions")
    return TokenizedData(consumer, examples, np.asarray(row_ids, np.int64),
                         np.asarray([len(e) for e in examples], np.int64), pad, max_len,
                         len(rows), truncated, dropped)

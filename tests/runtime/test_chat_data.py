"""Conversations (`messages`) to tokens: loss on exactly the assistant turns, multi-turn.

The expected sequences are written out by hand from each template's definition and encoded
piece by piece, independently of runtime/chat_data.py's cutting of the rendered text.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.chat_tokenizer import write_chatml_tokenizer
from tunix_dsl.data.datasets import DataError, read_jsonl
from tunix_dsl.data.tokenizers import ByteTokenizer, HFTokenizer
from tunix_dsl.runtime.data import tokenize_rows

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "and 3+5?"},
    {"role": "assistant", "content": "8, surely"},
]


def expected(pieces: list[tuple[list[int], bool]]) -> tuple[list[int], list[float]]:
    tokens = [t for ids, _ in pieces for t in ids]
    weights = [float(trained) for ids, trained in pieces for _ in ids]
    return tokens, weights


def check(example, pieces: list[tuple[list[int], bool]]) -> None:
    tokens, weights = expected(pieces)
    assert example.tokens.tolist() == tokens
    assert example.weights.tolist() == weights


def test_byte_template_multi_turn_masks_exactly_the_assistant_turns() -> None:
    tok = ByteTokenizer()
    data = tokenize_rows([{"messages": CHAT}], "prompt_completion", tok, 256)
    b = lambda text: list(text.encode())  # noqa: E731
    check(data.examples[0], [
        ([257], False),
        (b("system: Be brief.\nuser: 2+2?\nassistant: "), False),
        (b("4\n") + [258], True),  # the byte template writes no end token: eos is added
        (b("user: and 3+5?\nassistant: "), False),
        (b("8, surely\n") + [258], True),
    ])


def test_chatml_template_multi_turn_masks_exactly_the_assistant_turns(tmp_path: Path) -> None:
    tok = HFTokenizer.from_dir(write_chatml_tokenizer(tmp_path / "tok"))
    assert tok.bos_id is None and tok.eos_id == 258
    data = tokenize_rows([{"messages": CHAT}], "prompt_completion", tok, 256)
    b = lambda text: list(text.encode())  # noqa: E731
    start, end = 257, 258
    check(data.examples[0], [
        ([start] + b("system\nBe brief.") + [end] + b("\n") + [start] + b("user\n2+2?") + [end]
         + b("\n") + [start] + b("assistant\n"), False),
        (b("4") + [end] + b("\n"), True),  # <|im_end|> is a stop id: no extra eos
        ([start] + b("user\nand 3+5?") + [end] + b("\n") + [start] + b("assistant\n"), False),
        (b("8, surely") + [end] + b("\n"), True),
    ])
    # and transformers' own rendering + tokenization of the whole conversation agrees
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tmp_path / "tok")
    rendered = hf.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
    assert data.examples[0].tokens.tolist() == list(rendered)


def test_batch_loss_mask_follows_the_assistant_tokens() -> None:
    data = tokenize_rows([{"messages": CHAT}], "prompt_completion", ByteTokenizer(), 256)
    batch = data.collate(np.array([0]), 128)
    trained = batch["targets"][0][batch["loss_mask"][0] > 0]
    assert bytes(t for t in trained.tolist() if t < 256) == b"4\n8, surely\n"
    assert trained.tolist().count(258) == 2


def test_too_long_conversation_is_cut_from_the_right_or_dropped() -> None:
    tok = ByteTokenizer()
    kept = tokenize_rows([{"messages": CHAT}], "prompt_completion", tok, 44)
    assert kept.truncated == 1 and len(kept.examples[0]) == 44
    assert kept.examples[0].weights.sum() == 3  # "4\n" + eos
    with pytest.raises(DataError, match="longer than max_len"):
        tokenize_rows([{"messages": CHAT}], "prompt_completion", tok, 20)


def test_conversational_preference_shares_the_prompt_turns(tmp_path: Path) -> None:
    tok = ByteTokenizer()
    row = {"chosen": [*CHAT[:2], {"role": "assistant", "content": "4"}],
           "rejected": [*CHAT[:2], {"role": "assistant", "content": "5"}]}
    pair = tokenize_rows([row], "preference", tok, 256).examples[0]
    prompt = [257, *b"system: Be brief.\nuser: 2+2?\nassistant: "]
    assert pair.chosen.tokens.tolist() == [*prompt, *b"4\n", 258]
    assert pair.rejected.tokens.tolist() == [*prompt, *b"5\n", 258]
    assert pair.chosen.weights.tolist() == [0.0] * len(prompt) + [1.0] * 3


def test_conversation_prompt_is_rendered_with_the_generation_prompt() -> None:
    data = tokenize_rows([{"prompt": CHAT[:2]}], "prompt", ByteTokenizer(), 256)
    assert data.examples[0].tokens.tolist() == [257, *b"system: Be brief.\nuser: 2+2?\nassistant: "]


def test_template_that_rewrites_earlier_turns_is_refused_with_the_row(tmp_path: Path) -> None:
    directory = write_chatml_tokenizer(tmp_path / "tok")
    config = json.loads((directory / "tokenizer_config.json").read_text())
    # like Qwen3: the last assistant turn gets a <think> block, earlier ones do not
    config["chat_template"] = config["chat_template"].replace(
        "{{ message['content'] }}",
        "{% if loop.last and message['role'] == 'assistant' %}<think></think>{% endif %}"
        "{{ message['content'] }}")
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    tok = HFTokenizer.from_dir(directory)
    tokenize_rows([{"messages": CHAT[:3]}], "prompt_completion", tok, 256)  # one turn: fine
    with pytest.raises(DataError, match="row 1: the chat template renders message 2 differently"):
        tokenize_rows([{"messages": CHAT}], "prompt_completion", tok, 256)


@pytest.mark.parametrize(("row", "reason"), [
    ({"messages": "hi"}, "key 'messages' expected a list of {role, content} messages, got string"),
    ({"messages": [{"role": "user"}]}, "key 'messages' message 0 has no 'content'"),
    ({"messages": [{"role": "user", "content": "q"}]}, "no assistant message to train on"),
    ({"chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "both be strings or both"),
])
def test_malformed_conversation_rows_name_file_and_line(tmp_path: Path, row: dict, reason: str) -> None:
    path = tmp_path / "chat.jsonl"
    good = {"messages": CHAT[:3], "chosen": [CHAT[2]], "rejected": [CHAT[2]]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    consumer = "preference" if "chosen" in row else "prompt_completion"
    with pytest.raises(DataError) as err:
        read_jsonl(path, consumer=consumer)
    assert str(err.value).startswith(f"{path}:2: ") and reason in str(err.value)


def b(text: str) -> bytes:
    return text.encode()

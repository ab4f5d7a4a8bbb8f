"""Tokenizers: byte round trips, HF tokenizer.json loading, chat templates, save/export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunix_dsl.data.tokenizers import (
    ByteTokenizer,
    HFTokenizer,
    Tokenizer,
    TokenizerError,
    load_tokenizer,
)

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "two plus two is four, three plus five is eight",
    "héllo wörld: unicode text survives",
] * 20


def build_hf_dir(
    directory: Path, *, config: dict | None = None, model_config: dict | None = None
) -> Path:
    """A tiny byte-level BPE trained here (nothing downloaded) + tokenizer_config.json."""
    from tokenizers import Tokenizer as Core
    from tokenizers import decoders, models, pre_tokenizers, trainers

    core = Core(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(CORPUS, trainer)
    directory.mkdir(parents=True, exist_ok=True)
    core.save(str(directory / "tokenizer.json"))
    if config is None:
        config = {
            "bos_token": {"__type": "AddedToken", "content": "<s>", "special": True},
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "chat_template": CHATML,
        }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    if model_config is not None:
        (directory / "config.json").write_text(json.dumps(model_config))
    return directory


# ---- ByteTokenizer -------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.text())
def test_byte_round_trip(text: str) -> None:
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_byte_specials_and_invalid_utf8() -> None:
    tok = ByteTokenizer()
    assert isinstance(tok, Tokenizer)
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (256, 257, 258, 259)
    assert tok.encode("hi", add_bos=True) == [257, 104, 105]
    assert tok.decode([257, 104, 105, 258, 256]) == "hi"
    assert tok.decode([257, 104, 258], skip_special=False) == "<|bos|>h<|eos|>"
    # a lone continuation byte and a truncated 2-byte sequence decode with U+FFFD
    assert tok.decode([0x80, 65, 0xC3]) == "\ufffdA\ufffd"
    with pytest.raises(TokenizerError, match="outside the byte tokenizer"):
        tok.decode([300])


def test_byte_chat_template() -> None:
    tok = ByteTokenizer()
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert tok.apply_chat_template(messages) == "user: 2+2?\nassistant: 4\n"
    assert tok.apply_chat_template(messages[:1], add_generation_prompt=True) == (
        "user: 2+2?\nassistant: "
    )
    with pytest.raises(TokenizerError, match="needs 'role' and 'content'"):
        tok.apply_chat_template([{"content": "x"}])


def test_byte_save_loads_as_equivalent_hf_tokenizer(tmp_path: Path) -> None:
    tok = ByteTokenizer()
    tok.save(tmp_path)
    hf = HFTokenizer.from_dir(tmp_path)
    assert (hf.pad_id, hf.bos_id, hf.eos_id, hf.vocab_size) == (256, 257, 258, 259)
    text = "naïve café 12+34=46 \n\t ✓"
    assert hf.encode(text, add_bos=True) == tok.encode(text, add_bos=True)
    assert hf.decode([*tok.encode(text), 258]) == text
    messages = [{"role": "user", "content": "hi"}]
    assert hf.apply_chat_template(messages, True) == tok.apply_chat_template(messages, True)


# ---- HFTokenizer ---------------------------------------------------------------------------


def test_hf_specials_encode_decode(tmp_path: Path) -> None:
    tok = HFTokenizer.from_dir(build_hf_dir(tmp_path))
    assert tok.pad_id == 0 and tok.eos_id == 2 and tok.bos_id == 3
    assert tok.stop_ids == (2,)
    vocab = json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"]
    assert tok.vocab_size == max(vocab.values()) + 1 > 256 + 4
    text = "the quick brown fox, two plus five"
    ids = tok.encode(text)
    assert len(ids) < len(text.encode())  # merges were learned and applied
    assert tok.decode(ids) == text
    assert tok.encode(text, add_bos=True) == [3, *ids]
    assert tok.decode([3, *ids, 2, 0]) == text
    assert "<|im_end|>" in tok.decode([*ids, 2], skip_special=False)


def test_hf_special_ids_fall_back_to_config_json(tmp_path: Path) -> None:
    directory = build_hf_dir(
        tmp_path,
        config={},
        model_config={"bos_token_id": None, "eos_token_id": [2, 1]},
    )
    tok = HFTokenizer.from_dir(directory)
    assert tok.bos_id is None and tok.eos_id == 2 and tok.pad_id == 2
    assert tok.stop_ids == (2, 1)
    assert tok.encode("fox", add_bos=True) == tok.encode("fox")  # no BOS in this family
    with pytest.raises(TokenizerError, match="no 'chat_template'"):
        tok.apply_chat_template([{"role": "user", "content": "x"}])


def test_hf_chat_template_matches_transformers(tmp_path: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    directory = build_hf_dir(tmp_path)
    ours = HFTokenizer.from_dir(directory)
    theirs = PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"), chat_template=CHATML
    )
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "two plus two?"},
    ]
    for gen in (False, True):
        expected = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        assert ours.apply_chat_template(messages, add_generation_prompt=gen) == expected
    assert ours.apply_chat_template(messages, True).endswith("<|im_start|>assistant\n")


def test_hf_save_round_trip_loads_in_transformers(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = HFTokenizer.from_dir(build_hf_dir(tmp_path / "src"))
    tok.save(tmp_path / "out")
    again = HFTokenizer.from_dir(tmp_path / "out")
    text = "the lazy dog is four"
    assert again.encode(text) == tok.encode(text)
    assert (again.bos_id, again.eos_id, again.pad_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    assert hf.encode(text, add_special_tokens=False) == tok.encode(text)
    assert hf.eos_token_id == tok.eos_id


def test_hf_errors_name_the_file_and_fix(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        HFTokenizer.from_dir(tmp_path)
    directory = build_hf_dir(tmp_path / "bad", config={"eos_token": "<nope>"})
    with pytest.raises(TokenizerError, match="eos_token '<nope>'"):
        HFTokenizer.from_dir(directory)
    (directory / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        HFTokenizer.from_dir(directory)
    raising = build_hf_dir(
        tmp_path / "raising",
        config={"eos_token": "<|im_end|>", "chat_template": "{{ raise_exception('no system') }}"},
    )
    with pytest.raises(TokenizerError, match="no system"):
        HFTokenizer.from_dir(raising).apply_chat_template([])


def test_load_tokenizer_dispatch(tmp_path: Path) -> None:
    assert isinstance(load_tokenizer("bytes"), ByteTokenizer)
    assert isinstance(load_tokenizer(build_hf_dir(tmp_path)), HFTokenizer)


def test_exported_tokenizers_add_the_bos_tnx_trains_with(tmp_path) -> None:
    """transformers' plain `tok(text)` must start like a tnx training sequence: bos first when
    the tokenizer has one (bytes()), nothing added when it has none (ChatML-style)."""
    from transformers import AutoTokenizer

    from tests.chat_tokenizer import write_chatml_tokenizer
    from tunix_dsl.data.tokenizers import ByteTokenizer, HFTokenizer

    ByteTokenizer().save(tmp_path / "bytes")
    tok = AutoTokenizer.from_pretrained(tmp_path / "bytes")
    assert tok("59+78=")["input_ids"] == ByteTokenizer().encode("59+78=", add_bos=True)
    reloaded = HFTokenizer.from_dir(tmp_path / "bytes")
    assert reloaded.encode("ab", add_bos=True) == [257, 97, 98]  # our encode is unchanged
    reloaded.save(tmp_path / "again")  # saving again keeps one bos, not two
    assert AutoTokenizer.from_pretrained(tmp_path / "again")("ab")["input_ids"] == [257, 97, 98]
    chat = HFTokenizer.from_dir(write_chatml_tokenizer(tmp_path / "chatml"))
    chat.save(tmp_path / "chat_out")
    assert AutoTokenizer.from_pretrained(tmp_path / "chat_out")("ab")["input_ids"] == [97, 98]

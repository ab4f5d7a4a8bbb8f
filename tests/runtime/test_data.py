"""Tokenisation, masks, buckets and the resumable batch order (tunix_dsl.runtime.data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunix_dsl.data.datasets import DataError, read_jsonl, synthetic_rows
from tunix_dsl.data.tokenizers import ByteTokenizer
from tunix_dsl.runtime.batches import (
    BatchStream,
    LocalRows,
    bucket_for,
    check_batch_size,
    length_buckets,
    ordered_batches,
)
from tunix_dsl.runtime.data import tokenize_rows

BOS, EOS, PAD = 257, 258, 256
TOK = ByteTokenizer()


def _bytes(text: str) -> list[int]:
    return list(text.encode())


def _batch(rows: list[dict], consumer: str, max_len: int = 16) -> dict[str, np.ndarray]:
    data = tokenize_rows(rows, consumer, TOK, max_len)
    return BatchStream(data, len(rows), seed=0, buckets=length_buckets(max_len)).next_batch()


# --- masks on hand-computed examples -----------------------------------------


def test_prompt_completion_masks_exact() -> None:
    b = _batch([{"prompt": "1+2=", "completion": "3"}], "prompt_completion")
    seq = [BOS, 49, 43, 50, 61, 51, EOS]
    np.testing.assert_array_equal(b["tokens"][0], seq + [PAD] * 9)
    np.testing.assert_array_equal(b["targets"][0], seq[1:] + [PAD] * 10)
    # Targets 4 ("3") and 5 (eos) are the completion: only they carry loss.
    np.testing.assert_array_equal(b["loss_mask"][0], [0, 0, 0, 0, 1, 1] + [0] * 10)
    np.testing.assert_array_equal(b["attention_mask"][0], [True] * 7 + [False] * 9)
    np.testing.assert_array_equal(b["positions"][0], np.arange(16))
    assert b["tokens"].dtype == b["targets"].dtype == b["positions"].dtype == np.int32
    assert b["loss_mask"].dtype == np.float32 and b["attention_mask"].dtype == np.bool_
    assert b["example_ids"].tolist() == [0]


def test_lm_loss_on_every_real_target() -> None:
    b = _batch([{"text": "ab"}, {"prompt": "x=", "completion": "y"}], "lm")
    order = b["example_ids"].tolist()
    rows = {0: [BOS, 97, 98, EOS], 1: [BOS, 120, 61, 121, EOS]}
    for i, row in enumerate(order):
        seq = rows[row]
        np.testing.assert_array_equal(b["tokens"][i, : len(seq)], seq)
        np.testing.assert_array_equal(b["targets"][i, : len(seq) - 1], seq[1:])
        np.testing.assert_array_equal(b["loss_mask"][i], [1] * (len(seq) - 1) + [0] * (17 - len(seq)))


def test_prompt_batches_are_left_padded() -> None:
    b = _batch([{"prompt": "1+2="}, {"prompt": "10+20="}], "prompt")
    assert set(b) == {"tokens", "attention_mask", "positions", "example_ids"}
    i = b["example_ids"].tolist().index(0)
    np.testing.assert_array_equal(b["tokens"][i], [PAD] * 11 + [BOS, 49, 43, 50, 61])
    np.testing.assert_array_equal(b["attention_mask"][i], [False] * 11 + [True] * 5)
    np.testing.assert_array_equal(b["positions"][i], [0] * 11 + [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(b["positions"][1 - i, 9:], np.arange(7))


def test_tokenizer_without_bos() -> None:
    class NoBos(ByteTokenizer):
        def __init__(self) -> None:
            super().__init__()
            self.bos_id = None

    data = tokenize_rows([{"prompt": "a", "completion": "b"}], "prompt_completion", NoBos(), 16)
    b = BatchStream(data, 1, seed=0).next_batch()
    np.testing.assert_array_equal(b["tokens"][0, :3], [97, 98, EOS])
    np.testing.assert_array_equal(b["loss_mask"][0, :3], [1, 1, 0])


# --- truncation ----------------------------------------------------------------


def test_truncation_cuts_the_prompt_from_the_left_and_counts() -> None:
    rows = [
        {"prompt": "123456789+1=", "completion": "3"},  # 1 + 12 + 2 > 8: prompt cut to 5
        {"prompt": "1=", "completion": "abcdefg"},      # completion + eos = 8: no room, dropped
        {"prompt": "9=", "completion": "abcde"},        # 1 + 1 + 6 = 8: fits with 1 prompt token
        {"prompt": "1=", "completion": "2"},            # fits
    ]
    data = tokenize_rows(rows, "prompt_completion", TOK, max_len=8)
    assert (data.rows, len(data), data.truncated, data.dropped) == (4, 3, 2, 1)
    assert data.row_ids.tolist() == [0, 2, 3]
    np.testing.assert_array_equal(data.examples[0].tokens, [BOS, *_bytes("89+1="), 51, EOS])
    np.testing.assert_array_equal(data.examples[1].tokens, [BOS, 61, *_bytes("abcde"), EOS])
    assert "2 truncated" in data.summary() and "1 dropped" in data.summary()


def test_lm_truncation_keeps_the_beginning() -> None:
    data = tokenize_rows([{"text": "abcdefghij"}], "lm", TOK, max_len=8)
    assert data.truncated == 1
    np.testing.assert_array_equal(data.examples[0].tokens, [BOS, *_bytes("abcdefg")])


def test_prompt_truncation_and_all_rows_dropped() -> None:
    data = tokenize_rows([{"prompt": "abcdefghij"}], "prompt", TOK, max_len=8)
    np.testing.assert_array_equal(data.examples[0].tokens, [BOS, *_bytes("defghij")])
    with pytest.raises(DataError, match="sums: all 1 rows are longer than max_len 8"):
        tokenize_rows([{"prompt": "a", "completion": "x" * 8}], "prompt_completion", TOK, 8,
                      source="sums")


def test_missing_column_names_the_row() -> None:
    with pytest.raises(DataError) as err:
        tokenize_rows([{"prompt": "a", "completion": "b"}, {"prompt": "a"}],
                      "prompt_completion", TOK, 16, source="data.jsonl")
    assert str(err.value) == ("data.jsonl: row 2 has no column 'completion', which "
                              "prompt_completion data needs (prompt, completion)")


# --- preference pairs --------------------------------------------------------------


def test_preference_pairs_share_prompt_bucket_and_row() -> None:
    rows = [{"prompt": "12+34=", "chosen": "46", "rejected": "4600"},
            {"prompt": "1+1=", "chosen": "2", "rejected": "3"}]
    b = _batch(rows, "preference", max_len=32)
    assert b["chosen_tokens"].shape == b["rejected_tokens"].shape == (2, 16)
    i = b["example_ids"].tolist().index(0)
    p = [BOS, *_bytes("12+34=")]
    np.testing.assert_array_equal(b["chosen_tokens"][i, :11], p + [52, 54, EOS, PAD])
    np.testing.assert_array_equal(b["rejected_tokens"][i, :13], p + [52, 54, 48, 48, EOS, PAD])
    np.testing.assert_array_equal(b["chosen_loss_mask"][i, :10], [0] * 6 + [1, 1, 1, 0])
    np.testing.assert_array_equal(b["rejected_loss_mask"][i, :12], [0] * 6 + [1] * 5 + [0])


def test_preference_truncation_cuts_one_prompt_for_both() -> None:
    row = {"prompt": "abcdef=", "chosen": "1", "rejected": "1234"}
    pair = tokenize_rows([row], "preference", TOK, max_len=8).examples[0]
    # Longest completion + eos = 5, bos 1: two prompt tokens fit, for both sequences.
    np.testing.assert_array_equal(pair.chosen.tokens, [BOS, *_bytes("f="), 49, EOS])
    np.testing.assert_array_equal(pair.rejected.tokens, [BOS, *_bytes("f=1234"), EOS])


def test_jsonl_mapping_into_preference_batches(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"{i}+1=", "good": str(i + 1), "bad": str(i)})
                              for i in range(6)))
    rows = read_jsonl(path, {"prompt": "q", "chosen": "good", "rejected": "bad"})
    b = BatchStream(tokenize_rows(rows, "preference", TOK, 32), 6, seed=1).next_batch()
    for i, row in enumerate(b["example_ids"]):
        length = int(b["chosen_attention_mask"][i].sum())
        assert TOK.decode(b["chosen_tokens"][i, :length]) == f"{row}+1={row + 1}"


# --- buckets --------------------------------------------------------------------


def test_length_buckets() -> None:
    assert length_buckets(128) == (16, 32, 64, 128)
    assert length_buckets(100) == (16, 32, 64, 100)
    assert length_buckets(8) == (8,)
    assert length_buckets(128, [64, 24, 64]) == (24, 64)
    with pytest.raises(ValueError, match="at most|between 2 and max_seq_len 128"):
        length_buckets(128, [256])
    assert [bucket_for(n, (16, 32, 64)) for n in (1, 16, 17, 33, 64)] == [16, 16, 32, 64, 64]
    with pytest.raises(ValueError, match="exceeds the largest bucket 64"):
        bucket_for(65, (16, 32, 64))


def test_each_batch_takes_the_smallest_bucket_that_fits() -> None:
    rows = synthetic_rows("copy", count=200, min_length=1, max_length=28, seed=2)
    data = tokenize_rows(rows, "prompt_completion", TOK, max_len=64)
    stream = BatchStream(data, 4, seed=0)
    seen = set()
    for _ in range(50):
        b = stream.next_batch()
        longest = int(b["attention_mask"].sum(axis=1).max())
        expected = min(t for t in (16, 32, 64) if t >= longest)
        assert b["tokens"].shape == (4, expected)
        seen.add(expected)
    assert seen == {32, 64}


# --- order and cursor -------------------------------------------------------------


def _stream(start_cursor: int = 0, seed: int = 3, **kw: int) -> BatchStream:
    data = tokenize_rows(synthetic_rows("addition", count=10, seed=0), "prompt_completion", TOK, 32)
    return BatchStream(data, kw.pop("batch_size", 4), seed, start_cursor=start_cursor, **kw)


def test_order_is_one_permutation_per_epoch_from_seed_and_epoch() -> None:
    s = _stream()
    stream = s.indices(0, 30)
    for epoch in range(3):
        expected = np.random.default_rng([3, epoch]).permutation(10)
        np.testing.assert_array_equal(stream[epoch * 10: (epoch + 1) * 10], expected)
    assert not np.array_equal(stream[:10], stream[10:20])
    assert not np.array_equal(stream[:10], _stream(seed=4).indices(0, 10))
    # The batch that crosses the epoch end is completed from the next epoch.
    ids = [s.next_batch()["example_ids"] for _ in range(3)]
    np.testing.assert_array_equal(ids[2], np.concatenate([stream[8:10], stream[10:12]]))
    assert (s.cursor, s.epoch) == (12, 1)


def test_resume_from_any_cursor_is_bit_exact_across_epochs() -> None:
    continuous = _stream()
    batches = [continuous.next_batch() for _ in range(10)]  # 40 examples: 4 epochs
    for j in (1, 2, 3, 5, 7, 9):
        resumed = _stream(start_cursor=4 * j)
        for expected in batches[j:]:
            got = resumed.next_batch()
            assert got.keys() == expected.keys()
            for key in got:
                assert got[key].dtype == expected[key].dtype
                np.testing.assert_array_equal(got[key], expected[key])
        assert resumed.cursor == continuous.cursor == 40


_COPY_DATA = tokenize_rows(synthetic_rows("copy", count=23, min_length=1, max_length=20),
                           "prompt_completion", TOK, 32)


@settings(max_examples=40, deadline=None)
@given(batch_size=st.integers(1, 9), seed=st.integers(0, 2**31), steps=st.integers(1, 12),
       split=st.integers(0, 12))
def test_resume_property(batch_size: int, seed: int, steps: int, split: int) -> None:
    split = min(split, steps)
    full = BatchStream(_COPY_DATA, batch_size, seed)
    expected = [full.next_batch() for _ in range(steps)]
    first = BatchStream(_COPY_DATA, batch_size, seed)
    for _ in range(split):
        first.next_batch()
    resumed = BatchStream(_COPY_DATA, batch_size, seed, start_cursor=first.cursor)
    for want in expected[split:]:
        got = resumed.next_batch()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_next_batches_stacks_k_steps_in_one_bucket() -> None:
    one, many = _stream(), _stream()
    singles = [one.next_batch() for _ in range(3)]
    stacked = many.next_batches(3)
    assert stacked["tokens"].shape[:2] == (3, 4) and many.cursor == one.cursor == 12
    for k, single in enumerate(singles):
        np.testing.assert_array_equal(stacked["example_ids"][k], single["example_ids"])


def test_process_slices_make_up_the_global_batch() -> None:
    whole = _stream(batch_size=8).next_batch()
    parts = [_stream(batch_size=8, local=LocalRows(2 * p, 2 * p + 2, 8)).next_batch() for p in range(4)]
    for key in whole:
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_process_rows_are_taken_from_every_micro_batch() -> None:
    """Two processes, grad_accum 2 (micro-batch 4): each feeds half of each micro-batch."""
    whole = _stream(batch_size=8).next_batches(2)["example_ids"]  # [2 steps, 8]
    mine = [_stream(batch_size=8, local=LocalRows(2 * p, 2 * p + 2, 4)).next_batches(2)["example_ids"]
            for p in range(2)]
    for step in range(2):
        micro = whole[step].reshape(2, 4)
        for p in range(2):
            np.testing.assert_array_equal(mine[p][step], micro[:, 2 * p: 2 * p + 2].reshape(-1))


def test_batch_size_checks() -> None:
    with pytest.raises(ValueError) as err:
        check_batch_size(30, 4, "data x fsdp devices")
    assert str(err.value) == "batch_size 30 is not divisible by 4 (data x fsdp devices); use 28 or 32"
    with pytest.raises(ValueError, match=r"local rows .* do not split a batch of 6"):
        _stream(batch_size=6, local=LocalRows(0, 2, 4))
    check_batch_size(32, 8, "devices")


def test_ordered_batches_cover_the_data_once_with_fixed_shapes() -> None:
    data = tokenize_rows(synthetic_rows("addition", count=10), "prompt", TOK, 32)
    batches = list(ordered_batches(data, 4))
    assert [b["tokens"].shape[0] for b in batches] == [4, 4, 4]
    ids = np.concatenate([b["example_ids"][b["valid"]] for b in batches])
    np.testing.assert_array_equal(ids, np.arange(10))
    np.testing.assert_array_equal(batches[-1]["valid"], [True, True, False, False])

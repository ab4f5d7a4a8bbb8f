"""`parquet(...)` datasets: rows as jsonl reads them, HF shard directories, row-level errors,
batch-wise reading, and lint typing from the schema alone."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunix_dsl.api import parse
from tunix_dsl.data import parquet as parquet_module
from tunix_dsl.data.datasets import DataError
from tunix_dsl.data.parquet import parquet_files, read_parquet

CHAT = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]


def write(path: Path, rows: list[dict], row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def test_mapping_renames_columns_like_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path / "qa.parquet", [{"question": "1+1=", "reply": "2", "id": 7}])
    rows = read_parquet(path, {"prompt": "question", "completion": "reply"},
                        consumer="prompt_completion")
    assert rows == [{"prompt": "1+1=", "completion": "2", "id": 7}]


def test_hf_dataset_directory_reads_the_shards_of_a_split_in_order(tmp_path: Path) -> None:
    data = tmp_path / "ds" / "data"
    write(data / "train-00001-of-00002.parquet", [{"text": "c"}])
    write(data / "train-00000-of-00002.parquet", [{"text": "a"}, {"text": "b"}])
    write(data / "test-00000-of-00001.parquet", [{"text": "held out"}])
    assert [r["text"] for r in read_parquet(tmp_path / "ds", split="train")] == ["a", "b", "c"]
    assert [r["text"] for r in read_parquet(tmp_path / "ds", split="test")] == ["held out"]
    assert len(read_parquet(tmp_path / "ds")) == 4
    with pytest.raises(DataError, match="no .parquet files in the directory for split 'dev'"):
        parquet_files(tmp_path / "ds", "dev")


def test_malformed_rows_name_file_and_row(tmp_path: Path) -> None:
    path = write(tmp_path / "chat.parquet", [
        {"messages": CHAT, "prompt": "x", "completion": "y"},
        {"messages": CHAT, "prompt": "x", "completion": None},
        {"messages": [{"role": "user", "content": "q"}], "prompt": "x", "completion": "y"},
    ])
    with pytest.raises(DataError) as err:
        read_parquet(path, {"prompt": "prompt", "completion": "completion"},
                     consumer="prompt_completion")
    assert err.value.total == 1
    assert str(err.value) == f"{path}: row 2: key 'completion' must be a string, got null"
    chat = write(tmp_path / "talk.parquet", [
        {"talk": CHAT}, {"talk": CHAT}, {"talk": [{"role": "user", "content": "q"}]}])
    with pytest.raises(DataError) as err:  # the messages form: row 3 has no assistant turn
        read_parquet(chat, {"messages": "talk"}, consumer="prompt_completion")
    assert str(err.value) == (f"{chat}: row 3: the conversation has no assistant message "
                              "to train on")


def test_rows_are_read_batch_by_batch_never_as_a_whole_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "big.parquet", [{"text": f"row {i}"} for i in range(50)],
                 row_group_size=10)
    sizes: list[int] = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        for batch in real(self, *args, **kwargs):
            sizes.append(batch.num_rows)
            yield batch

    def whole(*args, **kwargs):
        raise AssertionError("a whole table was read")

    monkeypatch.setattr(parquet_module, "BATCH_ROWS", 8)
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    monkeypatch.setattr(pq.ParquetFile, "read", whole)
    monkeypatch.setattr(pq, "read_table", whole)
    rows = read_parquet(path, consumer="lm")
    assert [r["text"] for r in rows] == [f"row {i}" for i in range(50)]
    assert max(sizes) <= 8 and sum(sizes) == 50


def _lint(tmp_path: Path, dataset: str) -> list[tuple[str, str]]:
    source = ('tokenizer chars = bytes()\n'
              'model tiny = transformer(preset = "pico", tokenizer = chars)\n'
              f'dataset d = {dataset}\n'
              'stage tune: sft {\n  model = tiny\n  data = d\n  steps = 2\n}\n'
              'export tune.model to "out" as "hf"\n')
    pipeline = parse(source, "p.tnx", base_dir=tmp_path)
    return [(d.code, d.message) for d in pipeline.diagnostics]


def test_lint_types_columns_from_the_schema(tmp_path: Path) -> None:
    write(tmp_path / "chat.parquet", [{"messages": CHAT, "n": 3}])
    assert _lint(tmp_path, 'parquet("chat.parquet")') == []
    assert _lint(tmp_path, 'parquet("chat.parquet", prompt = "n", completion = "n")') == [
        ("TNX460", 'column "n" of "chat.parquet" is int64; `prompt` holds text (string)'),
        ("TNX460", 'column "n" of "chat.parquet" is int64; `completion` holds text (string)')]
    found = _lint(tmp_path, 'parquet("chat.parquet", messages = "talk")')
    assert ("TNX460", '"chat.parquet" has no column "talk" for `messages`') in found
    write(tmp_path / "flat.parquet", [{"messages": "not a list"}])
    assert _lint(tmp_path, 'parquet("flat.parquet")') == [
        ("TNX460", 'column "messages" of "flat.parquet" is string; `messages` holds a list of '
                   '{role, content} structs')]
    (tmp_path / "junk.parquet").write_text("not parquet")
    (code, message), = _lint(tmp_path, 'parquet("junk.parquet")')
    assert code == "TNX460" and "not a readable parquet file" in message


def test_lint_reads_only_the_footer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "chat.parquet", [{"messages": CHAT}])

    def rows_read(*args, **kwargs):
        raise AssertionError("lint read rows")

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", rows_read)
    monkeypatch.setattr(pq, "read_table", rows_read)
    assert _lint(tmp_path, 'parquet("chat.parquet")') == []


def test_run_stops_before_training_on_a_malformed_row(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    from tunix_dsl.runtime.cli_commands import main as tnx

    write(tmp_path / "qa.parquet", [{"prompt": "1+1=", "completion": "2"},
                                    {"prompt": "2+2=", "completion": None}])
    (tmp_path / "p.tnx").write_text(
        'tokenizer t = bytes()\nmodel m = transformer(preset = "pico", tokenizer = t)\n'
        'dataset d = parquet("qa.parquet")\n'
        'stage s: sft { model = m\n data = d\n steps = 2\n batch_size = 2 }\n'
        'export s.model to "out" as "hf"\n')
    assert tnx("run", [str(tmp_path / "p.tnx"), "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "qa.parquet: row 2: key 'completion' is null (prompt_completion data needs" in err
    assert "Traceback" not in err

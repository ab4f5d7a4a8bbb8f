"""`parquet("file_or_dir", …)` datasets: reading, and typing from the schema alone (jax-free).

A path is one `.parquet` file or a directory whose `.parquet` files (found recursively,
sorted by path) are read in order, as the shards of a Hugging Face dataset directory
(`data/train-00000-of-00002.parquet`, …); `split = "train"` keeps the files of one split.
Columns map to canonical names as for jsonl. Files are read a record batch at a time
(``BATCH_ROWS`` rows), so no whole file or Arrow table is ever in memory: only the Python
rows kept for training, as for jsonl. A bad row raises :class:`DataError` naming the file and the row (counted
from 1 within that file).

pyarrow is imported inside the functions: `tnx lint` pays for it only when a pipeline has a
parquet dataset, and then reads only each file's footer (its schema).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tunix_dsl.data.datasets import (
    MAX_REPORTED_ROWS,
    DataError,
    Row,
    check_mapping,
    collect_rows,
    row_checker,
)

BATCH_ROWS = 1024  # rows per record batch: bounds memory, whatever the file's row groups


def parquet_files(path: str | Path, split: str | None = None) -> list[Path]:
    """The files a `parquet(path, split)` dataset reads, in order; DataError when none."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(path, None, "file or directory not found")
    files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if split is not None:
        # HF layouts: data/<split>-00000-of-00001.parquet, <split>/xxx.parquet, <split>.parquet
        pattern = re.compile(rf"(^|[/_.-]){re.escape(split)}([/_.-]|$)")
        files = [f for f in files if pattern.search(f.relative_to(path).as_posix())]
    if not files:
        where = f" for split {split!r}" if split is not None else ""
        raise DataError(path, None, f"no .parquet files in the directory{where}")
    return files


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise DataError("parquet", None, "reading parquet needs pyarrow: pip install pyarrow") from err
    return pq


def _schema(file: Path) -> Any:
    pq = _pyarrow()
    try:
        return pq.read_schema(file)
    except (OSError, ValueError) as err:  # ArrowInvalid is a ValueError
        raise DataError(file, None, f"not a readable parquet file ({err})") from None


def file_columns(path: str | Path, split: str | None = None) -> dict[str, str]:
    """Column name → Arrow type text, from the footer of the first file (no rows read)."""
    schema = _schema(parquet_files(path, split)[0])
    return {field.name: str(field.type) for field in schema}


def file_row_counts(path: str | Path, split: str | None = None) -> list[tuple[Path, int]]:
    """(file, rows) in the order ``read_parquet`` reads them, from the footers (no rows read)."""
    pq = _pyarrow()
    return [(file, pq.ParquetFile(file).metadata.num_rows) for file in parquet_files(path, split)]


def type_problem(column: str, arrow_type: str) -> str | None:
    """Why a canonical column's Arrow type cannot hold its values, or None (schema-only check)."""
    text = arrow_type.replace("large_", "")
    conversation = re.fullmatch(r"list<\w+: struct<(.*)>>", text)
    if conversation is not None:
        fields = dict(f.split(": ", 1) for f in re.split(r", (?=\w+: )", conversation.group(1)))
        if column not in ("messages", "prompt", "chosen", "rejected"):
            return f"is a list of messages ({arrow_type}); `{column}` holds text"
        wrong = [k for k in ("role", "content") if fields.get(k, "").replace("large_", "") != "string"]
        if wrong:
            return f"messages need string fields role and content, found struct<{conversation.group(1)}>"
        return None
    if column == "messages":
        return f"is {arrow_type}; `messages` holds a list of {{role, content}} structs"
    if text != "string":
        return f"is {arrow_type}; `{column}` holds text (string)"
    return None


def _records(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    pq = _pyarrow()
    try:
        handle = pq.ParquetFile(file)
    except (OSError, ValueError) as err:
        raise DataError(file, None, f"not a readable parquet file ({err})") from None
    n = 0
    batches = handle.iter_batches(batch_size=BATCH_ROWS)
    while True:
        try:
            batch = next(batches, None)
        except (OSError, ValueError) as err:  # a damaged page or row group past the footer
            raise DataError(file, None, f"cannot read past row {n} ({err})") from None
        if batch is None:
            return
        for row in batch.to_pylist():
            n += 1
            yield n, row


def read_parquet(
    path: str | Path, mapping: Mapping[str, str] | None = None, required: Iterable[str] = (),
    *, consumer: str | None = None, split: str | None = None,
    max_problems: int = MAX_REPORTED_ROWS,
) -> list[Row]:
    """Rows of a parquet file or directory, checked like jsonl rows (``read_jsonl``): the same
    mapping, the same per-consumer rules, a null where a string belongs is a bad row.

    Problems raise one DataError per file naming every bad row as ``file: row N: reason`` (up
    to ``max_problems``); row N counts from 1 within the file.
    """
    mapping = dict(mapping or {})
    problem = check_mapping(mapping)
    if problem:
        raise DataError(path, None, problem)
    rows: list[Row] = []
    for file in parquet_files(path, split):
        check = row_checker(str(file), mapping, required, consumer, unit="row")
        rows += collect_rows(str(file), _records(file), check, max_problems)
    return rows

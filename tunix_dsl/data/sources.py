"""The run-time halves of the built-in dataset sources (jax-free).

Each built-in dataset schema (`tunix_dsl.schemas.sources`) names one of these in
its `implementation`, the same lazy reference a plugin dataset uses, so the
runtime and the pre-flight check read every source one way:
`rows(spec, base_dir, consumer, required) -> list[Row]`, where `consumer` is
the data layout reading the rows (a key of `CONSUMERS`, or None) and `required`
the columns every row must have; a bad file or bad rows raise `DataError`
naming them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tunix_dsl.data.datasets import Row, read_jsonl, synthetic_rows
from tunix_dsl.models.info import resolve_path
from tunix_dsl.schemas.datasets import JsonlSource, ParquetSource, SyntheticSource


def synthetic(spec: SyntheticSource, base_dir: Path, consumer: str | None = None,
              required: Sequence[str] = ()) -> list[Row]:
    # generated rows always have the task's columns (lint checks them against the layout)
    return synthetic_rows(spec.task, count=spec.count, seed=spec.seed, **spec.params)


def jsonl(spec: JsonlSource, base_dir: Path, consumer: str | None = None,
          required: Sequence[str] = ()) -> list[Row]:
    return read_jsonl(resolve_path(spec.path, base_dir), spec.mapping(), required, consumer=consumer)


def parquet(spec: ParquetSource, base_dir: Path, consumer: str | None = None,
            required: Sequence[str] = ()) -> list[Row]:
    from tunix_dsl.data.parquet import read_parquet

    return read_parquet(resolve_path(spec.path, base_dir), spec.mapping(), required,
                        consumer=consumer, split=spec.split)

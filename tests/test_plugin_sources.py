"""Sources run through their schema's `implementation`, built-in or plugin, and a plugin
dataset gets the checks a built-in one gets: pre-flight file reads, TNX313 from its rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunix_dsl.api import parse
from tunix_dsl.schemas import SOURCES
from tunix_dsl.schemas.plugins import OPTIMIZERS_GROUP, ORIGINS, load_implementation, origin_of
from tunix_dsl.schemas.training import OPTIMIZERS

TSV_PLUGIN = '''
from pydantic import Field

from tunix_dsl.data.datasets import DataError
from tunix_dsl.schemas.datasets import DatasetSchema


class TsvPairs(DatasetSchema):
    """`prompt<TAB>completion` lines."""

    call_name = "tsv_pairs"
    positional = ("path",)
    implementation = "./tsv_plugin.py:rows"
    path: str = Field(description="the .tsv file")

    def files(self):
        return {"path": self.path}

    def known_columns(self, base_dir):
        return frozenset({"prompt", "completion"})

    def row_lengths(self, base_dir, limit):
        try:
            return [{k: len(v.encode()) for k, v in row.items()}
                    for row in rows(self, base_dir)[:limit]]
        except (OSError, DataError):
            return None


def rows(spec, base_dir, consumer=None, required=()):
    path = base_dir / spec.path
    found, bad = [], []
    for n, line in enumerate(path.read_text().splitlines(), start=1):  # OSError if missing
        prompt, tab, completion = line.partition("\\t")
        if not tab or not completion:
            bad.append(DataError(path, n, "expected prompt<TAB>completion"))
        found.append({"prompt": prompt, "completion": completion})
    if bad:
        raise DataError.rows(path, bad, len(bad))
    return found


TNX_PLUGIN = {"tunix_dsl.datasets": [TsvPairs]}
'''

PIPELINE = '''pipeline p {{
  plugins = ["tsv_plugin.py"]
}}
tokenizer t = bytes()
model m = transformer(preset = "pico", tokenizer = t)
dataset pairs = tsv_pairs("pairs.tsv")
stage tune: sft {{
  model = m
  data = pairs
  steps = 1
  batch_size = 2
  max_seq_len = {length}
}}
'''


@pytest.fixture(autouse=True)
def _registries_restored():
    """What a test's local plugin registers is gone after it."""
    tables = [ORIGINS, *SOURCES.values()]
    saved = [dict(t) for t in tables]
    yield
    for table, before in zip(tables, saved, strict=True):
        table.clear()
        table.update(before)


def _pipeline(tmp_path: Path, length: int = 64):
    (tmp_path / "tsv_plugin.py").write_text(TSV_PLUGIN, encoding="utf-8")
    text = PIPELINE.format(length=length)
    return parse(text, str(tmp_path / "p.tnx"), base_dir=tmp_path)


def _preflight(tmp_path: Path) -> list[tuple[str, int, int, str]]:
    from tunix_dsl.runtime.preflight import preflight

    pipeline = _pipeline(tmp_path)
    assert pipeline.ok, pipeline.diagnostics
    return [(p.diagnostic.code, p.diagnostic.span.line, p.diagnostic.span.column,
             p.diagnostic.message) for p in preflight(pipeline, tmp_path / "run")]


@pytest.mark.parametrize("group, table", [("tunix_dsl.rewards", SOURCES["reward"]),
                                          ("tunix_dsl.datasets", SOURCES["dataset"]),
                                          (OPTIMIZERS_GROUP, OPTIMIZERS)])
def test_every_built_in_source_names_a_loadable_implementation(group, table):
    builtins = [schema for name, schema in table.items() if origin_of(group, name).builtin]
    assert len(builtins) >= 3
    for schema in builtins:
        assert callable(load_implementation(group, schema)), schema.call_name


def test_a_built_in_dataset_reads_its_rows_through_its_implementation(tmp_path):
    from tunix_dsl.runtime.resources import dataset_rows
    from tunix_dsl.schemas.datasets import JsonlSource

    (tmp_path / "qa.jsonl").write_text('{"q": "1+1=", "a": "2"}\n')
    spec = JsonlSource(path="qa.jsonl", prompt="q", completion="a")
    assert spec.files() == {"path": "qa.jsonl"}
    assert dataset_rows(spec, tmp_path, "prompt_completion") == [
        {"prompt": "1+1=", "completion": "2"}]


def test_a_plugin_datasets_missing_file_is_found_before_the_run(tmp_path):
    (warning,) = [d for d in _pipeline(tmp_path).diagnostics if d.code == "TNX403"]  # lint
    assert (warning.span.line, warning.span.column) == (6, 27)
    assert warning.message == 'data path "pairs.tsv" not found'
    found = _preflight(tmp_path)  # no pairs.tsv
    assert len(found) == 1
    code, line, column, message = found[0]
    assert (code, line, column) == ("TNX370", 6, 27)  # at "pairs.tsv"
    assert "FileNotFoundError" in message and "pairs.tsv" in message


def test_a_plugin_datasets_bad_rows_are_listed_before_the_run(tmp_path):
    (tmp_path / "pairs.tsv").write_text("1+1=\t2\nno tab here\n2+2=\t4\n")
    ((code, line, column, message),) = _preflight(tmp_path)
    assert (code, line, column) == ("TNX371", 6, 27)
    assert message == 'dataset `pairs`: 1 bad row in "pairs.tsv"'


def test_a_plugin_datasets_good_rows_pass_and_are_what_the_run_reads(tmp_path):
    from tunix_dsl.runtime.resources import Resources

    (tmp_path / "pairs.tsv").write_text("1+1=\t2\n2+2=\t4\n")
    assert _preflight(tmp_path) == []
    rows = Resources(_pipeline(tmp_path)).rows("pairs", "prompt_completion")
    assert rows == [{"prompt": "1+1=", "completion": "2"}, {"prompt": "2+2=", "completion": "4"}]


def test_tnx313_measures_a_plugin_datasets_rows(tmp_path):
    (tmp_path / "pairs.tsv").write_text("1+1=\ttwo hundred and two\n")
    assert "TNX313" not in [d.code for d in _pipeline(tmp_path, length=64).diagnostics]
    (diag,) = [d for d in _pipeline(tmp_path, length=8).diagnostics if d.code == "TNX313"]
    assert "the shortest needs 22" in diag.message

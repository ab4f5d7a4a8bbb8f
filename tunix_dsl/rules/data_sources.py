"""TNX46x: data files checked from their schema alone (never the rows).

TNX460 `parquet-schema`: a parquet dataset whose footer cannot be read, that lacks a column
its mapping names, or whose column type cannot hold what the column means (text must be a
string, `messages` a list of {role: string, content: string} structs). pyarrow is imported
here only when a pipeline has a parquet dataset, and reads the first file's footer only.
(jsonl datasets are peeked by TNX308, which holds the first rows to the same value rules,
conversations included.)
"""

from __future__ import annotations

from collections.abc import Iterator

from tunix_dsl.check.ir import Pipeline
from tunix_dsl.data.datasets import CANONICAL_COLUMNS, DataError
from tunix_dsl.grammar.diagnostics import Diagnostic, Severity
from tunix_dsl.models.info import exists
from tunix_dsl.rules.codes import _PRELUDE
from tunix_dsl.rules.registry import diagnostic, rule
from tunix_dsl.schemas.datasets import ParquetSource

# A warning (TNX4xx): lint may run before the file is final; `tnx run`'s pre-flight reads
# every row and stops on a bad one (TNX371).
W = Severity.WARNING


def _example(dataset: str) -> str:
    return (_PRELUDE.replace('synthetic("addition", count = 100)', dataset)
            + "\nstage tune: sft {\n  model = tiny\n  data  = sums\n  steps = 10\n}\n\n"
            'export tune.model to "out/tune" as "hf"\n')


@rule("TNX460", "parquet-schema", W,
      "A parquet dataset whose schema cannot be read, lacks a mapped column, or has a column "
      "of the wrong type (text: string; messages: list of {role, content} structs).",
      bad=_example('parquet("examples/data/chat.parquet", messages = "conversation")'),
      good=_example('parquet("examples/data/chat.parquet", messages = "messages")'))
def parquet_schemas(p: Pipeline) -> Iterator[Diagnostic]:
    for decl in p.datasets.values():
        spec = decl.spec
        if not isinstance(spec, ParquetSource):
            continue
        path = p.resolve_path(spec.path)
        where = decl.field_spans.get(("path",), decl.name_span)
        if not exists(path):
            continue  # TNX403, for every source's `files()`
        from tunix_dsl.data.parquet import file_columns, type_problem

        try:
            columns = file_columns(path, spec.split)
        except DataError as err:
            yield diagnostic("TNX460", f"cannot read dataset `{decl.name}`: {err}", where,
                             label="unreadable parquet")
            continue
        mapping = spec.mapping()
        for column, key in mapping.items():
            span = decl.field_spans.get((column,), decl.name_span)
            if key not in columns:
                yield diagnostic(
                    "TNX460", f"\"{spec.path}\" has no column \"{key}\" for `{column}`", span,
                    label="not in the schema",
                    help="columns: " + ", ".join(f'"{c}"' for c in sorted(columns)))
                continue
            problem = type_problem(column, columns[key])
            if problem:
                yield diagnostic("TNX460", f"column \"{key}\" of \"{spec.path}\" {problem}", span,
                                 label=f"`{column}` column")
        sources = set(mapping.values())
        for key, arrow_type in columns.items():  # unmapped columns named like a canonical one
            if key in sources or key in mapping or key not in CANONICAL_COLUMNS:
                continue
            problem = type_problem(key, arrow_type)
            if problem:
                yield diagnostic("TNX460", f"column \"{key}\" of \"{spec.path}\" {problem}", where,
                                 label=f"`{key}` column")

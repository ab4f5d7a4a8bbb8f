"""TNX3xx: sequence lengths against the data a stage reads (mirrors runtime/data.py).

A stage whose `max_seq_len` (or its model's context) cannot hold a sequence
at all, or drops every row of its dataset because the completions alone do
not fit, would fail when its data is built, after earlier stages trained.
"""

from __future__ import annotations

from collections.abc import Iterator

from tunix_dsl.check.ir import Pipeline, Stage
from tunix_dsl.data.datasets import CONSUMERS, MIN_SEQUENCE_TOKENS, tokens_needed
from tunix_dsl.grammar.diagnostics import Diagnostic, Label, Severity
from tunix_dsl.rules.codes import _with_stage
from tunix_dsl.rules.registry import diagnostic, rule

E = Severity.ERROR
# Up to this many rows, lint generates (or reads) them and measures the shortest exactly.
_EXACT_ROWS = 256


def _max_len(p: Pipeline, stage: Stage) -> int | None:
    """The sequence length the runtime tokenizes a stage's data at, when known."""
    limit = getattr(stage.config, "max_seq_len", None)
    cfg = p.model_config(stage.trained)
    if limit is None or cfg is None:
        return None
    return min(limit, cfg.max_seq_len)


@rule("TNX312", "sequence-too-short", E,
      f"A stage sequence length (max_seq_len, or the model's context) below "
      f"{MIN_SEQUENCE_TOKENS} tokens: bos, a prompt token and one more.",
      bad=_with_stage("model = tiny\ndata = sums\nsteps = 10\nmax_seq_len = 2"),
      good=_with_stage("model = tiny\ndata = sums\nsteps = 10\nmax_seq_len = 16"))
def sequence_too_short(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in p.stages:
        length = _max_len(p, stage)
        if length is not None and length < MIN_SEQUENCE_TOKENS:
            yield diagnostic(
                "TNX312", f"stage `{stage.name}` builds sequences of at most {length} tokens",
                stage.span_of("max_seq_len"), label=f"at least {MIN_SEQUENCE_TOKENS}",
                help=f"raise max_seq_len to at least {MIN_SEQUENCE_TOKENS} (and the model's "
                     "context with it)")


@rule("TNX313", "rows-dropped", E,
      "A max_seq_len at which every row of a dataset (synthetic, the first rows of a jsonl "
      "file, or what a plugin source's `row_lengths` offers) would be dropped: its completion "
      "alone does not fit.",
      bad=_with_stage("model = tiny\ndata = sums\nsteps = 10\nmax_seq_len = 4").replace(
          "count = 100", "digits = 3, count = 100"),
      good=_with_stage("model = tiny\ndata = sums\nsteps = 10\nmax_seq_len = 16").replace(
          "count = 100", "digits = 3, count = 100"))
def rows_dropped(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in p.stages:
        length = _max_len(p, stage)
        if length is None or length < MIN_SEQUENCE_TOKENS:
            continue  # TNX312
        for role, name in stage.datasets.items():
            shortest = _shortest_row(p, stage, name)
            if shortest is not None and shortest > length:
                decl = p.datasets[name]
                yield diagnostic(
                    "TNX313", f"the rows of dataset `{name}` need more than the {length} tokens "
                    f"stage `{stage.name}` allows (the shortest needs {shortest})",
                    stage.span_of("max_seq_len"), label=f"{length} tokens",
                    secondary=[Label(stage.span_of(role), f"`{name}` is read here"),
                               Label(decl.name_span, "declared here")],
                    help=f"raise max_seq_len to at least {shortest}: completions are never cut, "
                         "so a row whose completion does not fit is dropped")


def _shortest_row(p: Pipeline, stage: Stage, name: str) -> int | None:
    """Tokens the shortest row of a dataset needs, with a byte tokenizer (whose token count
    is known without loading anything); None when unknown or when no row is ever dropped.

    The rows measured are what the source's `row_lengths` offers (built-in or plugin): a
    jsonl file's first rows, a synthetic task's rows or its bound."""
    decl = p.datasets.get(name)
    tokenizer = p.tokenizer_of(stage.trained)
    consumer = stage.info.consumer
    if decl is None or tokenizer is None or tokenizer[0] != "bytes" or not CONSUMERS[consumer].kept_whole:
        return None
    lengths = decl.spec.row_lengths(p.base_dir, _EXACT_ROWS)
    return min(tokens_needed(consumer, row) for row in lengths) if lengths else None

"""TNX37x: what `tnx run` checks on disk before the first step (`runtime/preflight.py`).

Lint only warns about a missing file (TNX403): it may be created before the
run. The pre-flight check of `tnx run` (and `tnx plan`) turns every such
problem of the whole pipeline into an error at once, before any stage trains,
so no earlier stage spends hours when a later one would fail.

The failing examples below need the pre-flight check to fail (lint alone
passes them): `tests/test_rules.py` runs it for these codes.
"""

from __future__ import annotations

from tunix_dsl.grammar.diagnostics import Severity
from tunix_dsl.rules.codes import _PRELUDE, _with_stage, without_sums
from tunix_dsl.rules.registry import declare

E = Severity.ERROR
_SFT = "model = tiny\ndata = sums\nsteps = 10"
_QA = 'dataset qa = jsonl("examples/data/{file}", prompt = "question", completion = "answer")\n'


def _sft_on(file: str) -> str:
    return without_sums(_with_stage("model = tiny\ndata = qa\nsteps = 10", extra=_QA.format(file=file)))


declare("TNX370", "data-file-unreadable", E,
        "A jsonl data file a stage or eval reads does not exist or cannot be read.",
        bad=_sft_on("qa_missing.jsonl"), good=_sft_on("qa.jsonl"), owner="preflight")
declare("TNX371", "bad-data-rows", E,
        "Rows of a jsonl data file that a stage cannot use: invalid JSON, a missing key, a "
        "non-string or empty text value; every bad row is listed (the first 20, then a count).",
        bad=_sft_on("qa_bad_rows.jsonl"), good=_sft_on("qa.jsonl"), owner="preflight")
declare("TNX372", "checkpoint-incomplete", E,
        "An `hf(\"dir\")` model whose directory lacks a readable config.json, safetensors "
        "weights, or (without a `tokenizer =`) the tokenizer files.",
        bad=_with_stage(_SFT).replace('model tiny = transformer(preset = "pico", tokenizer = chars)',
                                      'model tiny = hf("checkpoints/llama-1b")'),
        good=_with_stage(_SFT), owner="preflight")
declare("TNX373", "tokenizer-unreadable", E,
        "An `hf_tokenizer(\"dir\")` whose tokenizer.json is missing or cannot be loaded.",
        bad=_with_stage(_SFT).replace("tokenizer chars = bytes()",
                                      'tokenizer chars = hf_tokenizer("examples/data/no_tok")'),
        good=_with_stage(_SFT).replace("tokenizer chars = bytes()",
                                       'tokenizer chars = hf_tokenizer("examples/data/tok")'),
        owner="preflight")
declare("TNX374", "reward-function-missing", E,
        "A `python(\"file.py:fn\")` reward whose file is missing, does not parse, or defines no "
        "top-level `fn` (checked by reading the file, without importing it).",
        bad=_PRELUDE + 'reward mine = python("examples/rewards.py:scores")\n'
        + _with_stage("policy = tiny\ndata = sums\nrewards = [mine]\nsteps = 10\n"
                      "batch_size = 16", kind="grpo").replace(_PRELUDE, "\n"),
        good=_PRELUDE + 'reward mine = python("examples/rewards.py:score")\n'
        + _with_stage("policy = tiny\ndata = sums\nrewards = [mine]\nsteps = 10\n"
                      "batch_size = 16", kind="grpo").replace(_PRELUDE, "\n"),
        owner="preflight")
declare("TNX375", "output-not-writable", E,
        "An export destination (or the run directory) that cannot be written: an existing "
        "file in the way, or a folder without write permission.",
        bad=_with_stage(_SFT).replace('"out/tune"', '"pyproject.toml/tune"'),
        good=_with_stage(_SFT), owner="preflight")
declare("TNX376", "nothing-to-run", E,
        "A pipeline with no stage, eval or export: `tnx run` would do nothing.",
        bad=without_sums(_PRELUDE),
        good=without_sums(_PRELUDE) + '\nexport tiny to "out/tiny" as "hf"\n', owner="preflight")

"""TNX230–239: each rule fires at its line:column, and without it the run would fail.

The second half of each pair calls the runtime code the rule stands in front
of, with the values the rule refuses, and shows the error a user would have
met after earlier stages trained.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tunix_dsl.api import parse
from tunix_dsl.check.ir import Pipeline

PRELUDE = """pipeline limits {
  seed = 0
}

tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars, n_layers = 1)
dataset sums = synthetic("addition", digits = 1, count = 32, seed = 1)
reward ok = exact_match()
"""

LORA_STAGE = """
stage tune: sft {
  model = tiny
  data  = sums
  steps = 1
  lora  = lora(rank = 4)
}
"""

GRPO_STAGE = """
stage solve: grpo {
  policy         = tiny
  data           = sums
  rewards        = [ok]
  generations    = 2
  batch_size     = 4
  max_prompt_len = prompt_len
  max_new_tokens = 2
  steps          = 1
}
export solve.model to "out/solve" as "hf"
"""


def _errors(pipeline: Pipeline, code: str) -> list[tuple[int, int, str]]:
    return [(d.span.line, d.span.column, d.message) for d in pipeline.diagnostics if d.code == code]


# ----------------------------------------------------------------------------- TNX230


def test_adapter_export_in_hf_format_is_an_error_at_the_format() -> None:
    text = PRELUDE + LORA_STAGE + 'export tune.adapter to "out/ad" as "hf"\n'
    pipeline = parse(text, "limits.tnx")
    assert _errors(pipeline, "TNX230") == [  # line 16: the export, at "hf"
        (16, 36, '`tune.adapter` is the adapter alone; it exports as "orbax", not "hf"')]
    fixed = parse(text.replace('as "hf"', 'as "orbax"'), "limits.tnx")
    assert fixed.ok and _errors(fixed, "TNX230") == []


def test_without_tnx230_the_export_fails_after_training(tmp_path: Path) -> None:
    from tunix_dsl.runtime.executor import Executor, RunError
    from tunix_dsl.runtime.stage_lifecycle import ADAPTER_DIR

    text = PRELUDE + LORA_STAGE + 'export tune.adapter to "out/ad" as "hf"\n'
    pipeline = parse(text, str(tmp_path / "limits.tnx"), base_dir=tmp_path)
    executor = Executor(pipeline, tmp_path / "run")
    # What the trained stage leaves behind: its adapter weights under output/adapter.
    (executor.layout.stage("tune").output / ADAPTER_DIR).mkdir(parents=True)
    with pytest.raises(RunError, match='an adapter exports as "orbax", not \'hf\''):
        executor.export(pipeline.exports[0])


# ----------------------------------------------------------------------------- TNX231


@pytest.mark.parametrize("length", [1, 2])
def test_rl_prompt_shorter_than_three_tokens_is_an_error_at_the_field(length: int) -> None:
    text = f"param prompt_len = 8\n{PRELUDE}{GRPO_STAGE}"
    assert parse(text, "limits.tnx").ok
    pipeline = parse(text, "limits.tnx", overrides={"prompt_len": str(length)})  # after --set
    plural = "s" if length > 1 else ""
    assert _errors(pipeline, "TNX231") == [
        (17, 20, f"stage `solve` cuts prompts to {length} token{plural}, too few for a prompt")]


def test_without_tnx231_building_the_prompts_fails() -> None:
    from tunix_dsl.data.datasets import synthetic_rows
    from tunix_dsl.data.tokenizers import ByteTokenizer
    from tunix_dsl.runtime.data import tokenize_rows

    rows = synthetic_rows("addition", count=4, seed=1, digits=1)
    # what run_rl_stage does with `max_prompt_len = 2` before its first step
    with pytest.raises(ValueError, match="max_len 2 is too short for a sequence"):
        tokenize_rows(rows, "prompt", ByteTokenizer(), 2, source="sums")
    assert len(tokenize_rows(rows, "prompt", ByteTokenizer(), 3, source="sums")) == 4


# ----------------------------------------------------------------------------- TNX305 in the API

_API_RUN = '''
import sys
from pathlib import Path
from tunix_dsl.api import parse
from tunix_dsl.runtime.executor import Executor
from tunix_dsl.runtime.planning import MeshDiagnostics

text, run_dir = sys.stdin.read(), Path(sys.argv[1])
pipeline = parse(text, "limits.tnx")
assert pipeline.ok, pipeline.diagnostics  # data = -1: lint cannot know the device count
try:
    Executor(pipeline, run_dir, log=lambda line: None).run()
except MeshDiagnostics as err:
    for d in err.diagnostics:
        print(d.code, d.span.line, d.span.column, d.message)
print("stages trained:", sorted(p.name for p in (run_dir / "stages").glob("*")))
'''


def test_executor_run_refuses_a_batch_the_devices_cannot_split_before_any_stage(tmp_path: Path) -> None:
    """`tnx run` checks TNX305 on the devices present; a Python caller of `Executor.run` gets the
    same located diagnostic before anything trains, not an error when the stage lowers."""
    import os
    import subprocess
    import sys

    text = PRELUDE.replace("seed = 0", "seed = 0\n  mesh = { data = -1 }") + LORA_STAGE.replace(
        "steps = 1", "steps = 1\n  batch_size = 3") + 'export tune.model to "out/tune" as "hf"\n'
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", _API_RUN, str(tmp_path / "run")], input=text,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        "TNX305 15 16 micro-batch 3 does not split over 2 batch shards on 2 devices",
        "stages trained: []",
    ]

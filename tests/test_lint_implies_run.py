"""What lints clean, plans and runs (DESIGN.md §2: the checker holds every constraint).

Every runnable example, and hypothesis-drawn variants of its numeric fields
shrunk to tiny sizes, is linted; whatever lints clean must also pass `tnx plan`
(AOT lowering of every stage) and `tnx run` (every stage's steps, exports and
evals), in-process — RL stages (grpo, ppo) included. A stage kind without a
lowering would be left out (`tnx run` refuses it by design). When a variant
lints clean and fails, the fix is a lint rule for the class, never a change here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunix_dsl.api import parse
from tunix_dsl.check.ir import Pipeline
from tunix_dsl.cli.render import render_text
from tunix_dsl.schemas import STAGE_KINDS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
_KIND = re.compile(r"^stage\s+\w+\s*:\s*(\w+)", re.MULTILINE)
_STAGE = re.compile(r"^(stage\s+\w+\s*:\s*\w+\s*\{\n)(.*?^\})", re.MULTILINE | re.DOTALL)


def _runnable(path: Path) -> bool:
    return set(_KIND.findall(path.read_text(encoding="utf-8"))) <= set(STAGE_KINDS)


RUNNABLE = [p for p in sorted(EXAMPLES.glob("*.tnx")) if _runnable(p)]

# Tiny sizes every example is shrunk to before the drawn values are applied.
TINY = {"steps": 1, "warmup": 0, "batch_size": 4, "max_seq_len": 24, "count": 32, "digits": 1,
        "max_new_tokens": 2, "generations": 2, "buffer": 1}


def shrink(text: str, values: dict[str, int], out: Path) -> str:
    """`text` with each `field = <number>` set to `values[field]`, stage fields missing from a
    block added, exports written under `out`, and every eval limited to two rows."""
    for field, value in values.items():
        # the leading number only: `steps = 600 * scale` keeps its `* scale`, and
        # `steps = max(1, round(600 * scale))` its calls
        text = re.sub(rf"\b({field}\s*=\s*(?:[a-z]+\((?:[0-9]+,\s*)?)*)-?[0-9][0-9_]*(?:\.[0-9]+)?(?:e-?[0-9]+)?",
                      rf"\g<1>{value}", text)
    # `steps = practice_steps`: the param the field is set from takes the tiny value
    for name in set(re.findall(r"^\s*steps\s*=\s*([a-z_]\w*)\s*(?:#.*)?$", text, re.MULTILINE)):
        text = re.sub(rf"^(param\s+{name}\s*=\s*)[0-9][0-9_]*", rf"\g<1>{values['steps']}", text,
                      flags=re.MULTILINE)
    added = "".join(f"  {f} = {values[f]}\n" for f in ("steps_per_call", "grad_accum")
                    if f in values)
    text = _STAGE.sub(lambda m: m.group(1) + "".join(
        line for line in added.splitlines(keepends=True)
        if not re.search(rf"^\s*{line.split()[0]}\b", m.group(2), re.MULTILINE)) + m.group(2),
        text)
    text = re.sub(r'(^export\s+\S+\s+to\s+)"([^"]*)"',
                  lambda m: f'{m.group(1)}"{(out / m.group(2)).as_posix()}"', text,
                  flags=re.MULTILINE)
    # one block per model: compile time grows with depth, the checks under test do not
    text = re.sub(r"(transformer\([^)]*)\)", lambda m: re.sub(r"n_layers\s*=\s*[0-9]+", "n_layers = 1", m[0])
                  if "n_layers" in m[1] else f"{m[1]}, n_layers = 1)", text)
    return re.sub(r"^(eval\s+\w+\s*\{\n)", r"\1  limit = 2\n", text, flags=re.MULTILINE)


def check(example: Path, values: dict[str, int], tmp: Path) -> Pipeline:
    text = shrink(example.read_text(encoding="utf-8"), {**TINY, **values}, tmp / "out")
    return parse(text, str(example), base_dir=example.parent)


def plan_and_run(pipeline: Pipeline, tmp: Path) -> None:
    """`tnx plan` then `tnx run` of a pipeline that linted clean; any exception fails."""
    from tunix_dsl.runtime.executor import Executor
    from tunix_dsl.runtime.planning import plan_pipeline

    plans = plan_pipeline(pipeline)
    planned = [p.name.split("/")[0] for p in plans]  # an RL stage: one row per program
    assert list(dict.fromkeys(planned)) == [s.name for s in pipeline.stages]
    results = Executor(pipeline, tmp / "run", log=lambda line: None).run()
    assert [r.name for r in results] == [s.name for s in pipeline.stages]
    assert all(r.status == "ran" for r in results)


def _context(pipeline: Pipeline, values: dict[str, int]) -> str:
    shown = render_text(pipeline.diagnostics, pipeline.sources, color=False)
    return f"values {values}\n{shown}"


def test_runnable_examples_are_found() -> None:
    names = {p.stem for p in RUNNABLE}
    assert {"sft", "sft_lora", "dpo", "distill", "supervised", "grpo", "ppo", "quickstart"} <= names


@pytest.mark.parametrize("example", RUNNABLE, ids=lambda p: p.stem)
def test_examples_shrunk_lint_clean_plan_and_run(example: Path, tmp_path: Path) -> None:
    pipeline = check(example, {}, tmp_path)
    assert pipeline.ok, _context(pipeline, TINY)
    plan_and_run(pipeline, tmp_path)


# Numeric fields drawn around the edges the checker must know about: steps vs steps_per_call
# and warm-up, batch vs grad_accum, LoRA rank vs the layer widths (pico: 32-wide k/v), sequence
# length vs context and data, synthetic ranges. Valid choices are repeated so that about
# half of the draws lint clean and run; the edges lint clean only in some combinations.
VARIANTS = st.fixed_dictionaries({
    "steps": st.integers(1, 4),
    "steps_per_call": st.sampled_from([1, 1, 1, 2, 3]),
    "grad_accum": st.sampled_from([1, 1, 1, 2, 3]),
    "batch_size": st.integers(1, 6),
    "warmup": st.sampled_from([0, 0, 1, 2, 4]),
    "rank": st.sampled_from([4, 4, 1, 32, 33]),
    "max_seq_len": st.sampled_from([16, 16, 16, 5, 3, 2, 200]),
    "digits": st.sampled_from([1, 1, 1, 2, 0]),
    "count": st.sampled_from([8, 8, 1]),
    "max_new_tokens": st.sampled_from([2, 2, 127]),
})

@settings(max_examples=5, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(["sft_lora", "dpo", "distill", "orpo", "grpo"]), values=VARIANTS)
def test_variants_that_lint_clean_plan_and_run(name: str, values: dict[str, int],
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp(name)
    pipeline = check(EXAMPLES / f"{name}.tnx", values, tmp)
    if pipeline.ok:
        plan_and_run(pipeline, tmp)
    else:  # refused: each refusal is a located diagnostic, never an internal error
        assert all(d.code != "TNX000" and d.span.line for d in pipeline.errors), \
            _context(pipeline, values)


# ------------------------------------------------------------------ tnx plan --devices

_MESH = '''tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars, n_layers = 1)
dataset sums = synthetic("addition", count = 16)

stage tune: sft {
  model       = tiny
  data        = sums
  steps       = 1
  batch_size  = 8
  max_seq_len = 16
}

export tune.model to "out/tune" as "hf"
'''


def _tnx(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run([sys.executable, "-m", "tunix_dsl", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("count", ["-1", "-2", "0", "two"])
def test_plan_rejects_device_counts_below_one_as_usage(count: str, tmp_path: Path) -> None:
    (tmp_path / "m.tnx").write_text(_MESH, encoding="utf-8")
    done = _tnx("plan", "m.tnx", f"--devices={count}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "argument --devices: expected a device count" in done.stderr
    assert "Traceback" not in done.stderr


def test_plan_on_devices_that_cannot_split_the_batch_gives_the_lint_diagnostic(
        tmp_path: Path) -> None:
    # mesh { data = -1 } on 3 devices: 3 batch shards, and 8 rows do not split 3 ways
    (tmp_path / "m.tnx").write_text(_MESH, encoding="utf-8")
    done = _tnx("plan", "m.tnx", "--devices", "3", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "error[TNX305]: micro-batch 8 does not split over 3 batch shards" in done.stderr
    assert "m.tnx:9:17" in done.stderr and "Traceback" not in done.stderr


def test_check_mesh_resolves_the_wildcard_axis_like_the_mesh_does() -> None:
    from tunix_dsl.runtime.planning import MeshDiagnostics, check_mesh, device_count

    pipeline = parse(_MESH, "m.tnx", base_dir=ROOT)
    for devices in (1, 2, 4, 8):
        check_mesh(pipeline, devices)
    with pytest.raises(MeshDiagnostics) as err:
        check_mesh(pipeline, 3)
    assert [(d.code, d.span.line, d.span.column) for d in err.value.diagnostics] == [
        ("TNX305", 9, 17)]
    fixed = parse('pipeline p {\n  mesh = { data = 2 }\n}\n' + _MESH, "m.tnx", base_dir=ROOT)
    with pytest.raises(ValueError, match="needs 2 devices, not 4"):
        check_mesh(fixed, 4)
    with pytest.raises(ValueError, match="at least 1"):
        device_count(0, 8)
    assert device_count(None, 8) == 8


# ------------------------------------------------------------------ LoRA targets: one matcher


@pytest.mark.parametrize("tied", [True, False])
def test_lint_knows_exactly_the_kernel_paths_apply_lora_matches(tied: bool) -> None:
    from flax import nnx

    from tunix_dsl.models.config import ModelConfig
    from tunix_dsl.models.info import dense_kernel_shapes
    from tunix_dsl.models.layer_stack import layer_paths
    from tunix_dsl.models.layers import Dense
    from tunix_dsl.models.transformer import Transformer

    cfg = ModelConfig.from_preset("pico", 259, n_layers=2, tie_embeddings=tied)
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    # per-layer paths, as apply_lora matches them also on stacked blocks ([L, in, out] kernels)
    runtime = {name: tuple(module.kernel.shape)[0 if layer is None else 1:]
               for path, module in nnx.iter_modules(model) if isinstance(module, Dense)
               for name, layer in layer_paths((*path, "kernel"), module.kernel)}
    assert dense_kernel_shapes(cfg) == runtime

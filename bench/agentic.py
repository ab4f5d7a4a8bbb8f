"""Agentic RL benchmark (not a test): sync vs async rollout on the calculator task.

    python bench/agentic.py [--sft-steps 300] [--steps 10] [--sleep 0.05] [--run-dir DIR]

One pipeline, run once: a short SFT stage on `examples/data/agent_calculator.jsonl`
teaches the pico model the hermes tool-call format, then two GRPO stages start from it
side by side, identical but for `rollout = "sync"` vs `rollout = "async"`
(`max_staleness = 1`). Their tool is the example's `calculate` slowed by `--sleep`
seconds per call (the latency of a real tool: a search, a sandbox, an API).

A step's time is the wall time between two consecutive dispatches of the stage
(`Executor(on_dispatch=...)`); the median is taken over the steps after the first two
(which compile the programs). The SFT stage is cached in `--run-dir`, so a rerun only
repeats the two GRPO stages (delete the directory to start over).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = 2  # steps whose time includes compilation

TOOLS = '''"""`calculate` with a fixed latency per call (bench/agentic.py writes this file)."""

import time

from agent_tools import calculate as _calculate


def calculate(expression: str) -> str:
    """Evaluate an integer arithmetic expression.

    Args:
        expression: integers joined by + - * // % and parentheses, e.g. "12 * (3 + 4)"
    """
    time.sleep({sleep})
    return _calculate(expression)
'''

PIPELINE = '''pipeline agentic_bench {{
  seed = 0
}}

tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars, max_seq_len = 256)
dataset transcripts = jsonl("data/agent_calculator.jsonl")
reward correct = exact_match(field = "answer")
tool calc = python("slow_tools.py:calculate")
environment calculator = tools([calc], reward = correct)

stage imitate: sft {{
  model       = tiny
  data        = transcripts
  steps       = {sft_steps}
  batch_size  = 32
  max_seq_len = 160
  optimizer   = adamw(lr = 5e-3, warmup = 20)
}}
{stages}
'''

GRPO = '''
stage {name}: grpo {{
  policy                 = imitate.model
  data                   = transcripts
  environment            = calculator
  tool_format            = "hermes"
  max_turns              = 2
  max_tool_calls         = 1
  tool_timeout           = 2.0
  max_prompt_len         = 32
  max_new_tokens         = 80
  max_observation_tokens = 32
  generations            = 4
  batch_size             = 16
  temperature            = 1.0
  beta                   = 0.0
  steps                  = {steps}
  rollout                = "{mode}"
  optimizer              = adamw(lr = 3e-4)
}}
'''

MODES = ("sync", "async")


def write_workdir(work: Path, sft_steps: int, steps: int, sleep: float) -> Path:
    (work / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "examples" / "data" / "agent_calculator.jsonl", work / "data")
    shutil.copy(ROOT / "examples" / "agent_tools.py", work)
    (work / "slow_tools.py").write_text(TOOLS.format(sleep=sleep))
    stages = "".join(GRPO.format(name=f"{mode}_rl", steps=steps, mode=mode) for mode in MODES)
    (work / "bench.tnx").write_text(PIPELINE.format(sft_steps=sft_steps, stages=stages))
    return work / "bench.tnx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds per tool call")
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/tnx_bench_agentic"))
    args = parser.parse_args()
    assert args.steps > SKIP + 1, f"--steps must exceed {SKIP + 1} (the first {SKIP} steps compile)"

    from tunix_dsl.api import load
    from tunix_dsl.runtime.executor import Executor

    work = args.run_dir / "work"
    pipeline_file = write_workdir(work, args.sft_steps, args.steps, args.sleep)
    pipeline = load(str(pipeline_file))
    assert pipeline.ok, "\n".join(str(d) for d in pipeline.diagnostics)
    stamps: dict[str, list[float]] = defaultdict(list)

    def on_dispatch(stage: str, done: int) -> None:
        stamps[stage].append(time.perf_counter())

    for mode in MODES:  # a rerun must time both stages again, not read them from the cache
        shutil.rmtree(args.run_dir / "run" / "stages" / f"{mode}_rl", ignore_errors=True)
    Executor(pipeline, args.run_dir / "run", on_dispatch=on_dispatch).run()

    from tunix_dsl.runtime.report import read_rows

    results = {}
    for mode in MODES:
        name = f"{mode}_rl"
        times = [b - a for a, b in zip(stamps[name][SKIP - 1:], stamps[name][SKIP:], strict=False)]
        rows = read_rows(args.run_dir / "run" / "stages" / name / "metrics.jsonl")
        calls = max((v for r in rows for k, v in r.items() if k.endswith("/calls")), default=0.0)
        results[mode] = (statistics.median(times), calls / len(rows), rows[-1].get("reward", float("nan")))
    print(f"\n{args.steps} GRPO steps per stage (median over steps {SKIP + 1}..{args.steps}), "
          f"16 episodes a step, tool latency {args.sleep * 1000:.0f} ms")
    print("| rollout | s / step | tool calls / step | last reward |")
    print("|---|---|---|---|")
    for mode, (seconds, calls, reward) in results.items():
        print(f"| {mode} | {seconds:.3f} | {calls:.1f} | {reward:.3f} |")
    print(f"| ratio async / sync | **{results['async'][0] / results['sync'][0]:.2f}x** | | |")


if __name__ == "__main__":
    main()

"""Agentic RL benchmark (not a test): sync vs async rollout on the calculator task.

    python bench/agentic.py [--sft-steps 300] [--steps 10] [--rounds 3] [--sleep 0.05] [--run-dir DIR]

One pipeline, run once: a short SFT stage on `synthetic("calculator_tools")` transcripts
(every one calls the tool) teaches the pico model the hermes tool-call format, then GRPO stages start from it,
identical but for `rollout = "sync"` vs `rollout = "async"` (`max_staleness = 1`),
alternating sync, async, sync, ... for `--rounds` rounds so machine noise hits both alike. Their tool is the example's `calculate` slowed by `--sleep`
seconds per call (the latency of a real tool: a search, a sandbox, an API).

A step's time is the wall time between two consecutive dispatches of the stage
(`Executor(on_dispatch=...)`); the median is taken over the steps after the first two
(which compile the programs), pooled over the rounds. The SFT stage is cached in `--run-dir`, so a rerun only
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

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tools are loaded from their file, not a package
from agent_tools import calculate as _calculate  # noqa: E402


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
dataset transcripts = synthetic("calculator_tools", count = 400)
reward correct = exact_match(field = "answer")
tool calc = python("slow_tools.py:calculate")
environment calculator = tools([calc], reward = correct)

stage imitate: sft {{
  model       = tiny
  data        = transcripts
  steps       = {sft_steps}
  batch_size  = 32
  max_seq_len = 136
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


def stage_names(rounds: int) -> list[tuple[str, str]]:
    return [(mode, f"{mode}_rl_{r}") for r in range(rounds) for mode in MODES]


def write_workdir(work: Path, sft_steps: int, steps: int, rounds: int, sleep: float) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    # copy2 keeps modification times, so a rerun finds the SFT stage's inputs unchanged (cached)
    shutil.copy2(ROOT / "examples" / "agent_tools.py", work)
    stages = "".join(GRPO.format(name=name, steps=steps, mode=mode) for mode, name in stage_names(rounds))
    write_if_changed(work / "slow_tools.py", TOOLS.format(sleep=sleep))
    write_if_changed(work / "bench.tnx", PIPELINE.format(sft_steps=sft_steps, stages=stages))
    return work / "bench.tnx"


def write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="sync/async stage pairs, interleaved")
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds per tool call")
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/tnx_bench_agentic"))
    args = parser.parse_args()
    assert args.steps > SKIP + 1, f"--steps must exceed {SKIP + 1} (the first {SKIP} steps compile)"

    from tunix_dsl.api import load
    from tunix_dsl.runtime.executor import Executor

    work = args.run_dir / "work"
    pipeline_file = write_workdir(work, args.sft_steps, args.steps, args.rounds, args.sleep)
    pipeline = load(str(pipeline_file))
    assert pipeline.ok, "\n".join(str(d) for d in pipeline.diagnostics)
    stamps: dict[str, list[float]] = defaultdict(list)

    def on_dispatch(stage: str, done: int) -> None:
        stamps[stage].append(time.perf_counter())

    for _, name in stage_names(args.rounds):  # a rerun times the RL stages again, not the cache
        shutil.rmtree(args.run_dir / "run" / "stages" / name, ignore_errors=True)
    Executor(pipeline, args.run_dir / "run", on_dispatch=on_dispatch).run()

    from tunix_dsl.runtime.report import read_rows

    times: dict[str, list[float]] = defaultdict(list)
    per_round: dict[str, list[float]] = defaultdict(list)
    calls: dict[str, float] = {}
    for mode, name in stage_names(args.rounds):
        steps = [b - a for a, b in zip(stamps[name][SKIP - 1:], stamps[name][SKIP:], strict=False)]
        times[mode] += steps
        per_round[mode].append(statistics.median(steps))
        rows = read_rows(args.run_dir / "run" / "stages" / name / "metrics.jsonl")
        # the tool counts are cumulative over the stage (its own tool pool)
        calls[mode] = max((v for r in rows for k, v in r.items() if k.endswith("/calls")), default=0.0) / len(rows)
    print(f"\n{args.rounds} rounds of {args.steps} GRPO steps per mode (median over steps "
          f"{SKIP + 1}..{args.steps} of every round), 16 episodes a step, tool latency "
          f"{args.sleep * 1000:.0f} ms")
    print("| rollout | s / step (median) | medians of the rounds | tool calls / step |")
    print("|---|---|---|---|")
    for mode in MODES:
        rounds = ", ".join(f"{t:.3f}" for t in per_round[mode])
        print(f"| {mode} | {statistics.median(times[mode]):.3f} | {rounds} | {calls[mode]:.1f} |")
    ratio = statistics.median(times["async"]) / statistics.median(times["sync"])
    print(f"| ratio async / sync | **{ratio:.2f}x** | | |")


if __name__ == "__main__":
    main()

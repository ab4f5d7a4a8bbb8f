"""How fast `tnx lint` is, measured side by side in one run.

1. Start-up: wall time of `tnx lint examples/quickstart.tnx` (a fresh process)
   against `python -c "import lark, pydantic, networkx"` — the floor any
   front end built on those libraries pays. Runs are interleaved and the
   median is reported. Target: ratio at most 1.5.

   Both sides run as installed: the `tnx` script pip put beside this Python
   (not a version-manager shim such as pyenv's, a shell script that costs
   ~45 ms before Python starts) and bytecode compiled, as `pip install` does
   for the libraries. An editable install under `PYTHONDONTWRITEBYTECODE=1`
   would otherwise recompile every tunix_dsl module on every start.
2. Scale: checking a generated pipeline of 1,000 chained stages, in process
   (parse and the whole check, median of a few runs). Target: under 1 s.

Usage: python bench/lint_startup.py [--runs 15] [--stages 1000] [--check-runs 3]
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.tnx"


def lint_command(path: Path) -> list[str]:
    """The console script installed with this interpreter, else `python -m tunix_dsl`."""
    tnx = Path(sys.executable).with_name("tnx")
    if tnx.is_file() and os.access(tnx, os.X_OK):
        return [str(tnx), "lint", str(path)]
    return [sys.executable, "-m", "tunix_dsl", "lint", str(path)]


def compile_bytecode() -> None:
    """Write the .pyc files a regular (non-editable) `pip install` writes."""
    for package in ("tunix_dsl", "grammar", "compiler", "runtime"):
        compileall.compile_dir(ROOT / package, quiet=1)


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of `command` in a fresh process."""
    cpu_before = child_cpu()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env={**os.environ, "NO_COLOR": "1"})
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr.decode()}")
    return elapsed, child_cpu() - cpu_before


def generated_pipeline(stages: int) -> str:
    """A valid pipeline: one pretrain stage, then `stages - 1` sft stages in a chain."""
    lines = [
        "pipeline big {\n  seed = 0\n}\n",
        "tokenizer chars = bytes()\n",
        'model tiny = transformer(preset = "pico", tokenizer = chars)\n',
        'dataset sums = synthetic("addition", digits = 2, count = 1000, seed = 1)\n',
        "stage s0: pretrain {\n  model = tiny\n  data  = sums\n  steps = 10\n}\n",
    ]
    for i in range(1, stages):
        lines.append(f"stage s{i}: sft {{\n  model = s{i - 1}.model\n  data  = sums\n"
                     f"  steps = 10\n}}\n")
    lines.append(f'export s{stages - 1}.model to "out/big" as "hf"\n')
    return "\n".join(lines)


def check_time(text: str, runs: int) -> tuple[float, float, int, int]:
    """Median seconds for (parse only, parse + check), diagnostics and graph size."""
    from tunix_dsl.api import load
    from tunix_dsl.grammar.parser import parse_module

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.tnx"
        path.write_text(text)
        load(path, {})  # warm: grammar tables, schema classes
        parse_times, check_times = [], []
        for _ in range(runs):
            start = time.perf_counter()
            parse_module(text, str(path))
            parse_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            pipeline = load(path, {})
            check_times.append(time.perf_counter() - start)
    errors = sum(d.is_error for d in pipeline.diagnostics)
    return (statistics.median(parse_times), statistics.median(check_times), errors,
            pipeline.graph.number_of_nodes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--stages", type=int, default=1000)
    parser.add_argument("--check-runs", type=int, default=3)
    args = parser.parse_args()

    compile_bytecode()
    lint = lint_command(QUICKSTART.relative_to(ROOT))
    baseline = [sys.executable, "-c", "import lark, pydantic, networkx"]
    timed(lint), timed(baseline)  # warm the OS file cache and Lark's grammar cache
    lint_runs, base_runs = [], []
    for _ in range(args.runs):  # interleaved, so drift on a noisy machine hits both
        lint_runs.append(timed(lint))
        base_runs.append(timed(baseline))
    lint_median = statistics.median(w for w, _ in lint_runs)
    base_median = statistics.median(w for w, _ in base_runs)
    lint_cpu = statistics.median(c for _, c in lint_runs)
    base_cpu = statistics.median(c for _, c in base_runs)

    parse_s, check_s, errors, nodes = check_time(generated_pipeline(args.stages), runs=args.check_runs)

    ratio, cpu_ratio = lint_median / base_median, lint_cpu / base_cpu
    shown = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(lint))
    print(f"command: python bench/lint_startup.py --runs {args.runs} --stages {args.stages} "
          f"--check-runs {args.check_runs}")
    print(f"python {sys.version.split()[0]} on {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| measurement | wall (median) | CPU (median) | target |")
    print("|---|---|---|---|")
    print(f"| `{shown}` | {lint_median * 1000:.0f} ms | {lint_cpu * 1000:.0f} ms | |")
    print(f'| `python -c "import lark, pydantic, networkx"` | {base_median * 1000:.0f} ms '
          f"| {base_cpu * 1000:.0f} ms | |")
    print(f"| ratio lint / imports | {ratio:.2f}x | {cpu_ratio:.2f}x "
          f"| <= 1.5x {'ok' if ratio <= 1.5 else 'MISSED'} |")
    print(f"| parse {args.stages}-stage pipeline (in process) | {parse_s * 1000:.0f} ms | | |")
    print(f"| check {args.stages}-stage pipeline (parse + check + rules, in process) "
          f"| {check_s * 1000:.0f} ms | | < 1 s {'ok' if check_s < 1 else 'MISSED'} |")
    print(f"\n({nodes} graph nodes, {errors} errors in the generated pipeline)")


if __name__ == "__main__":
    main()

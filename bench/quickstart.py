"""How long the README's main job takes, and what it learns, measured in one run.

Times, each in a fresh process and a fresh run directory:

1. the README's command: the `tnx run examples/quickstart.tnx --set scale=…` line
   read from README.md, so the bench times exactly what a newcomer runs
   (target: at most 3 minutes on a quiet 2-core machine);
2. the same command again at once: every stage cached, evals reprinted;
3. the unscaled quickstart (target: at most 10 minutes).

Wall time and CPU time (user + sys of the child) are both reported, with the
load average at start: on a shared machine the wall time grows with the load,
the CPU time much less. Each run's eval table (from its `evals.json`) is
printed too.

With `--seeds 0 1 2` it runs only the README's command once per pipeline seed
(`--set seed=N`) and prints the eval table of every seed side by side: the
table README.md shows.

Usage: python bench/quickstart.py [--seeds 0 1 2] [--skip-unscaled] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = "examples/quickstart.tnx"
README_RUN = re.compile(r"tnx run examples/quickstart\.tnx(?: --set [\w.=]+)*")


def readme_arguments() -> list[str]:
    """The arguments after `tnx` of the README's quickstart command."""
    found = README_RUN.search((ROOT / "README.md").read_text(encoding="utf-8"))
    if found is None:
        raise SystemExit("README.md has no `tnx run examples/quickstart.tnx ...` line")
    return shlex.split(found.group(0))[1:]


def tnx_command() -> list[str]:
    """The console script installed with this interpreter, else `python -m tunix_dsl`."""
    tnx = Path(sys.executable).with_name("tnx")
    if tnx.is_file() and os.access(tnx, os.X_OK):
        return [str(tnx)]
    return [sys.executable, "-m", "tunix_dsl"]


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(arguments: list[str], run_dir: Path, output: Path) -> tuple[float, float, float]:
    """(wall s, CPU s, load average at start) of one `tnx` run into `run_dir`; its terminal
    output is written to `output` (the README's sample output is copied from there)."""
    load = os.getloadavg()[0]
    cpu_before = child_cpu()
    start = time.perf_counter()
    done = subprocess.run([*tnx_command(), *arguments, "--run-dir", str(run_dir)], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "NO_COLOR": "1"})
    elapsed = time.perf_counter() - start
    output.write_text(done.stdout, encoding="utf-8")
    if done.returncode != 0:
        raise SystemExit(f"tnx {' '.join(arguments)} failed ({done.returncode}):\n{done.stdout[-4000:]}")
    return elapsed, child_cpu() - cpu_before, load


def scores(run_dir: Path) -> dict[str, float]:
    """model -> score of the run's (first) eval block."""
    evals = json.loads((run_dir / "evals.json").read_text())
    return {r["model"]: r["score"] for r in next(iter(evals.values()))}


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def time_runs(work: Path, skip_unscaled: bool) -> None:
    readme = readme_arguments()
    runs = [("README: tnx " + " ".join(readme), readme, work / "readme", "readme"),
            ("same command again (cached)", readme, work / "readme", "readme-cached")]
    if not skip_unscaled:
        runs.append((f"unscaled: tnx run {QUICKSTART}", ["run", QUICKSTART], work / "unscaled",
                     "unscaled"))
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print("| run | wall | CPU (user+sys) | load avg at start |")
    print("|---|---|---|---|")
    tables: dict[str, dict[str, float]] = {}
    for label, arguments, run_dir, name in runs:
        wall, cpu, load = timed(arguments, run_dir, work / f"{name}.out")
        print(f"| {label} | {minutes(wall)} | {minutes(cpu)} | {load:.1f} |", flush=True)
        tables[label] = scores(run_dir)
    print_scores(tables)


def seed_runs(work: Path, seeds: list[int]) -> None:
    readme = readme_arguments()
    print(f"tnx {' '.join(readme)} --set seed=N")
    tables = {}
    for seed in seeds:
        run_dir = work / f"seed{seed}"
        wall, cpu, load = timed([*readme, "--set", f"seed={seed}"], run_dir,
                                work / f"seed{seed}.out")
        print(f"seed {seed}: wall {minutes(wall)}, CPU {minutes(cpu)}, load {load:.1f}", flush=True)
        tables[f"seed {seed}"] = scores(run_dir)
    print_scores(tables)


def print_scores(tables: dict[str, dict[str, float]]) -> None:
    """One column per run, one row per model: exact-match accuracy in percent."""
    models = list(dict.fromkeys(m for table in tables.values() for m in table))
    print("\n| model | " + " | ".join(tables) + " |")
    print("|---|" + "---|" * len(tables))
    for model in models:
        cells = [f"{100 * t[model]:.1f}%" if model in t else "–" for t in tables.values()]
        print(f"| {model} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", help="only the README command, per seed")
    parser.add_argument("--skip-unscaled", action="store_true", help="time the README command only")
    parser.add_argument("--keep", type=Path, help="write the run directories and each run's "
                        "terminal output (NAME.out) here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tnx-quickstart-") as tmp:
        work = args.keep or Path(tmp)
        if args.seeds:
            seed_runs(work, args.seeds)
        else:
            time_runs(work, args.skip_unscaled)


if __name__ == "__main__":
    main()

"""Peak resident memory of a whole `tnx run`, with and without releasing finished models.

The executor drops a model from memory after its last reader (a later stage,
an eval or an export: `Executor.release`). This runs the same pipeline in a
fresh subprocess per variant and a fresh run directory each, and reports
side by side the peak RSS (the child's own `ru_maxrss`) and the most weight
bytes the executor held outside the running stage (checked as each stage is lowered):

    python bench/peak_rss.py examples/supervised.tnx --set scale=0.2

`keep` replays the old behaviour (every model stays until the end) by making
`release` a no-op in that child only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = """
import resource, sys
from tunix_dsl.runtime import executor
from tunix_dsl.runtime.cli_commands import main
from flax import nnx
if sys.argv[1] == "keep":
    executor.Executor.release = lambda self, ref: None
held = [0]
lower = executor.Executor.lower
def measured_lower(self, stage, models):
    # Weights the executor keeps outside the running stage, once the stage's inputs are cloned.
    live = [*self.outputs.values(), *self._decl_models.values()]
    nbytes = sum(x.nbytes for m in live for x in __import__("jax").tree.leaves(nnx.state(m)))
    held[0] = max(held[0], nbytes)
    return lower(self, stage, models)
executor.Executor.lower = measured_lower
code = main("run", sys.argv[2:])
print("PEAK_RSS_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print("HELD_BYTES", held[0])
sys.exit(code)
"""


def run_variant(variant: str, tnx: str, sets: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"tnx-rss-{variant}-") as work:
        argv = [sys.executable, "-c", _CHILD, variant, tnx, "--run-dir", str(Path(work) / "run")]
        argv += [a for s in sets for a in ("--set", s)]
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"{variant}: tnx run failed ({done.returncode}):\n{done.stderr[-2000:]}")
        peak = int(done.stdout.rsplit("PEAK_RSS_KIB", 1)[1].split()[0])  # the child's own maximum
        held = int(done.stdout.rsplit("HELD_BYTES", 1)[1].split()[0])
        return {"peak_rss_mib": round(peak / 1024, 1), "held_model_mib": round(held / 2**20, 2),
                "wall_s": round(wall, 1),
                "released": done.stdout.count("released ")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    results = {v: run_variant(v, args.file, args.set) for v in ("release", "keep")}
    print(json.dumps(results, indent=2))
    keep, rel = results["keep"]["peak_rss_mib"], results["release"]["peak_rss_mib"]
    print(f"peak RSS: keep every model {keep:.0f} MiB, release after last reader {rel:.0f} MiB "
          f"({keep - rel:+.0f} MiB saved, {rel / keep:.2f}x); weights held beside the running "
          f"stage at most: {results['keep']['held_model_mib']} MiB vs "
          f"{results['release']['held_model_mib']} MiB")


if __name__ == "__main__":
    main()

"""Training-step benchmark (not a test): our compiled stage programs vs hand-written JAX vs Tunix.

    python bench/steps.py [--steps 12] [--rounds 4] [--tunix-python /tmp/tunix-venv/bin/python]

Prints, from one run, the step time of our compiled SFT (full), LoRA SFT, DPO
(full with a separate reference; LoRA with the shared adapters-off
reference) and logit-distillation steps against

(a) a hand-written `jax.jit` + optax step on the same model and loss math
    (`bench/_steps_hand.py`) — target: ours ≤ 1.05x;
(b) Tunix's `PeftTrainer`, `DPOTrainer` and `DistillationTrainer` (PyPI
    `google-tunix`, run in its own venv by `bench/_steps_tunix.py`, a
    subprocess that keeps its trainers alive between rounds) — target: ours
    ≤ 0.8x Tunix for SFT and DPO, and our LoRA step faster than our full step;
(c) PyTorch eager, what a TRL user runs (`bench/_steps_torch.py`, its own
    subprocess): `transformers`' `LlamaForCausalLM` (sdpa attention) loaded
    from the HF export of our initial weights, `torch.optim.AdamW`, SFT and DPO
    only — target: ours ≤ 1.0x; run with `OMP_WAIT_POLICY=PASSIVE` when other
    jobs share the cores (spinning OpenMP threads then cost PyTorch 4-5x CPU);
(d) the `nano` preset with `steps_per_call` 1 vs 8 at two shapes, calls made as
    `tnx run` makes them (host batch → device, dispatch, no per-step sync).

Like `tnx run` on a CPU host, the process first keeps freed heap memory for
reuse (`runtime/host_memory.py`). Sizes are `bench/models.py`'s: vocab 1024, 4 layers, d_model 256, 4 heads,
MLP 1024, seq 128, batch 8 (DPO: 8 pairs), float32, one CPU device. Every
variant is compiled and warmed up (2 steps) first; then `--rounds` rounds run
`--steps / --rounds` steps of every variant in turn (the order rotates each
round), so the machine's noise hits all alike. A figure is the median of its
`--steps` per-step times; each step is timed to completion, in wall time and in
process CPU time (steadier when other jobs share the cores). `--profile KIND`
prints the slowest XLA ops of one of our steps instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import _steps_common as common
import jax
import numpy as np
from flax import nnx

if TYPE_CHECKING:
    from _steps_ours import ModelBank

HERE = Path(__file__).resolve().parent
VARIANTS = ("sft", "sft lora", "dpo", "dpo lora", "distill logit")
TUNIX_TARGET = {"sft": 0.8, "dpo": 0.8}  # variants with a ratio target against Tunix
TORCH_TARGET = {"sft": 1.0, "dpo": 1.0}  # the variants PyTorch runs, and their targets
HAND_TARGET = 1.05


class Worker:
    """A subprocess that builds and times steps (`_steps_tunix.py`, `_steps_torch.py`) and its
    line protocol; its stderr goes to a log file that an error message points to."""

    def __init__(self, python: str, script: str, missing: str):
        self.why, self.script = "", script
        self.proc: subprocess.Popen | None = None
        if not Path(python).exists():
            self.why = missing
            return
        self.log = tempfile.NamedTemporaryFile("w", prefix=Path(script).stem + "_", suffix=".log",
                                               delete=False)
        self.proc = subprocess.Popen(
            [python, str(HERE / script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, text=True, cwd=HERE,
        )  # fmt: skip
        hello = self.receive()
        if "unavailable" in hello:
            self.why = hello["unavailable"]
            self.close()

    def send(self, request: dict) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                return json.loads(line[3:])
        raise RuntimeError(f"the {self.script} subprocess exited (code {self.proc.wait()}); "
                           f"its errors are in {self.log.name}")

    def step_fn(self, name: str, count: int) -> list[float]:
        self.send({"run": name, "steps": count})
        return self.receive()["times"]

    def close(self) -> None:
        """Stop the subprocess; its log is kept only if it did not exit cleanly."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.send({"quit": True})
                self.proc.wait(timeout=60)
            self.log.close()
            if self.proc.returncode == 0:
                os.unlink(self.log.name)
        self.proc = None


def warm(fns: dict[str, Callable[[], object]]) -> tuple[dict[str, float], dict[str, object]]:
    """Compile + one warm step of each: seconds taken, and what each first step returned."""
    spent, first = {}, {}
    for name, fn in fns.items():
        start = time.perf_counter()
        first[name] = fn()
        fn()
        spent[name] = time.perf_counter() - start
    return spent, first


def first_loss(result: object) -> float:
    """The loss of a first step: our metrics dict (per step of the call) or a scalar."""
    loss = result["loss"][0] if isinstance(result, dict) else result
    return float(np.asarray(loss))


Runner = Callable[[int], dict[str, list[float]]]


def interleaved(runners: dict[str, Runner], steps: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """`rounds` rounds of `steps // rounds` steps of every runner, the order rotating."""
    per_round = max(1, steps // rounds)
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            for clock, values in runners[name](per_round).items():
                times[name][clock] += values
    return times


def fmt_ratio(ratio: float, target: float | None, below: bool = False) -> str:
    if target is None:
        return f"{ratio:.2f}x"
    met = ratio < target if below else ratio <= target
    return f"{ratio:.2f}x ({'met' if met else 'MISSED'}, {'<' if below else '≤'} {target:g})"


def build_steps(bank: ModelBank) -> tuple[dict[str, Callable[[], object]], dict[str, float]]:
    """Ours and hand-written steps by '<side> <variant>', compiled and warmed up, and the
    first loss of each."""
    from _steps_hand import hand_steps
    from _steps_ours import our_steps

    steps = {"ours " + n: f for n, f in our_steps(bank).items()}
    steps.update({"hand " + n: f for n, f in hand_steps(bank).items()})
    spent, first = warm(steps)
    print("compile + 1 step (s): " + ", ".join(f"{n} {s:.0f}" for n, s in spent.items()))
    # Same model, same initial weights, same batch: the first losses must agree.
    print("first-step loss ours / hand: " + ", ".join(
        f"{n} {first_loss(first['ours ' + n]):.4f} / {first_loss(first['hand ' + n]):.4f}"
        for n in VARIANTS))
    return steps, {name: first_loss(result) for name, result in first.items()}


def start_torch(bank: ModelBank, checkpoint: str) -> Worker:
    """The PyTorch subprocess, asked to build its steps from the HF export of the weights
    every other side starts from (it builds while we compile)."""
    from tunix_dsl.models.hf import save_hf

    save_hf(bank.model(0), checkpoint)
    torch = Worker(sys.executable, "_steps_torch.py", "")
    torch.send({"build": list(TORCH_TARGET), "checkpoint": checkpoint})
    return torch


def torch_built(torch: Worker, bank: ModelBank, first: dict[str, float]) -> dict[str, str]:
    """Check the PyTorch side's model and first losses against ours; its errors by variant."""
    built = torch.receive()
    ours = sum(x.size for x in jax.tree.leaves(nnx.state(bank.model(0), nnx.Param)))
    if built["built"] and built["params"] != ours:
        raise SystemExit(f"the PyTorch model has {built['params']} parameters, ours {ours}: "
                         "the sizes differ (bench/_steps_torch.py loads our HF export)")
    print(f"torch {built['threads']} threads, compile-free build + 1 step (s): "
          + ", ".join(f"{n} {s:.0f}" for n, s in built["built"].items()))
    print(f"parameters ours / PyTorch: {ours} / {built['params']}; first-step loss ours / PyTorch: "
          + ", ".join(f"{n} {first['ours ' + n]:.4f} / {loss:.4f}"
                      for n, loss in built["first_loss"].items()))
    return {n: f"error: {e}" for n, e in built["errors"].items()}


def main_table(steps: int, rounds: int, tunix_python: str | None, with_torch: bool) -> None:
    from _steps_ours import ModelBank  # noqa: F811  (the runtime import of the type above)

    tunix = Worker(tunix_python, "_steps_tunix.py",
                   f"no Tunix venv at {tunix_python} (see bench/README.md, models section)",
                   ) if tunix_python else None  # fmt: skip
    if tunix is not None and tunix.proc is not None:
        tunix.send({"build": list(VARIANTS)})  # compiles in its own process meanwhile
    bank = ModelBank()
    checkpoint = tempfile.TemporaryDirectory(prefix="steps_torch_")
    torch = start_torch(bank, checkpoint.name) if with_torch else None
    built, first = build_steps(bank)
    runners: dict[str, Runner] = {
        name: (lambda n, f=fn: common.time_steps(f, n)) for name, fn in built.items()
    }
    why_not: dict[str, dict[str, str]] = {"tunix": {}, "torch": {}}
    if torch is not None:
        why_not["torch"] = torch_built(torch, bank, first)
        for name in TORCH_TARGET:
            if name not in why_not["torch"]:
                runners["torch " + name] = lambda n, name=name: torch.step_fn(name, n)
    else:
        why_not["torch"] = dict.fromkeys(VARIANTS, "skipped (--no-torch)")
    if tunix is not None and tunix.proc is not None:
        reply = tunix.receive()
        why_not["tunix"] = reply["errors"]
        print("tunix compile + 1 step (s): " + ", ".join(f"{n} {s:.0f}" for n, s in reply["built"].items()))
        for name in reply["built"]:
            runners["tunix " + name] = lambda n, name=name: tunix.step_fn(name, n)
    else:
        why = tunix.why if tunix is not None else "skipped (--no-tunix)"
        why_not["tunix"] = dict.fromkeys(VARIANTS, why)
    times = interleaved(runners, steps, rounds)
    for worker in (tunix, torch):
        if worker is not None:
            worker.close()
    checkpoint.cleanup()
    for clock in ("cpu", "wall"):
        report(times, clock, why_not)


def report(times: dict[str, dict[str, list[float]]], clock: str,
           why_not: dict[str, dict[str, str]]) -> None:
    med = {name: common.median_ms(t[clock]) for name, t in times.items()}
    what = "process CPU time" if clock == "cpu" else "wall time"
    print(f"\n## Step {what} (median of {len(times['ours sft'][clock])} steps per variant, ms)\n")
    rows = []
    for name in VARIANTS:
        o, h = med["ours " + name], med["hand " + name]
        row = [name, f"{o:.0f}", f"{h:.0f}"]
        ratios = [fmt_ratio(o / h, HAND_TARGET)]
        for side, targets in (("torch", TORCH_TARGET), ("tunix", TUNIX_TARGET)):
            other = med.get(f"{side} {name}")
            row.append(f"{other:.0f}" if other else "—")
            ratios.append(fmt_ratio(o / other, targets.get(name)) if other
                          else why_not[side].get(name, "—"))
        rows.append(tuple(row + ratios))
    common.table(rows, ("step", "ours", "hand-written", "PyTorch", "Tunix", "ours / hand",
                        "ours / PyTorch", "ours / Tunix"))
    ratio = med["ours sft lora"] / med["ours sft"]
    print(f"ours LoRA SFT / ours full SFT: {fmt_ratio(ratio, 1.0, below=True)}")


NANO_SHAPES = ((8, 32), (1, 16))  # (batch, seq): the addition pipeline's, and a dispatch-bound one


def steps_per_call_table(steps: int, rounds: int, per_call: int) -> None:
    """(d): `nano` at steps_per_call 1 vs `per_call`; one sample = `per_call` optimizer steps,
    dispatched the way `tnx run` does (host batch → device, step, no per-step sync)."""
    from _steps_ours import ModelBank, OurStep

    from tunix_dsl.models.config import ModelConfig

    bank = ModelBank(ModelConfig.from_preset("nano", vocab_size=256))

    def chunk(step: OurStep) -> Callable[[], object]:
        def run() -> None:
            metrics = [step.dispatch_from_host() for _ in range(per_call // step.steps_per_call)]
            jax.block_until_ready(metrics)
        return run

    fns = {}
    for batch, seq in NANO_SHAPES:
        data = common.lm_batch(0, batch=batch, seq=seq, vocab=256, prompt=seq // 3)
        for k in (1, per_call):
            fns[(batch, seq, k)] = chunk(OurStep("sft", bank, batch=data, steps_per_call=k))
    warm(fns)
    times = interleaved({key: lambda n, f=f: common.time_steps(f, n) for key, f in fns.items()},
                        steps * 2, rounds)
    print(f"\n## steps_per_call on `nano` (d_model 128, 4 layers, vocab 256; median of "
          f"{len(next(iter(times.values()))['wall'])} calls of {per_call} optimizer steps)\n")
    rows = []
    for batch, seq in NANO_SHAPES:
        per_step = {k: {c: common.median_ms(times[(batch, seq, k)][c]) / per_call
                        for c in ("wall", "cpu")} for k in (1, per_call)}
        for k, ms in per_step.items():
            rows.append((f"batch {batch}, seq {seq}", f"steps_per_call = {k}",
                         f"{ms['wall']:.2f} ms", f"{ms['cpu']:.2f} ms", f"{1e3 / ms['wall']:.0f}"))
        gain = {c: per_step[1][c] / per_step[per_call][c] for c in ("wall", "cpu")}
        rows.append((f"batch {batch}, seq {seq}", "gain", f"{gain['wall']:.2f}x",
                     f"{gain['cpu']:.2f}x", ""))
    common.table(rows, ("shape", "program", "wall per optimizer step", "CPU per optimizer step",
                 "steps/s (wall)"))


def profile(name: str) -> None:
    """The slowest XLA ops of our step `name`, with the JAX operation each came from."""
    from _steps_ours import ModelBank, our_steps
    from _steps_profile import describe, top_ops

    step = our_steps(ModelBank(), only=name)[name]
    ops, total = top_ops(step)
    hlo = step.lowered().compile().as_text()
    print(f"\n## ours {name}: {total:.0f} ms of XLA ops per step (ops may overlap); slowest:\n")
    common.table([(f"{ms:.1f}", op, describe(op, hlo)) for op, ms in ops], ("ms", "op", "shape, from"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per variant")
    parser.add_argument("--rounds", type=int, default=4, help="interleaving rounds")
    parser.add_argument("--per-call", type=int, default=8, help="steps_per_call of case (d)")
    parser.add_argument("--tunix-python", default="/tmp/tunix-venv/bin/python")
    parser.add_argument("--no-tunix", action="store_true", help="skip the Tunix columns")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    parser.add_argument("--only", choices=("main", "per-call"), help="run one table")
    parser.add_argument("--profile", choices=VARIANTS, help="only profile our step of this kind")
    args = parser.parse_args()
    if args.steps < args.rounds:
        parser.error("--steps must be at least --rounds")
    if args.profile:
        return profile(args.profile)
    from tunix_dsl.runtime.host_memory import cpu_host, reuse_freed_memory

    # what `tnx run` does on a CPU host before jax starts (runtime/host_memory.py); it holds
    # for the hand-written steps too, which share this process
    reused = cpu_host() and reuse_freed_memory()
    start = time.perf_counter()
    print(f"host memory reuse (runtime/host_memory.py): {'on' if reused else 'off'}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} for PyTorch")
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, numpy {np.__version__}\n")
    if args.only != "per-call":
        main_table(args.steps, args.rounds, None if args.no_tunix else args.tunix_python,
                   not args.no_torch)
    if args.only != "main":
        steps_per_call_table(args.steps, args.rounds, args.per_call)
    print(f"total {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())

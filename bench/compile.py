"""Compile time of one SFT step vs depth (not a test): stacked (scanned) vs unrolled blocks.

    python bench/compile.py [--layers 4 16 32] [--rounds 1] [--modes scanned unrolled]
                            [--steps 10]

Nano width (d_model 128, 4 heads of 32, 2 kv heads, MLP 384), byte vocabulary,
batch 8 × seq 128, float32, full fine-tuning with AdamW: the step program of
`compiler.program.lower_stage` (forward, loss, gradients, optimizer update),
lowered on abstract inputs and compiled by XLA — what `tnx run` pays before
the first step. Every (depth, mode) compiles a fresh program (jax's cache
cannot hit: each depth is a different model). Times are the best of `--rounds`,
measured in one process; the ratio column is each row over the 4-layer row of
its mode, the target being scanned 32 layers ≤ 1.5x scanned 4 layers. With
`--steps N` the compiled step also runs N times on a fixed batch (after one
warm-up step) and the median step time is printed: whether the scanned layout
costs anything once compiled.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from tunix_dsl.compiler import sharding
from tunix_dsl.compiler.model_init import init_model
from tunix_dsl.compiler.program import lower_stage
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.data.tokenizers import ByteTokenizer
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.schemas.base import ModelRef
from tunix_dsl.schemas.stages import SFTConfig
from tunix_dsl.schemas.training import AdamW

BATCH, SEQ = 8, 128


def compile_seconds(n_layers: int, scan: bool, steps: int = 0) -> tuple[float, float, float]:
    """(lower seconds, compile seconds, median step seconds or NaN) of one SFT step program."""
    mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
    cfg = ModelConfig.from_preset("nano", ByteTokenizer().vocab_size, n_layers=n_layers,
                                  max_seq_len=SEQ, scan_layers=scan)
    config = SFTConfig(model=ModelRef(kind="decl", name="m"), data="d", steps=10,
                       batch_size=BATCH, max_seq_len=SEQ, optimizer=AdamW(lr=1e-3))
    program = lower_stage("s", "sft", config, StageModels({"model": init_model(cfg, mesh, 0)}), mesh,
                          batch_size=BATCH)
    batch = {n: jax.ShapeDtypeStruct((1, 1, BATCH, SEQ), d) for n, d in (
        ("tokens", jnp.int32), ("targets", jnp.int32), ("loss_mask", jnp.float32),
        ("attention_mask", jnp.bool_), ("positions", jnp.int32))}
    started = time.perf_counter()
    lowered = program.step.lower(program.abstract_state(), program.split.frozen, batch)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    if not steps:
        return lowered_at - started, compiled_at - lowered_at, float("nan")
    state = program.init_state()
    # every token real and scored; the token ids do not change the work
    device_batch = {n: (jnp.ones if n in ("attention_mask", "loss_mask") else jnp.zeros)(
        b.shape, b.dtype) for n, b in batch.items()}
    times = []
    for _ in range(steps + 1):  # the first is a warm-up
        begin = time.perf_counter()
        state, metrics = compiled(state, program.split.frozen, device_batch)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - begin)
    return lowered_at - started, compiled_at - lowered_at, statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 16, 32])
    parser.add_argument("--modes", nargs="+", default=["scanned", "unrolled"],
                        choices=["scanned", "unrolled"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=0, help="also time N steps of each program")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, batch {BATCH} x seq {SEQ}")
    print("| layers | mode | trace+lower s | XLA compile s | total s | × 4 layers | step ms |")
    print("|---|---|---|---|---|---|---|")
    for mode in args.modes:
        base = None
        for n in args.layers:
            runs = [compile_seconds(n, mode == "scanned", args.steps) for _ in range(args.rounds)]
            lower, comp, step = min(runs, key=lambda r: r[0] + r[1])
            total = lower + comp
            base = base if base is not None else total
            print(f"| {n} | {mode} | {lower:.2f} | {comp:.2f} | {total:.2f} | "
                  f"{total / base:.2f}x | {step * 1e3:.1f} |", flush=True)


if __name__ == "__main__":
    main()

"""Planned memory on TPU slices vs the analytic floor, and plan time (`tnx plan --target`).

For each architecture preset × {full SFT, LoRA SFT} × target, one pipeline
(bf16, full remat, seq 2048, every device on `fsdp`, one sequence per device per
micro-batch) is planned in this process: the TPU executable is compiled by
libtpu on this CPU host. Printed per row: XLA's peak per device (arguments +
outputs + temporaries − donated + code), the analytic floor (parameters +
gradients + optimizer state at the stage's sharding), their ratio, the floor
plus the layer inputs that full remat keeps for the backward (n_layers × the
device's rows × seq × d_model in bf16: issue 12's floor) and the ratio to that,
whether it fits the chip's HBM, and the wall time of the plan (lowering +
compile).

    python bench/plan.py [--models qwen3-0.6b,llama3.2-1b,llama3.1-8b]
                         [--targets tpu-v5p-8,tpu-v5e-16] [--seq 2048] [--modes full,lora]
                         [--batch N] [--remat full] [--cache rows.json]

`--batch` sets the global batch (default: one sequence per device); `--remat`
the remat policy (`true`/`full`, `dots`, `dots_no_batch`, `none`, ...).
`--cache FILE` keeps every finished row in a JSON file keyed by its settings
and the source of `tunix_dsl` it was planned with, so a rerun prints cached
rows at once and compiles only the missing ones (an 8B row takes minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host only traces; libtpu compiles

PIPELINE = """pipeline bench {{
  precision = "bfloat16"
  mesh = {{ data = 1, fsdp = -1 }}
}}
tokenizer t = bytes()
model m = transformer(preset = "{model}", tokenizer = t, remat = {remat})
dataset d = synthetic("addition", count = 100)
stage tune: sft {{
  model = m
  data = d
  steps = 10
  batch_size = {batch}
  max_seq_len = {seq}
  {lora}
}}
export tune.model to "out" as "hf"
"""


def source_digest() -> str:
    """A hash of the package's Python sources: a cached row is reused only by the same code."""
    import tunix_dsl

    root = Path(tunix_dsl.__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for folder in ("tunix_dsl", "compiler", "runtime", "grammar"):
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def plan_one(model: str, lora: bool, target_name: str, seq: int, workdir: Path,
             batch: int | None = None, remat: str = "true") -> dict:
    from tunix_dsl.api import load
    from tunix_dsl.compiler.targets import target_devices
    from tunix_dsl.runtime.planning import plan_pipeline
    from tunix_dsl.schemas.targets import get_target

    target = get_target(target_name)
    devices = len(target_devices(target))
    path = workdir / f"{model}-{'lora' if lora else 'full'}.tnx"
    remat = remat if remat in ("true", "false") else f'"{remat}"'
    path.write_text(PIPELINE.format(model=model, batch=batch or devices, seq=seq, remat=remat,
                                    lora="lora = lora(rank = 16)" if lora else ""))
    pipeline = load(str(path))
    assert pipeline.ok, [d.message for d in pipeline.errors]
    start = time.perf_counter()
    (plan,) = plan_pipeline(pipeline, target=target)
    seconds = time.perf_counter() - start
    cfg = pipeline.model_config(pipeline.stages[0].models["model"])
    assert cfg is not None, "an architecture preset has a config"
    rows = (batch or devices) // devices  # every device on fsdp: rows of the batch per device
    saved = cfg.n_layers * rows * seq * cfg.d_model * 2  # bf16 input of every layer
    return {"model": model, "mode": "LoRA" if lora else "full", "target": target_name,
            "batch": batch or devices, "needed": plan.needed_bytes, "floor": plan.floor_bytes,
            "saved": saved, "hbm": plan.hbm_bytes, "fits": plan.fits, "compiled": plan.compiled,
            "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="qwen3-0.6b,llama3.2-1b,llama3.1-8b")
    parser.add_argument("--targets", default="tpu-v5p-8,tpu-v5e-16")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--modes", default="full,lora", help="full, lora or both")
    parser.add_argument("--batch", type=int, default=None,
                        help="global batch (default: one sequence per device)")
    parser.add_argument("--remat", default="true", help="remat policy: true, dots, none, ...")
    parser.add_argument("--cache", type=Path, default=None, help="JSON file of finished rows")
    args = parser.parse_args()
    cache: dict[str, dict] = json.loads(args.cache.read_text()) if args.cache and args.cache.exists() else {}
    code = source_digest()
    gib = 2**30
    print("| model | SFT | target | batch | planned peak / device | analytic floor | ratio "
          "| floor + saved inputs | ratio | fits HBM | plan time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for lora in [m == "lora" for m in args.modes.split(",")]:
                for target in args.targets.split(","):
                    key = f"{code}|{model}|{lora}|{target}|{args.seq}|{args.batch}|{args.remat}"
                    if key not in cache:
                        cache[key] = plan_one(model, lora, target, args.seq, Path(tmp),
                                              args.batch, args.remat)
                        if args.cache:
                            args.cache.write_text(json.dumps(cache, indent=1))
                    r = cache[key]
                    peak = f"{r['needed'] / gib:.2f} GiB" + ("" if r["compiled"] else " (floor)")
                    bar = r["floor"] + r["saved"]
                    print(f"| {r['model']} | {r['mode']} | {r['target']} | {r['batch']} | {peak} | "
                          f"{r['floor'] / gib:.2f} GiB | {r['needed'] / r['floor']:.2f} | "
                          f"{bar / gib:.2f} GiB | {r['needed'] / bar:.2f} | "
                          f"{'yes' if r['fits'] else 'no'} ({r['hbm'] / gib:.0f} GiB) | "
                          f"{r['seconds']:.1f} s |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

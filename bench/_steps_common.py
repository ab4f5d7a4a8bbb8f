"""What every side of `bench/steps.py` shares: sizes, optimizer, batches, timing.

Imported both by the main benchmark process and by the Tunix subprocess
(`bench/_steps_tunix.py`, run with the Tunix venv's Python), so it depends on
jax/numpy/optax only. Sizes are those of `bench/models.py` (issue 3).
"""

from __future__ import annotations

import importlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

VOCAB, LAYERS, D_MODEL, HEADS, HEAD_DIM, MLP, SEQ, BATCH = 1024, 4, 256, 4, 64, 1024, 128, 8
PROMPT = 32  # prompt tokens per row: SFT and DPO losses cover the SEQ - PROMPT completion tokens
LORA_RANK, LORA_ALPHA = 8, 16.0
LR, WARMUP, TOTAL_STEPS, WEIGHT_DECAY, CLIP_NORM = 1e-4, 10, 1000, 0.01, 1.0
DPO_BETA = 0.1
DISTILL_TEMPERATURE, DISTILL_ALPHA = 2.0, 0.5


def optimizer_fields() -> dict[str, float | int | str]:
    """The one optimizer every side uses, as DSL `adamw(...)` fields."""
    return {"lr": LR, "warmup": WARMUP, "schedule": "cosine", "weight_decay": WEIGHT_DECAY,
            "clip_norm": CLIP_NORM}


def schedule(step: jax.Array | int) -> jax.Array:
    """Linear warm-up to LR over WARMUP steps, then cosine to 0 at TOTAL_STEPS (optax's form)."""
    return optax.warmup_cosine_decay_schedule(0.0, LR, WARMUP, TOTAL_STEPS, 0.0)(step)


def adamw(mask: Callable[[Any], Any]) -> optax.GradientTransformation:
    """clip(global norm) → AdamW with decoupled weight decay where `mask(params)` is True:
    what the hand-written steps and the Tunix trainers use."""
    return optax.chain(
        optax.clip_by_global_norm(CLIP_NORM),
        optax.adamw(schedule, weight_decay=WEIGHT_DECAY, mask=mask),
    )


def decays(params: Any) -> Any:
    """The decay mask: matrices only (norm scales and biases are 1-D)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


# --------------------------------------------------------------------------- batches


def lm_batch(seed: int, batch: int = BATCH, seq: int = SEQ, vocab: int = VOCAB,
             prompt: int = PROMPT) -> dict[str, np.ndarray]:
    """One SFT batch in the data layer's layout (`runtime/data.py`): full rows, loss on
    completion tokens; `targets[t] = tokens[t + 1]`, the last column has no target."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (batch, seq), dtype=np.int32)
    targets = np.zeros_like(tokens)
    targets[:, :-1] = tokens[:, 1:]
    loss_mask = np.zeros((batch, seq), np.float32)
    loss_mask[:, prompt - 1 : seq - 1] = 1.0  # predicts tokens prompt .. seq-1
    return {
        "tokens": tokens,
        "targets": targets,
        "loss_mask": loss_mask,
        "attention_mask": np.ones((batch, seq), bool),
        "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy(),
    }


def preference_batch(seed: int, batch: int = BATCH) -> dict[str, np.ndarray]:
    """`batch` preference pairs sharing their prompts: `chosen_*` and `rejected_*` columns."""
    chosen, rejected = lm_batch(seed, batch), lm_batch(seed + 1, batch)
    for name in ("tokens", "targets"):
        rejected[name][:, : PROMPT - 1] = chosen[name][:, : PROMPT - 1]
    rejected["tokens"][:, PROMPT - 1] = chosen["tokens"][:, PROMPT - 1]
    return {**{"chosen_" + k: v for k, v in chosen.items()},
            **{"rejected_" + k: v for k, v in rejected.items()}}


# --------------------------------------------------------------------------- timing


def time_steps(step: Callable[[], object], n: int) -> dict[str, list[float]]:
    """Wall and process-CPU seconds of each of `n` calls of `step` (which must block until
    its results exist). CPU time sums every thread of the process: on a shared machine it
    is far steadier than wall time, which also counts waiting for a core."""
    wall, cpu = [], []
    for _ in range(n):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"wall": wall, "cpu": cpu}


def median_ms(times: list[float]) -> float:
    return 1e3 * statistics.median(times)


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    """Print a markdown table (the format bench/README.md keeps)."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def reply(obj: dict) -> None:
    """One reply of a Tunix worker (`_steps_tunix.py`, `_rl_tunix.py`): a line `@@ <json>`, so
    the parent can tell it from a library's chatter on stdout."""
    sys.stdout.write("@@ " + json.dumps(obj) + "\n")
    sys.stdout.flush()


def worker_main(probe: str, serve: Callable[[], None]) -> None:
    """A Tunix worker's start: `{"unavailable": why}` when `probe` cannot be imported (no
    `google-tunix` in this interpreter), else `{"ready": true}` and then `serve()`."""
    try:
        importlib.import_module(probe)
    except Exception as err:
        reply({"unavailable": f"{type(err).__name__}: {err}"})
    else:
        reply({"ready": True})
        serve()

"""Checkpoint cost (not a test): a training step with a checkpoint save vs without, and restore.

    python bench/checkpoint.py [--rounds 5] [--dir /tmp/tnx-bench-ckpt]

Sizes of bench/models.py: vocab 1024, 4 layers, d_model 256, 4 heads (head_dim
64), MLP 1024, seq 128, batch 8, float32, untied embeddings. The state saved is
what `tnx run` saves: a `TrainState` (parameters, AdamW moments and count,
step, RNG state) through `runtime.checkpoint.StageCheckpoints`, plus the JSON
meta. Per round, interleaved so machine noise hits every variant alike:

- step:              one jitted, donated train step (loss, grads, AdamW), blocked on;
- step + async save: the step, then `save` (returns once the arrays are off the
                     device; files are written in the background) — what the loop pays;
- async commit:      the background write's remaining time (`wait` after the above);
- step + sync save:  the step, then a blocking save (orbax without async);
- restore:           `restore_latest` of the newest checkpoint into the state's shardings.

Medians over rounds; the ratios come from the same run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tunix_dsl.compiler.train_step import TrainState
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.models.transformer import Transformer
from tunix_dsl.runtime.checkpoint import StageCheckpoints, state_nbytes

VOCAB, LAYERS, D_MODEL, HEADS, HEAD_DIM, MLP, SEQ, BATCH = 1024, 4, 256, 4, 64, 1024, 128, 8


def build() -> tuple[TrainState, object, jax.Array]:
    cfg = ModelConfig(
        vocab_size=VOCAB, d_model=D_MODEL, n_layers=LAYERS, n_heads=HEADS, n_kv_heads=HEADS,
        head_dim=HEAD_DIM, mlp_dim=MLP, max_seq_len=SEQ, tie_embeddings=False,
    )  # fmt: skip
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = optax.adamw(1e-3)
    state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), rest)

    def step(state: TrainState, tokens: jax.Array) -> TrainState:
        def loss_of(p: nnx.State) -> jax.Array:
            m = nnx.merge(graphdef, p, state.rest)
            return -jnp.mean(m.logps(tokens[:, :-1], tokens[:, 1:]))

        grads = jax.grad(loss_of)(state.trainable)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
        return TrainState(state.step + 1, optax.apply_updates(state.trainable, updates), opt_state,
                          state.rest)

    tokens = jax.random.randint(jax.random.key(1), (BATCH, SEQ), 0, VOCAB)
    return state, jax.jit(step, donate_argnums=(0,)), tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where checkpoints go (default: a temp dir)")
    args = parser.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="tnx-bench-ckpt-"))
    shutil.rmtree(root, ignore_errors=True)

    state, step, tokens = build()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    asynchronous = StageCheckpoints(root / "async", keep=2, log=lambda _m: None)
    blocking = StageCheckpoints(root / "sync", keep=2, log=lambda _m: None, asynchronous=False)
    meta = {"fingerprint": "bench", "cursor": 0}

    state = jax.block_until_ready(step(state, tokens))  # compile
    asynchronous.save(0, state, meta)
    asynchronous.wait()  # warm orbax up
    times: dict[str, list[float]] = {k: [] for k in
                                     ("step", "step + async save", "async commit", "step + sync save", "restore")}
    n = 1
    for _ in range(args.rounds):
        t = time.perf_counter()
        state = jax.block_until_ready(step(state, tokens))
        times["step"].append(time.perf_counter() - t)

        t = time.perf_counter()
        state = jax.block_until_ready(step(state, tokens))
        asynchronous.save(n, state, meta)
        times["step + async save"].append(time.perf_counter() - t)
        t = time.perf_counter()
        asynchronous.wait()
        times["async commit"].append(time.perf_counter() - t)

        t = time.perf_counter()
        state = jax.block_until_ready(step(state, tokens))
        blocking.save(n, state, meta)
        blocking.wait()
        times["step + sync save"].append(time.perf_counter() - t)

        t = time.perf_counter()
        restored = asynchronous.restore_latest(abstract, shardings, "bench")
        jax.block_until_ready(restored.state)
        times["restore"].append(time.perf_counter() - t)
        n += 1

    nbytes = state_nbytes(abstract)
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.trainable))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"state: {params:,} parameters, checkpoint arrays {nbytes / 2**20:.1f} MiB "
          f"(params + AdamW moments); {args.rounds} rounds; device {jax.devices()[0].platform}")
    print(f"{'measurement':<20}{'median ms':>12}{'x step':>10}")
    for name, ms in med.items():
        print(f"{name:<20}{ms:>12.1f}{ms / med['step']:>10.2f}")
    asynchronous.close()
    blocking.close()
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

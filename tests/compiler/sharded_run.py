"""Run a few compiled steps under given meshes and print the results as JSON.

Executed once, in a subprocess, by test_sharded_step.py with
XLA_FLAGS=--xla_force_host_platform_device_count=8 set before jax starts;
argv[1] is a JSON list of [kind, mesh, devices, grad_accum, steps_per_call].
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np
from flax import nnx

from tunix_dsl.compiler import sharding
from tunix_dsl.compiler.model_init import init_model
from tunix_dsl.compiler.program import lower_stage
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.data.datasets import synthetic_rows
from tunix_dsl.data.tokenizers import ByteTokenizer
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.runtime.batches import BatchStream
from tunix_dsl.runtime.data import tokenize_rows
from tunix_dsl.schemas.base import ModelRef
from tunix_dsl.schemas.stages import DPOConfig, SFTConfig
from tunix_dsl.schemas.training import AdamW


def main(kind: str, mesh_spec: dict[str, int], devices: int, grad_accum: int, steps_per_call: int) -> dict:
    tok = ByteTokenizer()
    # 264 rows of embedding (259 byte ids + 5 unused) divide over 8 batch shards: the sharded
    # step splits the output head over the vocabulary (models.activations.head_logits)
    cfg = ModelConfig(vocab_size=264, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                      head_dim=16, mlp_dim=128, max_seq_len=32)
    mesh = sharding.make_mesh(mesh_spec, jax.devices()[:devices])
    model = init_model(cfg, mesh, seed=0)
    ref = ModelRef(kind="decl", name="m")
    # lr 1e-3: Adam turns float reduction-order noise in near-zero gradients into
    # updates of up to ~lr, so the tolerance below scales with it.
    opt = AdamW(lr=1e-3, warmup=1, weight_decay=0.01)
    if kind == "sft":
        config = SFTConfig(model=ref, data="d", steps=3, batch_size=16, optimizer=opt, max_seq_len=32,
                           grad_accum=grad_accum, steps_per_call=steps_per_call)
        rows, consumer, models = synthetic_rows("addition", count=64, seed=1), "prompt_completion", {"model": model}
    else:
        config = DPOConfig(policy=ref, data="d", steps=3, batch_size=16, optimizer=opt, max_seq_len=32,
                           grad_accum=grad_accum, steps_per_call=steps_per_call)
        rows, consumer = synthetic_rows("addition_preferences", count=64, seed=1), "preference"
        models = {"policy": model, "reference": nnx.clone(model)}
    program = lower_stage("s", kind, config, StageModels(models), mesh, batch_size=16,
                          grad_accum=grad_accum, steps_per_call=steps_per_call)
    stream = BatchStream(tokenize_rows(rows, consumer, tok, 32), 16, seed=0, buckets=(32,))
    state = program.init_state()
    losses = []
    for _ in range(3 // steps_per_call):
        batch = stream.next_batches(steps_per_call)
        batch.pop("example_ids")
        state, metrics = program.step(state, program.split.frozen, program.put_batch(batch))
        losses += [float(x) for x in metrics["loss"]]
    params = jax.tree.leaves(jax.device_get(state.trainable))
    return {"losses": losses, "params": [np.asarray(p, np.float64).ravel().tolist() for p in params],
            "devices": int(mesh.devices.size)}


if __name__ == "__main__":
    configs = json.loads(sys.argv[1])
    print(json.dumps([main(kind, mesh, devices, accum, per_call) for kind, mesh, devices, accum, per_call in configs]))

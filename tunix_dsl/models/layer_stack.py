"""Running the decoder's blocks: unrolled, or as one scan, under a rematerialisation policy.

Unrolled, every block is traced and compiled on its own: compile time grows
with depth (seconds per layer for real widths). Scanned, one block body is
traced once and `jax.lax.scan` runs it over the layers: compile time is
nearly flat in depth. Parameters stay stored per layer (`layers.{i}.…`, the
paths LoRA regexes, the HF name map and checkpoints see); the scan reads a
stacked view `[L, ...]` of them built inside the step, and the gradient of
that view flows back to each layer's own parameters.

Scanning is off by default (`ModelConfig.scan_layers`): while parameters are
stored per layer, the optimizer update and the stacking are still 9·L leaves
and XLA:CPU compiles the scanned step no faster (bench/README.md, "Compile
time vs depth"); stacked parameter storage is what makes it pay.

A block can join the scan when every block has the same structure (LoRA on
all layers or none) and none holds RNG state (LoRA dropout advances a
per-layer counter that a scan body could not hand back); otherwise the blocks
run unrolled.

Remat policies (what the backward keeps instead of recomputing):
`none` keeps every activation; `full` keeps only each block's input;
`dots` keeps matmul outputs; `dots_no_batch` keeps matmul outputs without
batch dimensions (weight-like products); `offload` moves those to host
memory where the backend has it (GPU/TPU pinned host memory).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

REMAT_POLICIES: dict[str, Callable[[], Any] | None] = {  # keys: model_config.REMAT_POLICIES
    "none": None,
    "full": lambda: jax.checkpoint_policies.nothing_saveable,
    "dots": lambda: jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": lambda: jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "offload": lambda: jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host"),
}


def remat_policy(remat: bool | str) -> str:
    """The policy name a `remat` setting means (`True` is the whole block, `False` none)."""
    if isinstance(remat, bool):
        return "full" if remat else "none"
    return remat


def checkpointed(fn: Callable[..., Any], policy: str, **kwargs: Any) -> Callable[..., Any]:
    """`fn` under `nnx.remat` with the named policy (unchanged for "none")."""
    make = REMAT_POLICIES[policy]
    if make is None:
        return fn
    return nnx.remat(fn, policy=make(), **kwargs)


def scannable(blocks: Sequence[nnx.Module]) -> bool:
    """Whether the blocks can run as one scan: one structure, no RNG state."""
    graphdefs = [nnx.graphdef(b) for b in blocks]
    return all(g == graphdefs[0] for g in graphdefs) and not any(
        jax.tree.leaves(nnx.state(b, nnx.RngState)) for b in blocks)


def scan_blocks(blocks: Sequence[nnx.Module], x: jax.Array, policy: str,
                call: Callable[[nnx.Module, jax.Array], jax.Array]) -> jax.Array:
    """x after `call(block, x)` for every block in order, as one `lax.scan` over the blocks'
    stacked parameters; each step under the remat `policy`."""
    graphdef = nnx.graphdef(blocks[0])
    stacked = jax.tree.map(lambda *layer: jnp.stack(layer), *(nnx.state(b) for b in blocks))

    def body(h: jax.Array, state: nnx.State) -> tuple[jax.Array, None]:
        return call(nnx.merge(graphdef, state), h), None

    make = REMAT_POLICIES[policy]
    if make is not None:
        # prevent_cse=False: inside a scan the loop already keeps XLA from merging the
        # recomputation into the forward
        body = jax.checkpoint(body, policy=make(), prevent_cse=False)
    out, _ = jax.lax.scan(body, x, stacked)
    return out

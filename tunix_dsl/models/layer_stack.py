"""The decoder's blocks stored stacked, run as one scan, under a rematerialisation policy.

Storage. With `ModelConfig.scan_layers` (the default) every parameter of the
`L` blocks is one array with a leading layer axis, `[L, ...]`, named `layers`
in its logical axes (`compiler.sharding` keeps that axis unsharded), and the
model holds one stacked `Block` at `layers` (paths `layers.attn.q_proj.kernel`).
Without it the blocks are an `nnx.List` (`layers.{i}.attn.q_proj.kernel`).
Outside the stored paths, everything speaks of layer `i` as `layers.{i}.…`:
LoRA targets, the HF name map and `tnx lint` see per-layer paths whichever
way the model stores them (`layer_paths`).

Running. Training and scoring forwards scan one block body over the stacked
parameters (`scan_stacked`): the step program, its gradient and the
optimizer update hold 9 arrays per parameter kind instead of 9·L, so trace
and compile time stay nearly flat in depth. Forwards with a KV cache loop
over per-layer views of the stacked arrays (`unstack`), as unrolled models do.

Every stacked variable is stacked: a module with state that a scan cannot
slice (LoRA dropout's RNG counter, adapters on some layers only) is unstacked
first (`lora.apply_lora` does this), and runs unrolled.

Remat policies (what the backward keeps instead of recomputing):
`none` keeps every activation; `full` keeps only each block's input;
`dots` keeps matmul outputs; `dots_no_batch` keeps matmul outputs without
batch dimensions (weight-like products); `offload` moves those to host
memory where the backend has it (GPU/TPU pinned host memory).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from flax import nnx

LAYER_AXIS = "layers"  # logical name of the stacked layer axis (compiler.sharding.LOGICAL_RULES)
M = TypeVar("M", bound=nnx.Module)
Carry = TypeVar("Carry")
Out = TypeVar("Out")

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


def remat_call(module: M, policy: str, call: Callable[[M], Out]) -> Out:
    """`call(module)` under `jax.checkpoint` with the named policy (a plain call for "none").

    The module enters the checkpointed function as its state and only its RNG state comes
    back out (LoRA dropout's counter): `nnx.remat` would write every variable back, and a
    parameter created outside the trace that differentiates (LoRA's frozen base) cannot be
    written from inside it (flax's TraceContextError)."""
    make = REMAT_POLICIES[policy]
    if make is None:
        return call(module)
    graphdef, state = nnx.split(module)

    def pure(state: nnx.State) -> tuple[Out, nnx.State]:
        inner = nnx.merge(graphdef, state)
        return call(inner), nnx.state(inner, nnx.RngState)

    out, rng_state = jax.checkpoint(pure, policy=make())(state)
    if jax.tree.leaves(rng_state):
        nnx.update(module, rng_state)
    return out


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def logical_axes(variable: nnx.Variable) -> tuple[str | None, ...]:
    """A variable's logical axis names (None for each axis when it has none)."""
    axes = variable.get_metadata().get("out_sharding")
    return tuple(axes) if axes else (None,) * jnp.ndim(variable.get_value())


def is_stacked(variable: nnx.Variable) -> bool:
    """Whether the variable's leading axis is the layer axis."""
    axes = variable.get_metadata().get("out_sharding")
    if not axes:
        return False
    return bool(axes[0] == LAYER_AXIS)


def stacked_variable(kind: type[nnx.Variable], value: jax.Array,
                     axes: tuple[str | None, ...]) -> nnx.Variable:
    """A new variable of a stacked module: `value` [L, ...] with `axes` naming the rest."""
    return kind(value, out_sharding=(LAYER_AXIS, *axes), eager_sharding=False)


def stack(blocks: Sequence[M]) -> M:
    """One module like `blocks[0]` whose every variable is the blocks' variables stacked along
    a leading `layers` axis. The blocks must share one structure (`nnx.graphdef`)."""
    graphdef = nnx.graphdef(blocks[0])
    for i, block in enumerate(blocks[1:], 1):
        if nnx.graphdef(block) != graphdef:
            raise ValueError(f"layer {i} differs in structure from layer 0; cannot stack them")

    def one(*layer: nnx.Variable) -> nnx.Variable:
        value = jnp.stack([v.get_value() for v in layer])
        return layer[0].replace(value, out_sharding=(LAYER_AXIS, *logical_axes(layer[0])))

    states = [nnx.state(b) for b in blocks]
    return nnx.merge(graphdef, jax.tree.map(one, *states, is_leaf=_is_variable))


def n_stacked(module: nnx.Module) -> int:
    """The length of a stacked module's layer axis."""
    leaves = jax.tree.leaves(nnx.state(module), is_leaf=_is_variable)
    return int(jnp.shape(leaves[0].get_value())[0])


def unstack(module: M) -> list[M]:
    """Per-layer modules with the slices `[i]` of a stacked module's variables (views inside
    a traced function; fresh arrays eagerly)."""
    graphdef, state = nnx.split(module)

    def layer(i: int) -> M:
        def one(v: nnx.Variable) -> nnx.Variable:
            return v.replace(v.get_value()[i], out_sharding=logical_axes(v)[1:])
        return nnx.merge(graphdef, jax.tree.map(one, state, is_leaf=_is_variable))

    return [layer(i) for i in range(n_stacked(module))]


def scan_stacked(module: M, x: Carry, policy: str,
                 call: Callable[[M, Carry], tuple[Carry, Any]]) -> tuple[Carry, Any]:
    """`(x, ys)` after `x, y_i = call(layer_i, x)` for every layer of a stacked module, as one
    `lax.scan` over its stacked variables (ys stacked along a leading axis); each step under
    the remat `policy`."""
    graphdef, state = nnx.split(module)
    bad = [v for v in jax.tree.leaves(state, is_leaf=_is_variable) if not is_stacked(v)]
    assert not bad, f"a stacked module holds an unstacked variable: {bad[0]!r}"

    def body(h: Carry, layer_state: nnx.State) -> tuple[Carry, Any]:
        return call(nnx.merge(graphdef, layer_state), h)

    make = REMAT_POLICIES[policy]
    if make is not None:
        # prevent_cse=False: inside a scan the loop already keeps XLA from merging the
        # recomputation into the forward
        body = jax.checkpoint(body, policy=make(), prevent_cse=False)
    return jax.lax.scan(body, x, state)


def layer_paths(path: tuple[Any, ...], variable: nnx.Variable) -> list[tuple[str, int | None]]:
    """The per-layer dotted paths a stored variable stands for, each with its index along the
    stacked axis: `layers.attn.q_proj.kernel` [L, ...] -> `layers.{i}.attn.q_proj.kernel`
    for every i; an unstacked variable stands for its own path (index None)."""
    dotted = ".".join(str(p) for p in path)
    if not is_stacked(variable):
        return [(dotted, None)]
    head, rest = str(path[0]), ".".join(str(p) for p in path[1:])
    return [(f"{head}.{i}.{rest}", i) for i in range(jnp.shape(variable.get_value())[0])]

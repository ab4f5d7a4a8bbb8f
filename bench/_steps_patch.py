"""A proposed model fix, measured before it is adopted: `Dense` on 2-D activations.

Profiling our SFT step (`python bench/steps.py --profile sft`) shows a third of its
time in four `copy_bitcast_fusion` ops, one per layer, tagged
`transpose(jvp(jit(silu)))`: XLA:CPU fuses the SwiGLU backward (four [B, T, F]
operands) into a transposing copy that feeds the gate/up kernel gradient, reading
every operand with a 4 KiB stride (F = 1024 floats) — 30–60 ms each where a plain
transpose of the same array takes ~1 ms. It comes from `Dense` multiplying a 3-D
activation, `[B, T, D] @ [D, F]`: JAX's transpose rule then forms the kernel gradient
from `g` with `(B, T)` as contracting dimensions and XLA transposes `g`. On
`[B·T, D]` the kernel gradient is a plain `xᵀg` whose transpose XLA folds into the dot.
`LoRADense` already flattens; `models-B`'s section of bench/README.md measured the same
change for `Dense` (fwd+bwd 0.62x Tunix's). The change belongs in
`tunix_dsl/models/layers.py: Dense.__call__`; `--dense-2d` swaps it in for this process
only, so one run shows what it buys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

from tunix_dsl.models import layers


def _dense_2d(self: layers.Dense, x: jax.Array) -> jax.Array:
    leading = x.shape[:-1]
    y = x.reshape(-1, x.shape[-1]) @ self.kernel[...]
    if self.bias is not None:
        y = y + self.bias[...]
    return y.reshape(*leading, -1)


@contextlib.contextmanager
def dense_2d() -> Iterator[None]:
    """Within the block, `Dense` forwards traced from now on use 2-D matmuls."""
    saved = layers.Dense.__call__
    layers.Dense.__call__ = _dense_2d
    try:
        yield
    finally:
        layers.Dense.__call__ = saved

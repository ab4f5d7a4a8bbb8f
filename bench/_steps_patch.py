"""A proposed fix, measured before it is adopted: a matmul whose weight gradient XLA:CPU
lowers without a strided transposing copy.

Profiling our SFT step (`python bench/steps.py --profile sft`) shows a third of its time
in four `copy_bitcast_fusion` ops, one per layer, tagged `transpose(jvp(jit(silu)))`:
XLA fuses the SwiGLU backward (4 operands of [B·T, F]) into a transposing copy that
feeds the gate/up kernel gradient, reading every operand with a 4 KiB stride (F = 1024
floats) — ~55 ms each where a plain transpose takes ~1 ms. It happens because JAX's
transpose rule for `x @ W` forms the kernel gradient as `(gᵀx)ᵀ`; written as
`einsum("...d,...f->df", x, g)` (`xᵀg`) XLA folds the transpose of `x` into the dot
instead and no copy of `g` is made. The same model code runs in the hand-written step
(and Tunix's llama3 has the same shape of MLP), so the fix belongs in the model's
`Dense` (and `LoRADense`): `--dense-vjp` swaps it in for this process only, to show
what it buys. Gradients agree with autodiff to float32 rounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp

from tunix_dsl.models import layers, lora


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """`x @ w` for x [..., D], w [D, F]."""
    return x @ w


def _matmul_fwd(x: jax.Array, w: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return x @ w, (x, w)


def _matmul_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, w = res
    dx = jnp.einsum("...f,df->...d", g, w)
    dw = jnp.einsum("...d,...f->df", x, g)  # xᵀg: no transposed copy of g
    return dx.astype(x.dtype), dw.astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _dense_call(self: layers.Dense, x: jax.Array) -> jax.Array:
    y = matmul(x, self.kernel[...])
    return y + self.bias[...] if self.bias is not None else y


def _lora_dense_call(self: lora.LoRADense, x: jax.Array) -> jax.Array:
    y = matmul(x, self.base_kernel().astype(x.dtype))
    if self.bias is not None:
        y = y + self.bias[...]
    if not self.adapters_enabled:
        return y
    h = self.dropout(x) if self.dropout is not None else x
    low_rank = matmul(matmul(h, self.lora_a[...].astype(x.dtype)), self.lora_b[...].astype(x.dtype))
    return y + self.scale * low_rank


@contextlib.contextmanager
def dense_vjp() -> Iterator[None]:
    """Within the block, `Dense` and `LoRADense` forwards (traced from now on) use `matmul`."""
    saved = layers.Dense.__call__, lora.LoRADense.__call__
    layers.Dense.__call__, lora.LoRADense.__call__ = _dense_call, _lora_dense_call
    try:
        yield
    finally:
        layers.Dense.__call__, lora.LoRADense.__call__ = saved

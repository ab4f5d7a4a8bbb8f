"""Weight-only quantization of frozen Dense kernels for QLoRA: NF4 and int8.

A kernel W (in, out) is stored as integer codes plus float32 scales and
dequantized inside the forward (XLA fuses the lookup/scale into the matmul's
producer), so only the small adapters are float32 parameters.

- **nf4** (QLoRA, Dettmers et al. 2023): blocks of 64 consecutive values along
  the input axis share one absmax scale; each value is W / absmax rounded to the
  nearest of 16 NormalFloat levels (quantiles of N(0, 1), normalised to
  [-1, 1], with an exact zero). Two 4-bit codes are packed per uint8 byte.
  Storage: 0.5 + 4/64 bytes per value (14% of float32). The paper's "double
  quantization" of the absmax scales is not done: it would save 0.06 bytes per
  value more.
- **int8**: one scale per output channel, scale = max|W[:, j]| / 127, codes =
  round(W / scale). Storage: 1 byte per value + 4 bytes per column (25%).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

NF4_BLOCK = 64
# The 16 NF4 levels of the QLoRA paper (Appendix E): normal quantiles with an
# exact zero, 8 positive and 7 negative, normalised by the largest magnitude.
# fmt: off
NF4_LEVELS = np.array(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    dtype=np.float32,
)
# fmt: on
# Midpoints between adjacent levels: a value's code is the number of midpoints below it.
_NF4_MIDPOINTS = (NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2


@dataclass(frozen=True)
class QuantizedKernel:
    """Codes + scales of one (in, out) kernel, and how to get the float kernel back."""

    codes: jax.Array  # nf4: uint8 (ceil(in/64)*32, out); int8: int8 (in, out)
    scales: jax.Array  # nf4: float32 (ceil(in/64), out); int8: float32 (out,)
    in_features: int


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def quantize_nf4(kernel: jax.Array) -> QuantizedKernel:
    """Blockwise-absmax NF4 codes of `kernel` (in, out), blocks along `in`."""
    n_in, n_out = kernel.shape
    padded = _round_up(n_in, NF4_BLOCK)
    w = jnp.pad(kernel.astype(jnp.float32), ((0, padded - n_in), (0, 0)))
    blocks = w.reshape(padded // NF4_BLOCK, NF4_BLOCK, n_out)
    absmax = jnp.max(jnp.abs(blocks), axis=1)  # [in/64, out]
    safe = jnp.where(absmax > 0, absmax, 1.0)  # an all-zero block maps to the zero level
    normalised = (blocks / safe[:, None, :]).reshape(padded, n_out)
    codes = jnp.searchsorted(jnp.asarray(_NF4_MIDPOINTS), normalised).astype(jnp.uint8)
    packed = codes[0::2] | (codes[1::2] << 4)  # rows 2i (low nibble) and 2i+1 (high nibble)
    return QuantizedKernel(packed, absmax, n_in)


def dequantize_nf4(q: QuantizedKernel) -> jax.Array:
    """float32 (in, out) kernel from NF4 codes."""
    packed = q.codes
    low, high = packed & 0x0F, packed >> 4
    codes = jnp.stack([low, high], axis=1).reshape(-1, packed.shape[1])  # re-interleave rows
    values = jnp.asarray(NF4_LEVELS)[codes.astype(jnp.int32)]
    n_blocks, n_out = q.scales.shape
    blocks = values.reshape(n_blocks, NF4_BLOCK, n_out) * q.scales[:, None, :]
    return blocks.reshape(n_blocks * NF4_BLOCK, n_out)[: q.in_features]


def quantize_int8(kernel: jax.Array) -> QuantizedKernel:
    """Per-output-channel absmax int8 codes of `kernel` (in, out)."""
    w = kernel.astype(jnp.float32)
    absmax = jnp.max(jnp.abs(w), axis=0)  # [out]
    scale = jnp.where(absmax > 0, absmax / 127.0, 1.0)
    codes = jnp.clip(jnp.round(w / scale), -127, 127).astype(jnp.int8)
    return QuantizedKernel(codes, scale, kernel.shape[0])


def dequantize_int8(q: QuantizedKernel) -> jax.Array:
    """float32 (in, out) kernel from int8 codes."""
    return q.codes.astype(jnp.float32) * q.scales


@dataclass(frozen=True)
class QuantFormat:
    quantize: Callable[[jax.Array], QuantizedKernel]
    dequantize: Callable[[QuantizedKernel], jax.Array]


QUANT_FORMATS: dict[str, QuantFormat] = {
    "nf4": QuantFormat(quantize_nf4, dequantize_nf4),
    "int8": QuantFormat(quantize_int8, dequantize_int8),
}

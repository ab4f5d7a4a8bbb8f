"""LoRA and QLoRA adapters on `Dense` modules, chosen by regex over parameter paths.

    y = x @ W (+ b) + (alpha / rank) * dropout(x) @ A @ B        A (in, r), B (r, out)

A starts Kaiming-uniform (bound 1/sqrt(in), as PEFT does) and B at zero, so a
fresh adapter leaves the model's outputs unchanged. With `quantize="nf4"` or
`"int8"` (QLoRA) the frozen W is kept as codes + scales (see `quant`) and
dequantized in the forward.

`apply_lora` swaps each targeted `Dense` for a `LoRADense` in place. The base
weight keeps its path (`layers.0.attn.q_proj.kernel`); adapters appear beside
it as `...q_proj.lora_a` / `.lora_b` (QLoRA: `...q_proj.codes` / `.scales`
instead of `.kernel`). Targets match per-layer paths also when the blocks are
stored stacked (`layer_stack`): a stacked `Dense` whose every layer matches
gets stacked adapters `[L, in, r]` / `[L, r, out]`; when only some layers
match, or with dropout (an RNG counter a scan cannot carry), the model's
blocks are unstacked first and run unrolled. Adapters are `LoRAParam` variables, so a trainer
differentiates only them with `nnx.DiffState(0, LoRAParam)`. Every new
variable carries the base kernel's logical axis names (rank axis: None).

Dropout draws from the `dropout` stream of the `rngs` given to `apply_lora`
(falling back to `default`) and is off after `model.eval()`.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from flax import nnx

from tunix_dsl.models.info import match_lora_targets
from tunix_dsl.models.layer_stack import is_stacked, layer_paths, logical_axes
from tunix_dsl.models.layers import Dense
from tunix_dsl.models.quant import QUANT_FORMATS, QuantizedKernel

# flax's own LoRA variable type (a subclass of nnx.Param), so flax utilities and
# other nnx libraries (qwix) recognise our adapters as adapters.
LoRAParam = nnx.LoRAParam
V = TypeVar("V", bound=nnx.Variable)
M = TypeVar("M", bound=nnx.Module)


class QuantizedWeight(nnx.Variable):
    """Frozen integer codes / float scales of a quantized base kernel (never trained)."""


class LoraError(ValueError):
    """A LoRA configuration that cannot be applied; the message names the fix."""


@dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float
    dropout: float = 0.0
    targets: Sequence[str] = (r"attn\.(q|k|v|o)_proj", r"mlp\.(gate|up|down)_proj")
    quantize: str | None = None  # None | "nf4" | "int8"

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or self.rank < 1:
            raise LoraError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if not self.alpha > 0:
            raise LoraError(f"LoRA alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise LoraError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if self.quantize is not None and self.quantize not in QUANT_FORMATS:
            raise LoraError(
                f"unknown LoRA quantize {self.quantize!r}; use one of "
                f"{sorted(QUANT_FORMATS)} or leave it unset"
            )
        if isinstance(self.targets, str) or not self.targets:
            raise LoraError("LoRA targets must be a non-empty list of regexes, e.g. ['q_proj']")
        object.__setattr__(self, "targets", tuple(self.targets))
        for pattern in self.targets:
            try:
                re.compile(pattern)
            except re.error as err:
                raise LoraError(f"LoRA target {pattern!r} is not a valid regex: {err}") from err

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


_axes = logical_axes


def _variable(kind: type[V], value: jax.Array, axes: tuple) -> V:
    return kind(value, out_sharding=axes, eager_sharding=False)


def _per_layer(fn: Any, stacked: bool, *arrays: jax.Array) -> Any:
    """fn on one layer's arrays, mapped over the leading layer axis of stacked ones."""
    return jax.vmap(fn)(*arrays) if stacked else fn(*arrays)


class LoRADense(nnx.Module):
    """A `Dense` with a low-rank adapter; the base is frozen (float or quantized)."""

    def __init__(self, base: Dense, spec: LoraSpec, *, rngs: nnx.Rngs):
        # a stacked base (layer_stack) has kernel [L, in, out]: its adapters are stacked too
        *lead, in_features, out_features = base.kernel[...].shape
        *lead_axes, in_axis, out_axis = _axes(base.kernel)
        stacked = is_stacked(base.kernel)
        self.in_features, self.out_features = in_features, out_features
        self.scale = spec.scale
        # A static attribute (part of the nnx graph definition, not of the state), so a
        # forward traced with adapters off never shares a cached trace with one that has
        # them on, also inside nested transforms such as nnx.remat.
        self.adapters_enabled = True
        self.quantize = spec.quantize
        self.bias = base.bias
        if spec.quantize is None:
            self.kernel = base.kernel  # the same variable: in place, no copy
        else:
            quantize = QUANT_FORMATS[spec.quantize].quantize

            def codes_scales(w: jax.Array) -> tuple[jax.Array, jax.Array]:
                q = quantize(w)
                return q.codes, q.scales

            codes, scales = _per_layer(codes_scales, stacked, base.kernel[...])
            scale_axes = (in_axis, out_axis) if scales.ndim == 2 + len(lead) else (out_axis,)
            self.codes = _variable(QuantizedWeight, codes, (*lead_axes, in_axis, out_axis))
            self.scales = _variable(QuantizedWeight, scales, (*lead_axes, *scale_axes))
            self.kernel_dtype = base.kernel[...].dtype
        bound = 1.0 / math.sqrt(in_features)
        a = jax.random.uniform(rngs.params(), (*lead, in_features, spec.rank), jnp.float32,
                               -bound, bound)
        self.lora_a = _variable(LoRAParam, a, (*lead_axes, in_axis, None))
        self.lora_b = _variable(LoRAParam, jnp.zeros((*lead, spec.rank, out_features), jnp.float32),
                                (*lead_axes, None, out_axis))
        self.dropout = nnx.Dropout(spec.dropout, rngs=rngs) if spec.dropout > 0 else None

    def base_kernel(self) -> jax.Array:
        """The frozen W (in, out), dequantized for QLoRA ([L, in, out] when stacked)."""
        if self.quantize is None:
            return self.kernel[...]
        dequantize = QUANT_FORMATS[self.quantize].dequantize

        def one(codes: jax.Array, scales: jax.Array) -> jax.Array:
            return dequantize(QuantizedKernel(codes, scales, self.in_features))

        # `stacked` describes storage; inside a scan this module sees one layer's slices
        stacked = self.codes[...].ndim == 3
        return _per_layer(one, stacked, self.codes[...], self.scales[...]).astype(self.kernel_dtype)

    def delta(self) -> jax.Array:
        """scale * A @ B (in, out): what merging adds to W."""
        return self.scale * (self.lora_a[...] @ self.lora_b[...])

    def __call__(self, x: jax.Array) -> jax.Array:
        # Matmuls on [tokens, features]: with a 3-D x, XLA:CPU transposes the activation
        # gradient for the weight gradient in a slow fused loop (see bench/README.md).
        leading = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        y = x @ self.base_kernel().astype(x.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        if self.adapters_enabled:
            h = self.dropout(x) if self.dropout is not None else x
            # (x @ A) @ (scale * B): a rank-r intermediate, never the (in, out) product, and
            # the scale applied to the small B rather than to the [tokens, out] result
            a = self.lora_a[...].astype(x.dtype)
            b = (self.scale * self.lora_b[...]).astype(x.dtype)
            y = y + (h @ a) @ b
        return y.reshape(*leading, -1)


def _dense_paths(model: nnx.Module) -> Iterator[tuple[tuple, Dense | LoRADense]]:
    for path, module in nnx.iter_modules(model):
        if isinstance(module, Dense | LoRADense):
            yield path, module


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _replace(model: nnx.Module, path: tuple, new: nnx.Module) -> None:
    parent: Any = model  # a module, or a list of blocks indexed by an int
    for key in path[:-1]:
        parent = parent[key] if isinstance(key, int) else getattr(parent, key)
    if isinstance(path[-1], int):
        parent[path[-1]] = new
    else:
        setattr(parent, path[-1], new)


def apply_lora(model: M, spec: LoraSpec, rngs: nnx.Rngs) -> M:
    """Wrap every `Dense` whose kernel path (e.g. "layers.0.attn.q_proj.kernel") any
    target regex matches (`re.search`) with a `LoRADense`, in place; returns `model`.
    Paths are per layer also for stacked blocks (see the module docstring)."""
    modules = list(_dense_paths(model))
    if any(isinstance(m, LoRADense) for _, m in modules):
        raise LoraError("the model already has LoRA adapters; merge_lora(model) first")
    kernel_paths = {name: (path, module) for path, module in modules if isinstance(module, Dense)
                    for name, _ in layer_paths((*path, "kernel"), module.kernel)}
    # the same matching the linter does (TNX309), so what lints clean applies here
    matched, unmatched = match_lora_targets(spec.targets, kernel_paths)
    if unmatched:
        shown = ", ".join(sorted(kernel_paths)[:6])
        raise LoraError(
            f"LoRA target {unmatched[0]!r} matches no Dense kernel; paths look like: {shown}"
        )
    chosen: dict[tuple, tuple[Dense, int]] = {}
    for name in matched:
        path, module = kernel_paths[name]
        chosen[path] = (module, chosen.get(path, (module, 0))[1] + 1)
    per_layer = [m for m, count in chosen.values() if is_stacked(m.kernel)
                 and (count < m.kernel[...].shape[0] or spec.dropout > 0)]
    if per_layer:
        # some layers differ from the others: they cannot share one stacked block
        from tunix_dsl.models.transformer import Transformer

        assert isinstance(model, Transformer), "only a Transformer's blocks are stacked"
        model.unstack_layers()
        return apply_lora(model, spec, rngs)
    for path, (module, _) in chosen.items():
        _replace(model, path, LoRADense(module, spec, rngs=rngs))
    return model


def lora_modules(model: nnx.Module) -> list[tuple[str, LoRADense]]:
    """(dotted path, module) of every adapted Dense in `model`."""
    return [(_dotted(p), m) for p, m in _dense_paths(model) if isinstance(m, LoRADense)]


@contextlib.contextmanager
def adapters_disabled(model: nnx.Module) -> Iterator[None]:
    """Within the block, `model`'s forwards use the frozen base only.

    Works while tracing (e.g. a DPO reference forward inside the jitted step):
    it flips a static flag on the adapted modules, which is part of the nnx
    graph definition, and restores it on exit.
    """
    adapted = [m for _, m in lora_modules(model)]
    if not adapted:
        raise LoraError(
            "adapters_disabled: the model has no LoRA adapters, so its forward would be "
            "the trained model, not a reference; use a separate reference model"
        )
    previous = [m.adapters_enabled for m in adapted]
    for module in adapted:
        module.adapters_enabled = False
    try:
        yield
    finally:
        for module, enabled in zip(adapted, previous, strict=True):
            module.adapters_enabled = enabled


def merge_lora(model: M) -> M:
    """A copy of `model` with plain `Dense` modules whose kernel is W + scale * A @ B
    (W dequantized for QLoRA); `model` itself keeps its adapters."""
    adapted = lora_modules(model)
    if not adapted:
        raise LoraError("merge_lora: the model has no LoRA adapters to merge")
    merged = nnx.clone(model)
    for path, module in _dense_paths(merged):
        if not isinstance(module, LoRADense):
            continue
        kernel = module.base_kernel()
        weight = (kernel.astype(jnp.float32) + module.delta()).astype(kernel.dtype)
        axes = (
            _axes(module.kernel)
            if module.quantize is None
            else (*_axes(module.lora_a)[:-1], _axes(module.lora_b)[-1])
        )
        dense = Dense(
            module.in_features,
            module.out_features,
            axes=axes,
            use_bias=module.bias is not None,
            dtype=kernel.dtype,
            rngs=nnx.Rngs(0),  # overwritten below
        )
        dense.kernel = _variable(nnx.Param, weight, axes)
        dense.bias = module.bias
        _replace(merged, path, dense)
    return merged

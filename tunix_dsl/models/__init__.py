"""Models: their description (jax-free) and their flax nnx implementation.

Jax-free, read by the checker: `config` (ModelConfig, architecture fields),
`presets` (public architectures by name), `info` (what a model source declares).
Flax nnx, loaded only by plan and run: `transformer`, `layers`, `kv_cache`,
`sampler`, `lora`, `quant`, `hf` (Llama 3.x, Qwen2/2.5, Qwen3; HF import/export).

    model = Transformer(ModelConfig.from_preset("pico", vocab_size=259), rngs=nnx.Rngs(0))
    model = load_hf("path/to/hf_dir")            # Llama / Qwen2 / Qwen3 safetensors
    save_hf(model, "out/", tokenizer=tokenizer)  # loads in transformers

The names below resolve lazily, so importing `tunix_dsl.models.config` from the
checker does not import jax.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunix_dsl.models.config import ModelConfig
    from tunix_dsl.models.hf import ModelLoadError, load_hf, save_hf
    from tunix_dsl.models.kv_cache import KVCache, init_cache
    from tunix_dsl.models.transformer import ModelOutput, Transformer, gather_logps

_HOME = {
    "ModelConfig": "config",
    "ModelLoadError": "hf",
    "load_hf": "hf",
    "save_hf": "hf",
    "KVCache": "kv_cache",
    "init_cache": "kv_cache",
    "ModelOutput": "transformer",
    "Transformer": "transformer",
    "gather_logps": "transformer",
}


def __getattr__(name: str) -> object:
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "KVCache",
    "ModelConfig",
    "ModelLoadError",
    "ModelOutput",
    "Transformer",
    "gather_logps",
    "init_cache",
    "load_hf",
    "save_hf",
]

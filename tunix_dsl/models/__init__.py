"""Decoder models (flax nnx): Llama 3.x, Qwen2/2.5, Qwen3; KV cache; HF import/export.

    model = Transformer(ModelConfig.from_preset("pico", vocab_size=259), rngs=nnx.Rngs(0))
    model = load_hf("path/to/hf_dir")            # Llama / Qwen2 / Qwen3 safetensors
    save_hf(model, "out/", tokenizer=tokenizer)  # loads in transformers
"""

from tunix_dsl.model_config import ModelConfig
from tunix_dsl.models.hf import ModelLoadError, load_hf, save_hf
from tunix_dsl.models.kv_cache import KVCache, init_cache
from tunix_dsl.models.transformer import ModelOutput, Transformer, gather_logps

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

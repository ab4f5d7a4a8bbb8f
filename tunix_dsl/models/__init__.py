"""Decoder models (flax nnx): Llama 3.x, Qwen2/2.5, Qwen3; KV cache; HF import/export."""

from tunix_dsl.model_config import ModelConfig
from tunix_dsl.models.kv_cache import KVCache, init_cache
from tunix_dsl.models.transformer import ModelOutput, Transformer, gather_logps

__all__ = ["KVCache", "ModelConfig", "ModelOutput", "Transformer", "gather_logps", "init_cache"]

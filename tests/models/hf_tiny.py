"""Tiny random Hugging Face checkpoints built with transformers (CPU torch), nothing downloaded.

Weights are redrawn with a large standard deviation so that logits are O(1..10) and
a wrong layout (transposed kernel, permuted RoPE halves, missing bias) shows up far
above the 1e-4 tolerance instead of hiding in near-zero activations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

VOCAB = 101
COMMON: dict[str, Any] = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    rms_norm_eps=1e-6,
)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               # small so that all three llama3 frequency bands occur at head_dim 16
               "original_max_position_embeddings": 32}

# name -> (transformers config class name, model class name, config kwargs)
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama3-untied": ("LlamaConfig", "LlamaForCausalLM",
                      dict(head_dim=16, rope_parameters=LLAMA3_ROPE, tie_word_embeddings=False)),
    "llama3-tied": ("LlamaConfig", "LlamaForCausalLM",
                    dict(head_dim=16, rope_parameters=LLAMA3_ROPE, tie_word_embeddings=True)),
    "qwen2-tied": ("Qwen2Config", "Qwen2ForCausalLM",
                   dict(rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
                        tie_word_embeddings=True)),
    "qwen3-untied": ("Qwen3Config", "Qwen3ForCausalLM",  # head_dim != hidden / heads
                     dict(head_dim=24, tie_word_embeddings=False)),
}


def make_hf_model(case: str, seed: int = 0):
    import torch
    import transformers

    config_cls, model_cls, kwargs = CASES[case]
    config = getattr(transformers, config_cls)(**COMMON, **kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config).eval()
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model


def save_hf_model(model, directory: Path, *, old_config_format: bool = False) -> Path:
    """save_pretrained; with `old_config_format` rewrite config.json to the layout most
    published checkpoints use: top-level `rope_theta` and `rope_scaling`."""
    model.save_pretrained(directory)
    if old_config_format:
        path = directory / "config.json"
        cfg = json.loads(path.read_text())
        rope = dict(cfg.pop("rope_parameters"))
        cfg["rope_theta"] = rope.pop("rope_theta")
        cfg["rope_scaling"] = None if rope.get("rope_type") == "default" else rope
        path.write_text(json.dumps(cfg))
    return directory


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()


def random_tokens(batch: int, length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(batch, length), dtype=np.int32)

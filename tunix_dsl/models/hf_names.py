"""Our parameter paths <-> Hugging Face tensor names, for Llama / Qwen2 / Qwen3.

HF `nn.Linear.weight` is (out, in); our `Dense.kernel` is (in, out): those
are transposed, nothing else is reshaped.

RoPE layout: HF Llama/Qwen apply RoPE in the *rotate-half* convention (the
pair rotated together is dims (i, i + Dh/2)), and so does
`layers.apply_rope`. q/k projection weights are therefore copied as they are.
Permuting them (converting to the interleaved (2i, 2i+1) layout of Meta's
original checkpoints) on import or export is exactly the bug that made
MaxText's Llama 3 -> HF export produce a broken model (MaxText #1774).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunix_dsl.models.config import ModelConfig


@dataclass(frozen=True)
class TensorName:
    ours: str  # e.g. "layers.0.attn.q_proj.kernel"
    hf: str  # e.g. "model.layers.0.self_attn.q_proj.weight"
    transpose: bool  # HF Linear (out, in) vs our kernel (in, out)


# (our suffix, HF suffix, transpose, present when)
_LAYER_TENSORS: tuple[tuple[str, str, bool, str | None], ...] = (
    ("attn_norm.scale", "input_layernorm.weight", False, None),
    ("attn.q_proj.kernel", "self_attn.q_proj.weight", True, None),
    ("attn.k_proj.kernel", "self_attn.k_proj.weight", True, None),
    ("attn.v_proj.kernel", "self_attn.v_proj.weight", True, None),
    ("attn.o_proj.kernel", "self_attn.o_proj.weight", True, None),
    ("attn.q_proj.bias", "self_attn.q_proj.bias", False, "qkv_bias"),
    ("attn.k_proj.bias", "self_attn.k_proj.bias", False, "qkv_bias"),
    ("attn.v_proj.bias", "self_attn.v_proj.bias", False, "qkv_bias"),
    ("attn.q_norm.scale", "self_attn.q_norm.weight", False, "qk_norm"),
    ("attn.k_norm.scale", "self_attn.k_norm.weight", False, "qk_norm"),
    ("mlp_norm.scale", "post_attention_layernorm.weight", False, None),
    ("mlp.gate_proj.kernel", "mlp.gate_proj.weight", True, None),
    ("mlp.up_proj.kernel", "mlp.up_proj.weight", True, None),
    ("mlp.down_proj.kernel", "mlp.down_proj.weight", True, None),
)

# HF tensors that carry no information for us (recomputed buffers; the tied head).
IGNORED_HF_SUFFIXES = ("rotary_emb.inv_freq",)


def tensor_names(cfg: ModelConfig) -> list[TensorName]:
    """Every parameter of `Transformer(cfg)` with its HF name, in checkpoint order."""
    names = [TensorName("embed.embedding", "model.embed_tokens.weight", False)]
    for i in range(cfg.n_layers):
        for ours, hf, transpose, flag in _LAYER_TENSORS:
            if flag is None or getattr(cfg, flag):
                names.append(TensorName(f"layers.{i}.{ours}", f"model.layers.{i}.{hf}", transpose))
    names.append(TensorName("final_norm.scale", "model.norm.weight", False))
    if not cfg.tie_embeddings:
        names.append(TensorName("lm_head.kernel", "lm_head.weight", True))
    return names


def is_ignorable(hf_name: str, cfg: ModelConfig) -> bool:
    """True for checkpoint tensors we do not load and that do not signal a mismatch."""
    if hf_name.endswith(IGNORED_HF_SUFFIXES):
        return True
    return cfg.tie_embeddings and hf_name == "lm_head.weight"  # a saved copy of the tied table

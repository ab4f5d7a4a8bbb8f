"""Architecture presets: the published `config.json` values of models users fine-tune.

`transformer(preset = "qwen3-0.6b", tokenizer = t)` builds that architecture
with random weights — for `tnx plan` and random-init runs, no download. An
architecture preset carries its own vocabulary (the embedding has the
checkpoint's rows, which may exceed the tokenizer's ids, as in the published
checkpoints); a tokenizer with more ids than that is an error.

`hf("dir", preset = "qwen3-0.6b")` names the architecture a checkpoint
directory is expected to hold: lint validates config.json against it, and
while config.json is not there yet (the download is still to come) the
preset stands in for it, so the pipeline can be checked and planned.

jax-free: the checker reads these tables. Values are the public
config.json fields (hidden_size → d_model, intermediate_size → mlp_dim, ...).
"""

from __future__ import annotations

from typing import Any

_LLAMA3 = dict(family="llama", rope_theta=500000.0, norm_eps=1e-5, vocab_size=128256,
               max_seq_len=131072, n_kv_heads=8)
_QWEN2 = dict(family="qwen2", qkv_bias=True, rope_theta=1000000.0, norm_eps=1e-6)
_QWEN3 = dict(family="qwen3", qk_norm=True, rope_theta=1000000.0, norm_eps=1e-6,
              vocab_size=151936, max_seq_len=40960, head_dim=128, n_kv_heads=8)


def _llama3_rope(factor: float) -> dict[str, Any]:
    return {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


# name -> ModelConfig fields; the HF repository each one mirrors is in HF_REPOS.
ARCHITECTURE_PRESETS: dict[str, dict[str, Any]] = {
    "llama3.2-1b": dict(_LLAMA3, d_model=2048, n_layers=16, n_heads=32, head_dim=64,
                        mlp_dim=8192, tie_embeddings=True, rope_scaling=_llama3_rope(32.0)),
    "llama3.2-3b": dict(_LLAMA3, d_model=3072, n_layers=28, n_heads=24, head_dim=128,
                        mlp_dim=8192, tie_embeddings=True, rope_scaling=_llama3_rope(32.0)),
    "llama3.1-8b": dict(_LLAMA3, d_model=4096, n_layers=32, n_heads=32, head_dim=128,
                        mlp_dim=14336, tie_embeddings=False, rope_scaling=_llama3_rope(8.0)),
    "qwen2.5-0.5b": dict(_QWEN2, vocab_size=151936, d_model=896, n_layers=24, n_heads=14,
                         n_kv_heads=2, head_dim=64, mlp_dim=4864, max_seq_len=32768,
                         tie_embeddings=True),
    "qwen2.5-1.5b": dict(_QWEN2, vocab_size=151936, d_model=1536, n_layers=28, n_heads=12,
                         n_kv_heads=2, head_dim=128, mlp_dim=8960, max_seq_len=131072,
                         tie_embeddings=True),
    "qwen2.5-7b": dict(_QWEN2, vocab_size=152064, d_model=3584, n_layers=28, n_heads=28,
                       n_kv_heads=4, head_dim=128, mlp_dim=18944, max_seq_len=131072,
                       tie_embeddings=False),
    "qwen3-0.6b": dict(_QWEN3, d_model=1024, n_layers=28, n_heads=16, mlp_dim=3072,
                       tie_embeddings=True),
    "qwen3-1.7b": dict(_QWEN3, d_model=2048, n_layers=28, n_heads=16, mlp_dim=6144,
                       tie_embeddings=True),
    "qwen3-4b": dict(_QWEN3, d_model=2560, n_layers=36, n_heads=32, mlp_dim=9728,
                     tie_embeddings=True),
    "qwen3-8b": dict(_QWEN3, d_model=4096, n_layers=36, n_heads=32, mlp_dim=12288,
                     tie_embeddings=False),
}

HF_REPOS: dict[str, str] = {
    "llama3.2-1b": "meta-llama/Llama-3.2-1B",
    "llama3.2-3b": "meta-llama/Llama-3.2-3B",
    "llama3.1-8b": "meta-llama/Llama-3.1-8B",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B",
    "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B",
    "qwen3-4b": "Qwen/Qwen3-4B",
    "qwen3-8b": "Qwen/Qwen3-8B",
}

# The fields a checkpoint's config.json must agree on with the preset it is declared as.
ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "family", "vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim",
    "mlp_dim", "rope_theta", "rope_scaling", "tie_embeddings", "qkv_bias", "qk_norm",
)


def presets_table() -> str:
    """The architecture presets as `tnx explain transformer` shows them."""
    from tunix_dsl.models.config import ModelConfig

    lines = ["architecture presets (config.json of the named checkpoint; random weights):",
             f"  {'preset':<14}{'params':>8}  {'layers':>6} {'d_model':>7} {'heads':>5} "
             f"{'kv':>3} {'mlp':>6} {'vocab':>7} {'context':>8}  mirrors"]
    for name, fields in ARCHITECTURE_PRESETS.items():
        cfg = ModelConfig.from_preset(name, vocab_size=fields["vocab_size"])
        lines.append(
            f"  {name:<14}{cfg.param_count() / 1e9:>7.2f}B  {cfg.n_layers:>6} {cfg.d_model:>7} "
            f"{cfg.n_heads:>5} {cfg.n_kv_heads:>3} {cfg.mlp_dim:>6} {cfg.vocab_size:>7} "
            f"{cfg.max_seq_len:>8}  {HF_REPOS[name]}")
    return "\n".join(lines)

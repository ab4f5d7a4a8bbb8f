"""Model configuration: one dataclass for every supported decoder family.

jax-free on purpose: the checker (`tnx lint`) reads presets and parameter
counts, and `load_hf` reads Hugging Face `config.json` through
`ModelConfig.from_hf_config` before any array exists.

Families (a registry, not an if-chain): `llama` (Llama 3.x), `qwen2`
(Qwen2/2.5: bias on q/k/v), `qwen3` (Qwen3: RMSNorm on q and k per head).
RoPE scaling is kept in the Hugging Face shape, e.g.
`{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
"high_freq_factor": 4.0, "original_max_position_embeddings": 8192}`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from typing import Any

from tunix_dsl.models.presets import ARCHITECTURE_FIELDS, ARCHITECTURE_PRESETS

ROPE_TYPES = ("default", "linear", "llama3")
DTYPES = ("float32", "bfloat16", "float16")
# the remat policies of `tunix_dsl.models.layer_stack` (named here: this module is jax-free)
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "offload")


class ModelConfigError(ValueError):
    """A model configuration that cannot be built; the message names the field and the fix."""


@dataclass(frozen=True)
class FamilySpec:
    """What distinguishes one decoder family from another, and its HF names."""

    architecture: str  # HF `architectures[0]`
    model_type: str  # HF `model_type`
    qkv_bias: bool
    qk_norm: bool
    default_head_dim: int | None = None  # transformers' default when config.json omits it;
    # None: hidden_size // num_attention_heads


FAMILIES: dict[str, FamilySpec] = {
    "llama": FamilySpec("LlamaForCausalLM", "llama", qkv_bias=False, qk_norm=False),
    "qwen2": FamilySpec("Qwen2ForCausalLM", "qwen2", qkv_bias=True, qk_norm=False),
    "qwen3": FamilySpec("Qwen3ForCausalLM", "qwen3", qkv_bias=False, qk_norm=True,
                        default_head_dim=128),
}
ARCHITECTURES: dict[str, str] = {spec.architecture: name for name, spec in FAMILIES.items()}

# Size presets for tests and examples (vocab from the tokenizer), then the real
# architectures of tunix_dsl.models.presets (their own vocab).
SIZE_PRESETS: dict[str, dict[str, Any]] = {
    "pico": dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, mlp_dim=192,
                 max_seq_len=128),
    "nano": dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=32, mlp_dim=384,
                 max_seq_len=256),
    "micro": dict(d_model=256, n_layers=6, n_heads=8, n_kv_heads=4, head_dim=32, mlp_dim=768,
                  max_seq_len=512),
}
PRESETS: dict[str, dict[str, Any]] = {**SIZE_PRESETS, **ARCHITECTURE_PRESETS}


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    mlp_dim: int
    max_seq_len: int
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    norm_eps: float = 1e-6
    qkv_bias: bool = False
    qk_norm: bool = False
    tie_embeddings: bool = True
    family: str = "llama"
    remat: bool | str = False  # a remat policy (models.layer_stack): none | full | dots |
    # dots_no_batch | offload; True means "full", False "none"
    scan_layers: bool = True  # store the blocks stacked and run them as one scan (models.layer_stack)
    dtype: str = "float32"  # compute (activation) dtype; norms, softmax and losses run in float32
    param_dtype: str = "float32"  # storage dtype of the parameters (the master weights);
    # each parameter is cast to `dtype` where it is used, so gradients arrive in `param_dtype`

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                     "mlp_dim", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ModelConfigError(f"model config: `{name}` must be a positive integer, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ModelConfigError(
                f"model config: n_heads ({self.n_heads}) must be a multiple of n_kv_heads "
                f"({self.n_kv_heads}) for grouped-query attention")
        if self.head_dim % 2:
            raise ModelConfigError(f"model config: head_dim ({self.head_dim}) must be even for RoPE")
        if self.family not in FAMILIES:
            raise ModelConfigError(
                f"model config: unknown family {self.family!r}; known: {', '.join(FAMILIES)}")
        if not isinstance(self.remat, bool) and self.remat not in REMAT_POLICIES:
            raise ModelConfigError(f"model config: remat {self.remat!r} is not one of "
                                   f"{', '.join(REMAT_POLICIES)} (or true/false)")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ModelConfigError(f"model config: {name} {getattr(self, name)!r} is not "
                                       f"one of {', '.join(DTYPES)}")
        rope_type = (self.rope_scaling or {}).get("rope_type", "default")
        if rope_type not in ROPE_TYPES:
            raise ModelConfigError(
                f"model config: RoPE scaling type {rope_type!r} is not supported "
                f"(supported: {', '.join(ROPE_TYPES)})")
        if rope_type == "llama3":
            missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor",
                                   "original_max_position_embeddings")
                       if k not in self.rope_scaling]  # type: ignore[operator]
            if missing:
                raise ModelConfigError(
                    f"model config: llama3 RoPE scaling needs {', '.join(missing)}")
        if rope_type == "linear" and "factor" not in self.rope_scaling:  # type: ignore[operator]
            raise ModelConfigError("model config: linear RoPE scaling needs `factor`")

    def __hash__(self) -> int:
        # The config sits on the model as static graph data, which jit hashes; the RoPE
        # scaling dict is hashed by its items.
        items = tuple((f.name, getattr(self, f.name)) for f in fields(self))
        return hash(tuple((k, tuple(sorted(v.items())) if isinstance(v, dict) else v)
                          for k, v in items))

    # ------------------------------------------------------------------ building
    @classmethod
    def from_preset(cls, name: str, vocab_size: int, **overrides: Any) -> ModelConfig:
        """A preset by name with the tokenizer's vocab size.

        Size presets (`pico`, `nano`, `micro`) take the tokenizer's vocabulary;
        architecture presets keep the checkpoint's (a tokenizer with more ids
        than that cannot be embedded).
        """
        if name not in PRESETS:
            raise ModelConfigError(
                f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
        fields_ = copy.deepcopy(PRESETS[name])  # callers may not share the RoPE dicts
        embedded = fields_.pop("vocab_size", None)
        if embedded is not None and vocab_size > embedded:
            raise ModelConfigError(
                f"preset {name!r} embeds {embedded} token ids but the tokenizer has {vocab_size}; "
                f"use that model's tokenizer (or a size preset such as `nano`)")
        return cls(vocab_size=embedded or vocab_size, **{**fields_, **overrides})

    def architecture_mismatches(self, preset: str) -> list[str]:
        """`field: ours vs preset's` for every architecture field that differs from `preset`."""
        expected = type(self).from_preset(preset, vocab_size=1)
        return [f"{name} is {getattr(self, name)!r}, preset {preset!r} has {getattr(expected, name)!r}"
                for name in ARCHITECTURE_FIELDS
                if not _same(getattr(self, name), getattr(expected, name))]

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], **overrides: Any) -> ModelConfig:
        """Build from a Hugging Face `config.json` dict.

        Accepts both RoPE layouts: top-level `rope_theta` + `rope_scaling` (most
        published checkpoints) and transformers 5's `rope_parameters` dict that
        carries `rope_theta` and `rope_type` together.
        """
        _check_hf_config(hf)
        archs = hf.get("architectures") or []
        known = [a for a in archs if a in ARCHITECTURES]
        if not known:
            raise ModelConfigError(
                f"unsupported architecture {archs or hf.get('model_type')!r}; supported: "
                f"{', '.join(ARCHITECTURES)}")
        family = ARCHITECTURES[known[0]]
        spec = FAMILIES[family]
        _reject_unsupported_hf_options(hf, family)

        rope_params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        rope_theta = float(rope_params.pop("rope_theta", hf.get("rope_theta", 10000.0)))
        rope_type = rope_params.pop("rope_type", rope_params.pop("type", "default"))
        rope_scaling = None if rope_type == "default" else {"rope_type": rope_type, **rope_params}
        if rope_scaling is not None and rope_type == "llama3":
            rope_scaling.setdefault("original_max_position_embeddings",
                                    hf.get("max_position_embeddings"))
        n_heads = hf["num_attention_heads"]
        kwargs: dict[str, Any] = dict(
            vocab_size=hf["vocab_size"],
            d_model=hf["hidden_size"],
            n_layers=hf["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=hf.get("num_key_value_heads") or n_heads,
            head_dim=hf.get("head_dim") or spec.default_head_dim or hf["hidden_size"] // n_heads,
            mlp_dim=hf["intermediate_size"],
            max_seq_len=hf.get("max_position_embeddings", 2048),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            qkv_bias=spec.qkv_bias,
            qk_norm=spec.qk_norm,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            family=family,
        )
        return cls(**{**kwargs, **overrides})

    def to_hf_config(self) -> dict[str, Any]:
        """The `config.json` transformers needs to rebuild this model (top-level RoPE layout,
        which both transformers 4.x and 5.x read)."""
        spec = FAMILIES[self.family]
        hf: dict[str, Any] = {
            "architectures": [spec.architecture],
            "model_type": spec.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.d_model,
            "intermediate_size": self.mlp_dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_seq_len,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": dict(self.rope_scaling) if self.rope_scaling else None,
            "tie_word_embeddings": self.tie_embeddings,
            "attention_bias": False,
            "torch_dtype": self.param_dtype,  # transformers 4.x reads this key,
            "dtype": self.param_dtype,  # transformers 5.x this one
        }
        if self.family == "llama":
            hf["mlp_bias"] = False
        return hf

    def replace(self, **changes: Any) -> ModelConfig:
        return type(self)(**{**asdict(self), **changes})

    # ------------------------------------------------------------------ sizes
    def param_count(self) -> int:
        """Number of parameters (embedding counted once when tied)."""
        d, hd = self.d_model, self.head_dim
        q, kv = self.n_heads * hd, self.n_kv_heads * hd
        attn = d * q + 2 * d * kv + q * d
        if self.qkv_bias:
            attn += q + 2 * kv
        if self.qk_norm:
            attn += 2 * hd
        per_layer = attn + 3 * d * self.mlp_dim + 2 * d  # + two RMSNorm scales
        embed = self.vocab_size * d
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return embed + self.n_layers * per_layer + d + head

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


_HF_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size")
_HF_OPTIONAL_SIZES = ("num_key_value_heads", "head_dim", "max_position_embeddings")
_HF_NUMBERS = ("rope_theta", "rms_norm_eps")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             type(None): "null", int: "an integer", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _check_hf_config(hf: Any) -> None:
    """The shape `from_hf_config` relies on, each problem named (never a KeyError or a
    ZeroDivisionError from a hand-edited or truncated config.json)."""
    if not isinstance(hf, dict):
        raise ModelConfigError(f"config.json must hold a JSON object, found {_json_type(hf)}")
    for key in _HF_SIZES + _HF_OPTIONAL_SIZES:
        value = hf.get(key)
        if value is None and key in _HF_OPTIONAL_SIZES:
            continue
        if value is None:
            raise ModelConfigError(f"config.json lacks `{key}`")
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ModelConfigError(
                f"config.json: `{key}` must be a positive integer, found {value!r}")
    for key in _HF_NUMBERS:
        value = hf.get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise ModelConfigError(f"config.json: `{key}` must be a number, found {value!r}")
    archs = hf.get("architectures")
    if archs is not None and not (isinstance(archs, list) and all(isinstance(a, str) for a in archs)):
        raise ModelConfigError(
            f"config.json: `architectures` must be a list of names, found {_json_type(archs)}")
    for key in ("rope_parameters", "rope_scaling"):
        if hf.get(key) is not None and not isinstance(hf[key], dict):
            raise ModelConfigError(f"config.json: `{key}` must be an object, found "
                                   f"{_json_type(hf[key])}")


def _same(a: Any, b: Any) -> bool:
    """Equal, with floats inside RoPE parameters compared as numbers (8 == 8.0)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _reject_unsupported_hf_options(hf: dict[str, Any], family: str) -> None:
    """Options our forward does not implement: fail loudly instead of silently diverging."""
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ModelConfigError(f"{family} checkpoint uses hidden_act={act!r}; only 'silu' is supported")
    if family in ("llama", "qwen3") and hf.get("attention_bias"):
        raise ModelConfigError(f"{family} checkpoint has attention_bias=true; not supported")
    if hf.get("mlp_bias"):
        raise ModelConfigError(f"{family} checkpoint has mlp_bias=true; not supported")
    if hf.get("use_sliding_window"):
        raise ModelConfigError(f"{family} checkpoint uses sliding-window attention; not supported")
    if (hf.get("partial_rotary_factor") or 1.0) != 1.0:
        raise ModelConfigError(f"{family} checkpoint uses partial rotary embeddings; not supported")

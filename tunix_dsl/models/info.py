"""What the checker can know about a model without jax: its sizes and its tokenizer.

`transformer(preset, tokenizer)` sizes come from `ModelConfig.from_preset`
with the tokenizer's vocabulary; `hf(path)` sizes from the checkpoint's
`config.json`. Nothing here loads weights or imports jax; a missing file is
reported (as a reason string) so the checker can warn that size checks were
skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunix_dsl.models.config import ModelConfig, ModelConfigError
from tunix_dsl.schemas.sources import (
    BytesTokenizer,
    HFModelSource,
    HFTokenizerSource,
)

BYTE_VOCAB_SIZE = 259  # 256 bytes + pad, bos, eos (tunix_dsl.data.tokenizers.ByteTokenizer)


@dataclass(frozen=True)
class SizeInfo:
    """A model declaration's config, or why it is unknown (`missing`) or invalid (`invalid`)."""

    config: ModelConfig | None
    missing: str | None = None  # a file could not be read: checks that need sizes are skipped
    invalid: str | None = None  # the sizes themselves are inconsistent: an error


def resolve_path(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


def is_file(path: Path) -> bool:
    """`path.is_file()` that says False instead of raising (a name longer than the OS
    allows, a directory that cannot be searched): the checker must not crash on a path."""
    try:
        return path.is_file()
    except OSError:
        return False


def exists(path: Path) -> bool:
    """`path.exists()` that says False instead of raising (see `is_file`)."""
    try:
        return path.exists()
    except OSError:
        return False


def tokenizer_identity(spec: Any, base_dir: Path) -> tuple[str, str]:
    """(key, description): two tokenizers with the same key produce the same ids."""
    if isinstance(spec, BytesTokenizer):
        return "bytes", "bytes()"
    if isinstance(spec, HFTokenizerSource):
        return f"hf:{resolve_path(spec.path, base_dir).resolve()}", f'hf_tokenizer("{spec.path}")'
    raise TypeError(f"unknown tokenizer source {type(spec).__name__}")


def tokenizer_vocab_size(spec: Any, base_dir: Path) -> int | str:
    """The vocabulary size, or the reason it is unknown."""
    if isinstance(spec, BytesTokenizer):
        return BYTE_VOCAB_SIZE
    path = resolve_path(spec.path, base_dir)
    if not is_file(path / "tokenizer.json"):
        return f"no tokenizer.json in {spec.path}"
    try:
        from tunix_dsl.data.tokenizers import HFTokenizer

        return HFTokenizer.from_dir(path).vocab_size
    except Exception as e:  # a broken tokenizer file must not crash the linter
        return f"cannot read {spec.path}/tokenizer.json: {e}"


def model_size_info(spec: Any, tokenizer_spec: Any | None, precision: str,
                    base_dir: Path, param_dtype: str = "float32") -> SizeInfo:
    """The ModelConfig a model declaration describes (same rules as the runtime).
    `precision` is the compute dtype, `param_dtype` the parameters' storage dtype."""
    try:
        # a checkpoint: its config.json (the weights load at run time)
        if isinstance(spec, HFModelSource):
            config_path = resolve_path(spec.path, base_dir) / "config.json"
            try:
                hf = json.loads(config_path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                if spec.preset is not None:  # not downloaded yet: the declared architecture
                    return SizeInfo(preset_config(spec.preset, remat=spec.remat, dtype=precision))
                return SizeInfo(None, missing=f"no config.json in {spec.path}")
            except (OSError, ValueError) as e:
                return SizeInfo(None, missing=f"cannot read {spec.path}/config.json: {e}")
            return SizeInfo(checkpoint_config(hf, spec.preset, remat=spec.remat, dtype=precision,
                                              param_dtype=param_dtype))
        # an architecture of the built-in decoder family, initialised randomly: transformer()
        # and plugin models alike describe it through `ModelSchema.architecture`
        vocab = tokenizer_vocab_size(tokenizer_spec, base_dir)
        if isinstance(vocab, str):
            return SizeInfo(None, missing=vocab)
        config = spec.architecture(vocab, precision, param_dtype)
        if not isinstance(config, ModelConfig):
            return SizeInfo(None, invalid=f"`{type(spec).call_name}(...)` described its "
                                          f"architecture as {type(config).__name__}, not a ModelConfig")
        return SizeInfo(config)
    except ModelConfigError as e:
        return SizeInfo(None, invalid=str(e))
    except (KeyError, TypeError) as e:
        return SizeInfo(None, invalid=f"config.json lacks or mistypes {e}")


def preset_config(preset: str, **overrides: Any) -> ModelConfig:
    """An architecture preset standing in for a checkpoint's config.json."""
    return ModelConfig.from_preset(preset, vocab_size=1, **overrides)


def checkpoint_config(hf: dict[str, Any], preset: str | None, **overrides: Any) -> ModelConfig:
    """A checkpoint's config.json, checked against the preset it is declared as (if any)."""
    cfg = ModelConfig.from_hf_config(hf, **overrides)
    if preset is not None:
        wrong = cfg.architecture_mismatches(preset)
        if wrong:
            raise ModelConfigError(
                "config.json does not match `preset = \"" + preset + "\"`: " + "; ".join(wrong)
                + " (remove `preset` or point `hf` at a checkpoint of that architecture)")
    return cfg


def dense_kernel_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) of every `Dense` kernel by its parameter path, exactly as the model names
    them (`layers.3.attn.q_proj.kernel`, `lm_head.kernel` when untied): what LoRA targets
    are matched against, at lint time and by `apply_lora`."""
    attn_width = cfg.n_heads * cfg.head_dim
    kv_width = cfg.n_kv_heads * cfg.head_dim
    block = {
        "attn.q_proj": (cfg.d_model, attn_width),
        "attn.k_proj": (cfg.d_model, kv_width),
        "attn.v_proj": (cfg.d_model, kv_width),
        "attn.o_proj": (attn_width, cfg.d_model),
        "mlp.gate_proj": (cfg.d_model, cfg.mlp_dim),
        "mlp.up_proj": (cfg.d_model, cfg.mlp_dim),
        "mlp.down_proj": (cfg.mlp_dim, cfg.d_model),
    }
    shapes = {f"layers.{i}.{name}.kernel": shape
              for i in range(cfg.n_layers) for name, shape in block.items()}
    if not cfg.tie_embeddings:
        shapes["lm_head.kernel"] = (cfg.d_model, cfg.vocab_size)
    return shapes


def match_lora_targets(targets: Sequence[str], paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """(paths any target matches, targets that match no path): `re.search` of each target
    regex over each kernel path. The one matching rule of the linter and the runtime."""
    paths = list(paths)
    compiled = [(t, re.compile(t)) for t in targets]
    matched = [p for p in paths if any(c.search(p) for _, c in compiled)]
    unmatched = [t for t, c in compiled if not any(c.search(p) for p in paths)]
    return matched, unmatched

"""From validated declarations to live objects: tokenizers, model configs, rows.

Paths in a `.tnx` file are relative to the file's directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunix_dsl.datasets import Row, read_jsonl, synthetic_rows
from tunix_dsl.model_config import ModelConfig
from tunix_dsl.schemas.sources import (
    BytesTokenizer,
    HFModelSource,
    HFTokenizerSource,
    JsonlSource,
    SyntheticSource,
    TransformerSource,
)
from tunix_dsl.tokenizers import ByteTokenizer, HFTokenizer, Tokenizer

JSONL_COLUMNS = ("text", "prompt", "completion", "chosen", "rejected", "answer")


def resolve_path(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


def make_tokenizer(spec: Any, base_dir: Path) -> Tokenizer:
    if isinstance(spec, BytesTokenizer):
        return ByteTokenizer()
    if isinstance(spec, HFTokenizerSource):
        return HFTokenizer.from_dir(resolve_path(spec.path, base_dir))
    raise TypeError(f"unsupported tokenizer source {type(spec).__name__}")


def model_config(spec: Any, tokenizer: Tokenizer | None, precision: str, base_dir: Path) -> ModelConfig:
    """The architecture a model declaration describes (no weights touched)."""
    if isinstance(spec, TransformerSource):
        assert tokenizer is not None, "the checker guarantees transformer() has a tokenizer"
        overrides = {
            name: getattr(spec, name)
            for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "mlp_dim", "max_seq_len")
            if getattr(spec, name) is not None
        }
        return ModelConfig.from_preset(
            spec.preset, tokenizer.vocab_size, remat=spec.remat, dtype=precision, **overrides
        )
    if isinstance(spec, HFModelSource):
        import json

        config_path = resolve_path(spec.path, base_dir) / "config.json"
        hf = json.loads(config_path.read_text())
        return ModelConfig.from_hf_config(hf, remat=spec.remat, dtype=precision)
    raise TypeError(f"unsupported model source {type(spec).__name__}")


def dataset_rows(spec: Any, base_dir: Path) -> list[Row]:
    if isinstance(spec, SyntheticSource):
        return synthetic_rows(spec.task, count=spec.count, seed=spec.seed, **spec.params)
    if isinstance(spec, JsonlSource):
        mapping = {col: getattr(spec, col) for col in JSONL_COLUMNS if getattr(spec, col)}
        return read_jsonl(resolve_path(spec.path, base_dir), mapping)
    raise TypeError(f"unsupported dataset source {type(spec).__name__}")

"""From validated declarations to live objects: tokenizers, model configs, rows.

Paths in a `.tnx` file are relative to the file's directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunix_dsl.datasets import CANONICAL_COLUMNS, Row, read_jsonl, synthetic_rows
from tunix_dsl.model_config import ModelConfig
from tunix_dsl.schemas.base import ModelRef
from tunix_dsl.schemas.sources import (
    BytesTokenizer,
    HFModelSource,
    HFTokenizerSource,
    JsonlSource,
    SyntheticSource,
    TransformerSource,
)
from tunix_dsl.tokenizers import ByteTokenizer, HFTokenizer, Tokenizer


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

        from tunix_dsl.model_info import checkpoint_config, preset_config

        config_path = resolve_path(spec.path, base_dir) / "config.json"
        if spec.preset is not None and not config_path.exists():
            return preset_config(spec.preset, remat=spec.remat, dtype=precision)  # plan before download
        hf = json.loads(config_path.read_text())
        return checkpoint_config(hf, spec.preset, remat=spec.remat, dtype=precision)
    raise TypeError(f"unsupported model source {type(spec).__name__}")


def dataset_rows(spec: Any, base_dir: Path, consumer: str | None = None) -> list[Row]:
    """The rows of a dataset declaration; `consumer` makes jsonl name the line of a missing column."""
    if isinstance(spec, SyntheticSource):
        return synthetic_rows(spec.task, count=spec.count, seed=spec.seed, **spec.params)
    if isinstance(spec, JsonlSource):
        mapping = {col: getattr(spec, col) for col in CANONICAL_COLUMNS if getattr(spec, col, None)}
        return read_jsonl(resolve_path(spec.path, base_dir), mapping, consumer=consumer)
    raise TypeError(f"unsupported dataset source {type(spec).__name__}")


class Resources:
    """Tokenizers and model architectures of a pipeline, resolved once (no weights)."""

    def __init__(self, pipeline: Any):
        self.pipeline = pipeline
        self.base_dir = Path(pipeline.base_dir)
        self.precision = pipeline.settings.precision
        self._tokenizers: dict[str, Tokenizer] = {}

    def root_decl(self, ref: ModelRef) -> str:
        """The model declaration a (possibly stage-output) reference started from."""
        return self.pipeline.root(ref).name

    def tokenizer_for(self, ref: ModelRef) -> Tokenizer:
        decl_name = self.root_decl(ref)
        if decl_name not in self._tokenizers:
            spec = self.pipeline.models[decl_name].spec
            if spec.tokenizer is not None:
                tok_spec = self.pipeline.tokenizers[spec.tokenizer].spec
                self._tokenizers[decl_name] = make_tokenizer(tok_spec, self.base_dir)
            else:  # an hf() model without a tokenizer declaration: the checkpoint's own
                self._tokenizers[decl_name] = HFTokenizer.from_dir(resolve_path(spec.path, self.base_dir))
        return self._tokenizers[decl_name]

    def config_for(self, ref: ModelRef) -> ModelConfig:
        spec = self.pipeline.models[self.root_decl(ref)].spec
        tokenizer = self.tokenizer_for(ref) if isinstance(spec, TransformerSource) else None
        return model_config(spec, tokenizer, self.precision, self.base_dir)

    def rows(self, dataset: str, consumer: str | None = None) -> list[Row]:
        return dataset_rows(self.pipeline.datasets[dataset].spec, self.base_dir, consumer)

"""Architecture presets: parameter counts against transformers, published sizes, hf(preset=)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunix_dsl.api import load
from tunix_dsl.models.config import ModelConfig, ModelConfigError
from tunix_dsl.models.presets import ARCHITECTURE_PRESETS

# Published sizes (model cards), in billions, incl. embeddings counted once when tied.
PUBLISHED_B = {"llama3.2-1b": 1.24, "llama3.2-3b": 3.21, "llama3.1-8b": 8.03,
               "qwen2.5-0.5b": 0.49, "qwen2.5-1.5b": 1.54, "qwen2.5-7b": 7.61,
               "qwen3-0.6b": 0.60, "qwen3-1.7b": 1.7, "qwen3-4b": 4.0, "qwen3-8b": 8.2}


def preset(name: str) -> ModelConfig:
    return ModelConfig.from_preset(name, vocab_size=259)


@pytest.mark.parametrize("name", list(ARCHITECTURE_PRESETS))
def test_parameter_count_equals_transformers_on_meta_device(name: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = preset(name)
    hf = cfg.to_hf_config()
    config = AutoConfig.for_model(hf.pop("model_type"), **{k: v for k, v in hf.items()
                                                           if k not in ("torch_dtype", "dtype")})
    with torch.device("meta"):  # shapes only: an 8B model costs no memory
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == cfg.param_count()
    assert cfg.param_count() / 1e9 == pytest.approx(PUBLISHED_B[name], rel=0.025)
    # and the HF config round-trips to the same architecture
    assert ModelConfig.from_hf_config(cfg.to_hf_config()).architecture_mismatches(name) == []


def test_architecture_preset_keeps_its_vocabulary_and_rejects_a_larger_tokenizer() -> None:
    assert preset("qwen3-0.6b").vocab_size == 151936
    assert ModelConfig.from_preset("nano", vocab_size=259).vocab_size == 259
    with pytest.raises(ModelConfigError, match="embeds 128256 token ids but the tokenizer has 200000"):
        ModelConfig.from_preset("llama3.2-1b", vocab_size=200000)


PIPELINE = """
pipeline p {{ seed = 0 }}
tokenizer t = bytes()
model m = {model}
dataset d = synthetic("addition", count = 10)
stage s: sft {{
  model = m
  data = d
  steps = 1
  batch_size = 8
  max_seq_len = 32
}}
"""


def lint(tmp_path: Path, model: str) -> list:
    (tmp_path / "p.tnx").write_text(PIPELINE.format(model=model))
    unused_output = "TNX402"  # this small pipeline exports nothing; not what is tested
    return [d for d in load(str(tmp_path / "p.tnx")).diagnostics if d.code != unused_output]


def test_transformer_preset_lints_clean(tmp_path: Path) -> None:
    assert lint(tmp_path, 'transformer(preset = "qwen3-0.6b", tokenizer = t)') == []


def test_hf_preset_stands_in_for_a_missing_config_and_checks_a_present_one(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    model = 'hf("ckpt", tokenizer = t, preset = "qwen3-0.6b")'
    assert lint(tmp_path, model) == []  # not downloaded yet: the preset is the architecture
    good = preset("qwen3-0.6b").to_hf_config()
    (ckpt / "config.json").write_text(json.dumps(good))
    assert lint(tmp_path, model) == []
    (ckpt / "config.json").write_text(json.dumps({**good, "num_hidden_layers": 27}))
    (diag,) = lint(tmp_path, model)
    assert diag.code == "TNX208" and diag.span.line == 4
    assert "n_layers is 27, preset 'qwen3-0.6b' has 28" in diag.label

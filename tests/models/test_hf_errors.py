"""Bad checkpoints give one-line errors that name the tensor, field or architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from tunix_dsl.models import Transformer
from tunix_dsl.models.config import ModelConfig, ModelConfigError
from tunix_dsl.models.hf import ModelLoadError, load_hf, save_hf


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    cfg = ModelConfig.from_preset("pico", 61, family="qwen2", qkv_bias=True,
                                  tie_embeddings=False)
    return save_hf(Transformer(cfg, rngs=nnx.Rngs(0)), tmp_path_factory.mktemp("ckpt"))


def _copy(src: Path, dst: Path, *, drop: str | None = None, config: dict | None = None,
          add: dict | None = None) -> Path:
    dst.mkdir()
    with safe_open(src / "model.safetensors", framework="numpy") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != drop}  # noqa: SIM118
    save_file({**tensors, **(add or {})}, dst / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**cfg, **(config or {})}))
    return dst


def _one_line_error(directory: Path, exc: type[Exception] = ModelLoadError) -> str:
    with pytest.raises(exc) as info:
        load_hf(directory)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_tensor_is_named(saved, tmp_path):
    bad = _copy(saved, tmp_path / "bad", drop="model.layers.1.self_attn.k_proj.bias")
    assert "'model.layers.1.self_attn.k_proj.bias'" in _one_line_error(bad)


def test_unknown_architecture_is_named(saved, tmp_path):
    bad = _copy(saved, tmp_path / "bad", config={"architectures": ["MistralForCausalLM"]})
    message = _one_line_error(bad)
    assert "MistralForCausalLM" in message and "LlamaForCausalLM" in message


def test_unexpected_tensor_means_config_and_weights_disagree(saved, tmp_path):
    import numpy as np

    bad = _copy(saved, tmp_path / "bad",
                add={"model.layers.0.self_attn.o_proj.bias": np.zeros(64, np.float32)})
    assert "o_proj.bias" in _one_line_error(bad)


def test_shape_mismatch_names_tensor_and_shapes(saved, tmp_path):
    bad = _copy(saved, tmp_path / "bad", config={"intermediate_size": 100})
    message = _one_line_error(bad)
    assert "mlp.gate_proj.weight" in message and "[100, 64]" in message


@pytest.mark.parametrize("change, expected", [
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
    ({"use_sliding_window": True}, "sliding-window"),
])
def test_unsupported_options_are_refused(saved, tmp_path, change, expected):
    bad = _copy(saved, tmp_path / "bad", config=change)
    assert expected in _one_line_error(bad)


def test_missing_files(tmp_path, saved):
    assert "config.json" in _one_line_error(tmp_path)
    (tmp_path / "config.json").write_text((saved / "config.json").read_text())
    assert "model.safetensors" in _one_line_error(tmp_path)
    (tmp_path / "config.json").write_text("{ not json")
    assert "invalid JSON" in _one_line_error(tmp_path)


def test_save_refuses_parameters_without_hf_name(tmp_path):
    model = Transformer(ModelConfig.from_preset("pico", 61), rngs=nnx.Rngs(0))
    model.layers.attn.q_proj.extra = nnx.Param(nnx.initializers.zeros(None, (2,)))
    with pytest.raises(ModelLoadError, match="merge_lora"):
        save_hf(model, tmp_path)


def test_config_errors_are_model_config_errors():
    with pytest.raises(ModelConfigError, match="multiple of n_kv_heads"):
        ModelConfig.from_preset("pico", 61, n_kv_heads=3)
    with pytest.raises(ModelConfigError, match="unknown model preset 'huge'"):
        ModelConfig.from_preset("huge", 61)

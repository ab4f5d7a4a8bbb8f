"""Logit parity with transformers' own implementation, both directions (float32)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.models.hf_tiny import CASES, hf_logits, make_hf_model, random_tokens, save_hf_model
from tunix_dsl.models.hf import load_hf, save_hf

TOL = 1e-4
TOKENS = random_tokens(2, 48)  # longer than the llama3 rope's original 32 positions


@pytest.fixture(scope="module", params=sorted(CASES))
def checkpoint(request, tmp_path_factory):
    """(case, transformers model, its save_pretrained directory)"""
    hf_model = make_hf_model(request.param)
    directory = save_hf_model(hf_model, tmp_path_factory.mktemp(request.param))
    return request.param, hf_model, directory


def test_load_hf_logits_match_transformers(checkpoint):
    case, hf_model, directory = checkpoint
    model = load_hf(directory)
    ours = np.asarray(model(TOKENS))
    ref = hf_logits(hf_model, TOKENS)
    assert np.abs(ref).max() > 1.0, "weights too small for a meaningful comparison"
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)
    assert model.cfg.family == {"llama3": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}[
        case.split("-")[0]]
    assert model.cfg.tie_embeddings == case.endswith("-tied")


def test_save_hf_loads_in_transformers(checkpoint, tmp_path):
    import transformers

    _, _, directory = checkpoint
    model = load_hf(directory)
    out = save_hf(model, tmp_path / "export")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    np.testing.assert_allclose(hf_logits(reloaded.eval(), TOKENS), np.asarray(model(TOKENS)),
                               atol=TOL, rtol=0)


def test_old_config_format_gives_same_model(tmp_path):
    """Top-level rope_theta / rope_scaling (most published checkpoints) and transformers 5's
    rope_parameters describe the same model."""
    hf_model = make_hf_model("llama3-untied")
    new = load_hf(save_hf_model(hf_model, tmp_path / "new"))
    old_dir = save_hf_model(hf_model, tmp_path / "old", old_config_format=True)
    assert "rope_parameters" not in json.loads((old_dir / "config.json").read_text())
    old = load_hf(old_dir)
    assert old.cfg == new.cfg
    assert old.cfg.rope_scaling["rope_type"] == "llama3"
    np.testing.assert_allclose(np.asarray(old(TOKENS)), hf_logits(hf_model, TOKENS), atol=TOL,
                               rtol=0)


def test_sharded_checkpoint_and_export(tmp_path):
    """model.safetensors.index.json on both sides: transformers' sharded save is read, and our
    sharded export (tiny max_shard_bytes) is read back by transformers."""
    import transformers

    hf_model = make_hf_model("qwen3-untied")
    hf_model.save_pretrained(tmp_path / "hf", max_shard_size="50KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    model = load_hf(tmp_path / "hf")
    np.testing.assert_allclose(np.asarray(model(TOKENS)), hf_logits(hf_model, TOKENS), atol=TOL,
                               rtol=0)
    out = save_hf(model, tmp_path / "ours", max_shard_bytes=40_000)
    assert len(list(out.glob("model-*.safetensors"))) > 1
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    np.testing.assert_allclose(hf_logits(reloaded, TOKENS), np.asarray(model(TOKENS)), atol=TOL,
                               rtol=0)


def test_save_hf_writes_tokenizer_and_special_ids(tmp_path):
    from tunix_dsl.data.tokenizers import ByteTokenizer

    model = load_hf(save_hf_model(make_hf_model("qwen2-tied"), tmp_path / "hf"))
    tokenizer = ByteTokenizer()
    out = save_hf(model, tmp_path / "export", tokenizer=tokenizer)
    config = json.loads((out / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"]) == (tokenizer.bos_id, tokenizer.eos_id)
    assert (out / "tokenizer.json").is_file()


def test_load_hf_places_parameters_with_given_shardings(tmp_path):
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((1,), ("tensor",))
    seen: dict[str, tuple] = {}

    def shardings(path, shape, axes):
        seen[path] = axes
        return NamedSharding(mesh, PartitionSpec(*["tensor" if a == "heads" else None
                                                  for a in axes]))

    hf_model = make_hf_model("llama3-untied")
    model = load_hf(save_hf_model(hf_model, tmp_path / "hf"), shardings=shardings)
    assert seen["layers.attn.q_proj.kernel"] == ("layers", "embed", "heads")  # stacked blocks
    assert seen["lm_head.kernel"] == ("embed", "vocab")
    q = model.layers.attn.q_proj.kernel.get_value()
    assert q.sharding.spec == PartitionSpec(None, None, "tensor")
    np.testing.assert_allclose(np.asarray(model(TOKENS)), hf_logits(hf_model, TOKENS), atol=TOL,
                               rtol=0)


def test_bfloat16_checkpoint(tmp_path):
    """A bf16 checkpoint loads as float32 (exactly the rounded weights) or as bfloat16; bf16
    compute keeps float32 parameters unless bf16 storage is asked for."""
    import copy

    import jax.numpy as jnp
    import torch

    hf_model = make_hf_model("qwen2-tied")
    with torch.no_grad():  # the float32 reference holds exactly the bf16-rounded weights
        for p in hf_model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    # (the copy is cast, not the reference: .to() would also round RoPE's inv_freq buffer)
    directory = save_hf_model(copy.deepcopy(hf_model).to(torch.bfloat16), tmp_path / "bf16")
    model = load_hf(directory)
    assert model.embed.embedding.get_value().dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(model(TOKENS)), hf_logits(hf_model, TOKENS), atol=TOL,
                               rtol=0)
    mixed = load_hf(directory, dtype="bfloat16")
    assert mixed.blocks()[0].attn.q_proj.bias.get_value().dtype == jnp.float32
    assert mixed(TOKENS).dtype == jnp.bfloat16
    model16 = load_hf(directory, dtype="bfloat16", param_dtype="bfloat16")
    assert model16.blocks()[0].attn.q_proj.bias.get_value().dtype == jnp.bfloat16


SHARDED_LOAD_SCRIPT = """
import sys
import numpy as np, jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.models import Transformer, load_hf, save_hf

assert jax.device_count() == 4
cfg = ModelConfig.from_preset("pico", 62, family="qwen2", qkv_bias=True, tie_embeddings=False)
model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(3)))
rng = np.random.default_rng(0)  # numpy values: no jax compiles in this short-lived process
for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    var.set_value(rng.standard_normal(var.get_value().shape).astype(np.float32))
save_hf(model, sys.argv[1])
mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("fsdp", "tensor"))
rules = {"embed": "fsdp", "heads": "tensor", "kv_heads": "tensor", "mlp": "tensor",
         "vocab": "tensor"}
spec = lambda path, shape, axes: NamedSharding(mesh, PartitionSpec(*[rules.get(a) for a in axes]))
loaded = load_hf(sys.argv[1], shardings=spec)
flat = lambda m: {p: v.get_value() for p, v in nnx.to_flat_state(nnx.state(m, nnx.Param))}
want, got = flat(model), flat(loaded)
for path, value in got.items():
    assert len(value.addressable_shards) == 4 and value.sharding.spec != PartitionSpec(), path
    shard = value.addressable_shards[-1]
    assert shard.data.shape != value.shape or value.ndim == 1, path  # really split
    np.testing.assert_array_equal(np.asarray(value), np.asarray(want[path]), err_msg=str(path))
print("ok")
"""


def test_load_hf_reads_each_shard_on_four_devices(tmp_path):
    """Per-device slices (transposed kernels included) land where the shardings say, with the
    checkpoint's values: run in a subprocess with 4 forced host devices."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SHARDED_LOAD_SCRIPT, str(tmp_path / "ckpt")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")

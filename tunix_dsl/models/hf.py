"""Hugging Face checkpoints: `load_hf(dir)` and `save_hf(model, dir)`.

Loading never holds the whole model on the host: the model is built
abstractly (`nnx.eval_shape`, no weights allocated), and each parameter is
read from the memory-mapped safetensors file(s) with `safe_open(...,
framework="numpy")`. With `shardings`, each device's shard is sliced out of
the mapped file by `jax.make_array_from_callback`, so a host reads only what
its devices hold. Names and the (absent) RoPE permutation: see `hf_names`.
Stacked blocks (`layer_stack`) read layer `i`'s tensor into slice `[i]` of the
stacked array and write slice `[i]` back as layer `i`'s tensor.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from tunix_dsl.models.config import ModelConfig, ModelConfigError
from tunix_dsl.models.hf_names import TensorName, is_ignorable, tensor_names
from tunix_dsl.models.layer_stack import layer_paths
from tunix_dsl.models.transformer import Transformer

# (our parameter path, its shape, its logical axes) -> where the parameter lives.
ShardingFn = Callable[[str, tuple[int, ...], tuple[str | None, ...] | None], jax.sharding.Sharding]

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class ModelLoadError(ModelConfigError):
    """A checkpoint directory that cannot be loaded or written; one line naming what and where."""


# ----------------------------------------------------------------------------- load
def read_hf_config(directory: str | Path, **overrides: Any) -> ModelConfig:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{directory}: no config.json (is this a Hugging Face model directory?)")
    try:
        hf = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    try:
        return ModelConfig.from_hf_config(hf, **overrides)
    except KeyError as e:
        raise ModelLoadError(f"{path}: missing field {e.args[0]!r}") from None
    except ModelConfigError as e:
        raise ModelLoadError(f"{path}: {e}") from None


def _tensor_files(directory: Path) -> dict[str, Path]:
    """HF tensor name -> the safetensors file holding it (single or sharded checkpoint)."""
    index = directory / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        return {name: directory / file for name, file in weight_map.items()}
    single = directory / SINGLE_FILE
    if not single.is_file():
        raise ModelLoadError(
            f"{directory}: no {SINGLE_FILE} or {INDEX_FILE} (only safetensors checkpoints load)")
    with safe_open(single, framework="numpy") as f:
        return {name: single for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)


def load_hf(
    directory: str | Path,
    *,
    dtype: str | None = None,
    shardings: ShardingFn | None = None,
    remat: bool | str = False,
    param_dtype: str | None = None,
    scan_layers: bool = True,
) -> Transformer:
    """A `Transformer` with the weights of a HF Llama / Qwen2 / Qwen3 checkpoint.

    dtype: compute dtype ("float32" default, "bfloat16").
    param_dtype: parameter (storage) dtype, default float32; checkpoint tensors are cast.
    shardings: `fn(path, shape, logical_axes) -> jax.sharding.Sharding` placing each parameter;
    without it parameters go to the default device.
    scan_layers: store the blocks stacked (`layer_stack`), or one by one.
    """
    directory = Path(directory)
    cfg = read_hf_config(directory, dtype=dtype or "float32", remat=remat,
                         param_dtype=param_dtype or "float32", scan_layers=scan_layers)
    files = _tensor_files(directory)
    expected = tensor_names(cfg)
    missing = [t.hf for t in expected if t.hf not in files]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelLoadError(f"{directory}: checkpoint has no tensor {missing[0]!r}{more}")
    known = {t.hf for t in expected}
    unexpected = sorted(n for n in files if n not in known and not is_ignorable(n, cfg))
    if unexpected:
        raise ModelLoadError(
            f"{directory}: checkpoint tensor {unexpected[0]!r} has no place in a {cfg.family} "
            f"model built from config.json (config and weights disagree)")

    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    by_name = {t.ours: t for t in expected}
    with ExitStack() as stack:
        handles = {p: stack.enter_context(safe_open(p, framework="numpy"))
                   for p in sorted(set(files[t.hf] for t in expected))}
        order = {t.ours: n for n, t in enumerate(expected)}  # checkpoint order, for errors
        stored_params = sorted(_stored_params(model).items(), key=lambda item: order[
            layer_paths(tuple(item[0].split(".")), item[1])[0][0]])
        for stored, var in stored_params:
            target = var.get_value()  # ShapeDtypeStruct
            axes = var.get_metadata().get("out_sharding")
            sharding = shardings(stored, tuple(target.shape), axes) if shardings else None
            logical = layer_paths(tuple(stored.split(".")), var)
            stacked = logical[0][1] is not None
            readers = [_reader(handles[files[by_name[ours].hf]], by_name[ours], target, stacked,
                               directory) for ours, _ in logical]
            var.set_value(_read_param(readers, stacked, target, sharding))
    return model


def _stored_params(model: Transformer) -> dict[str, nnx.Variable]:
    """Stored dotted path -> parameter (`layers.attn.q_proj.kernel` when stacked)."""
    return {".".join(map(str, path)): var
            for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


Reader = Callable[[tuple[slice, ...]], np.ndarray]


def _reader(handle: Any, name: TensorName, target: jax.ShapeDtypeStruct, stacked: bool,
            directory: Path) -> Reader:
    """`read(index)`: the piece `index` of one checkpoint tensor, in our layout and dtype
    (one layer of a stacked target: `index` then addresses `target.shape[1:]`)."""
    tensor = handle.get_slice(name.hf)
    hf_shape = tuple(tensor.get_shape())
    shape = tuple(target.shape[1:] if stacked else target.shape)
    want = tuple(reversed(shape)) if name.transpose else shape
    if hf_shape != want:
        raise ModelLoadError(
            f"{directory}: tensor {name.hf!r} has shape {list(hf_shape)}, config.json implies "
            f"{list(want)}")

    def read(index: tuple[slice, ...]) -> np.ndarray:
        # `index` addresses our (in, out) layout; HF stores (out, in) for transposed kernels.
        piece = tensor[tuple(reversed(index))].T if name.transpose else tensor[index]
        return np.asarray(piece).astype(target.dtype, copy=False)

    return read


def _read_param(readers: list[Reader], stacked: bool, target: jax.ShapeDtypeStruct,
                sharding: jax.sharding.Sharding | None) -> jax.Array:
    """One parameter from its tensor's reader, or a stacked one from one reader per layer
    (a shard reads only its own layers)."""
    def read(index: tuple[slice, ...]) -> np.ndarray:
        if not stacked:
            return readers[0](index)
        layers = range(*index[0].indices(len(readers)))
        return np.stack([readers[i](index[1:]) for i in layers])

    full = tuple(slice(None) for _ in target.shape)
    if sharding is None:
        return jnp.asarray(read(full))
    return jax.make_array_from_callback(tuple(target.shape), sharding,
                                        lambda index: read(_normalize(index, target.shape)))


def _normalize(index: tuple[slice, ...] | None, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Index tuples from jax may be shorter than the rank (or None: the whole array); pad
    them with full slices."""
    given = tuple(index or ())
    return given + tuple(slice(None) for _ in range(len(shape) - len(given)))


# ----------------------------------------------------------------------------- save
def save_hf(model: Transformer, directory: str | Path, tokenizer: Any = None,
            max_shard_bytes: int = 2 * 1024**3, dtype: str | None = None) -> Path:
    """Write config.json + safetensors (+ tokenizer files) that
    `transformers.AutoModelForCausalLM.from_pretrained(directory)` loads.

    dtype: the dtype of the written tensors ("float32" or "bfloat16"), also named by
    `torch_dtype` in config.json; default: the parameters' own (storage) dtype, so a
    stage's output reloads bit-identically.

    LoRA adapters must be merged first (`merge_lora`). Tensors are gathered one at a time and
    written in files of at most `max_shard_bytes`, with an index file when there are several.
    """
    cfg: ModelConfig = model.cfg
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # logical (per-layer) path -> (stored array, layer index): a stacked parameter's slice [i]
    # is layer i's tensor, sliced only when it is written (one copy at a time)
    params = {ours: (var.get_value(), i) for stored, var in _stored_params(model).items()
              for ours, i in layer_paths(tuple(stored.split(".")), var)}
    names = tensor_names(cfg)
    extra = sorted(set(params) - {t.ours for t in names})
    if extra:
        raise ModelLoadError(
            f"save_hf: parameter {extra[0]!r} has no Hugging Face name; merge LoRA adapters "
            f"(merge_lora) before exporting")

    hf_config = cfg.replace(param_dtype=dtype or cfg.param_dtype).to_hf_config()
    target = np.dtype(jnp.dtype(hf_config["torch_dtype"]))
    if tokenizer is not None:
        # Every id that ends a tnx generation ends a transformers `generate` too.
        stops = list(getattr(tokenizer, "stop_ids", ())) or [tokenizer.eos_id]
        special = {"bos_token_id": tokenizer.bos_id,
                   "eos_token_id": stops[0] if len(stops) == 1 else stops,
                   "pad_token_id": tokenizer.pad_id}
        hf_config.update(special)
        (directory / "generation_config.json").write_text(json.dumps(
            {**special, "do_sample": False}, indent=2) + "\n")
        if hasattr(tokenizer, "save"):
            tokenizer.save(directory)
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")

    shards = list(_shard_groups(names, params, max_shard_bytes, target.itemsize))
    weight_map: dict[str, str] = {}
    for i, group in enumerate(shards):
        file = SINGLE_FILE if len(shards) == 1 else \
            f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {t.hf: _to_hf_array(params[t.ours], t, target) for t in group}
        save_file(tensors, directory / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file))
    if len(shards) > 1:
        total = sum(int(np.prod(_shape(*v))) * target.itemsize for v in params.values())
        (directory / INDEX_FILE).write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    return directory


def _shape(value: jax.Array, layer: int | None) -> tuple[int, ...]:
    return tuple(value.shape if layer is None else value.shape[1:])


def _to_hf_array(stored: tuple[jax.Array, int | None], name: TensorName,
                 dtype: np.dtype) -> np.ndarray:
    value = stored[0] if stored[1] is None else stored[0][stored[1]]
    host = np.asarray(jax.device_get(value.astype(dtype)))
    return np.ascontiguousarray(host.T if name.transpose else host)


def _shard_groups(names: list[TensorName], params: dict[str, tuple[jax.Array, int | None]],
                  max_bytes: int, itemsize: int) -> Iterator[list[TensorName]]:
    group: list[TensorName] = []
    size = 0
    for t in names:
        nbytes = int(np.prod(_shape(*params[t.ours]))) * itemsize
        if group and size + nbytes > max_bytes:
            yield group
            group, size = [], 0
        group.append(t)
        size += nbytes
    if group:
        yield group

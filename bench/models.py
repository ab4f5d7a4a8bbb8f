"""Model benchmarks (not a test): our models vs Tunix's on the same sizes, in one process.

    /tmp/tunix-venv/bin/python bench/models.py [--only fwd-bwd,decode,lora] [--rounds 5]

Sections (each prints its own table; timings are interleaved round by round so
machine noise hits every variant alike; the figure is the median per step):

- fwd-bwd: loss + gradients w.r.t. all parameters, ours vs `tunix.models.llama3`.
- decode:  tokens/s of our `Sampler` vs Tunix's `Sampler` (greedy, same prompts,
           prefill included, no early stop).
- lora:    a full training step (loss, grads, AdamW) vs a LoRA and a QLoRA (NF4)
           step, ours and Tunix's (Tunix adapts models with qwix).

Sizes (issue 3): vocab 1024, 4 layers, d_model 256, 4 heads (head_dim 64, no
GQA), MLP 1024, seq 128, batch 8, float32, untied embeddings. Tunix (PyPI
`google-tunix`) lives in its own venv so the project's jax/flax stay put;
without it the Tunix columns say why they are missing.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from functools import partial

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _steps_common import table
from flax import nnx

from tunix_dsl.models.config import ModelConfig
from tunix_dsl.models.lora import LoraSpec, apply_lora
from tunix_dsl.models.sampler import Sampler
from tunix_dsl.models.transformer import Transformer

VOCAB, LAYERS, D_MODEL, HEADS, HEAD_DIM, MLP, SEQ, BATCH = 1024, 4, 256, 4, 64, 1024, 128, 8
LORA_RANK, LORA_ALPHA = 8, 16.0
LORA_TARGETS = r".*(q|k|v|o|gate|up|down)_proj"
PROMPT_LEN, NEW_TOKENS = 16, 64

warnings.simplefilter("ignore", DeprecationWarning)


# ----------------------------------------------------------------------------- models
def our_model() -> Transformer:
    cfg = ModelConfig(
        vocab_size=VOCAB, d_model=D_MODEL, n_layers=LAYERS, n_heads=HEADS, n_kv_heads=HEADS,
        head_dim=HEAD_DIM, mlp_dim=MLP, max_seq_len=SEQ, tie_embeddings=False,
    )  # fmt: skip
    return Transformer(cfg, rngs=nnx.Rngs(0))


def our_loss(model: Transformer, tokens: jax.Array) -> jax.Array:
    return -jnp.mean(model.logps(tokens[:, :-1], tokens[:, 1:]))


def tunix_import() -> tuple[object | None, str]:
    try:
        from tunix.models.llama3 import model as llama3
    except Exception as err:  # report, don't crash: our columns are still useful
        return None, f"{type(err).__name__}: {err}"
    return llama3, ""


def tunix_model(llama3) -> nnx.Module:
    cfg = llama3.ModelConfig(
        num_layers=LAYERS, vocab_size=VOCAB, embed_dim=D_MODEL, hidden_dim=MLP,
        num_heads=HEADS, head_dim=HEAD_DIM, num_kv_heads=HEADS, rope_theta=10_000,
        norm_eps=1e-6, weight_tying=False,
    )  # fmt: skip
    return llama3.Llama3(cfg, rngs=nnx.Rngs(0))


def tunix_loss(model: nnx.Module, tokens: jax.Array) -> jax.Array:
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    b, t = inputs.shape
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
    logits, _ = model(inputs, positions, None, mask)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets))


# ----------------------------------------------------------------------------- steps
def grad_step(model: nnx.Module, loss: Callable) -> Callable[[jax.Array], jax.Array]:
    """jit(loss + grads w.r.t. every Param), the model's arrays passed as arguments."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def step(params, rest, tokens):
        return jax.value_and_grad(lambda p: loss(nnx.merge(graphdef, p, rest), tokens))(params)

    return lambda tokens: step(params, rest, tokens)


def train_step(model: nnx.Module, loss: Callable, trainable) -> Callable[[jax.Array], jax.Array]:
    """jit(loss, grads w.r.t. the `trainable` variables, AdamW update), state donated."""
    graphdef, params, rest = nnx.split(model, trainable, ...)
    tx = optax.adamw(1e-4)
    state = {"params": params, "opt": tx.init(params)}

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt, rest, tokens):
        objective = lambda p: loss(nnx.merge(graphdef, p, rest), tokens)  # noqa: E731
        value, grads = jax.value_and_grad(objective)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, value

    def run(tokens):
        state["params"], state["opt"], value = step(state["params"], state["opt"], rest, tokens)
        return value

    return run


def time_interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, per_round: int
) -> dict[str, tuple[float, float]]:
    """Median (wall, process CPU) seconds per call of each fn, measured round-robin after
    one warm-up call. On a shared machine the CPU time is the steadier of the two."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(per_round):
                out = fn()
            jax.block_until_ready(out)
            wall[name].append((time.perf_counter() - start) / per_round)
            cpu[name].append((time.process_time() - start_cpu) / per_round)
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in fns}


# ----------------------------------------------------------------------------- sections
def bench_fwd_bwd(rounds: int) -> None:
    tokens = jax.random.randint(jax.random.key(0), (BATCH, SEQ + 1), 0, VOCAB)
    fns = {"ours": partial(grad_step(our_model(), our_loss), tokens)}
    llama3, why = tunix_import()
    if llama3 is not None:
        fns["tunix llama3"] = partial(grad_step(tunix_model(llama3), tunix_loss), tokens)
    t = time_interleaved(fns, rounds, per_round=2)
    print(f"## fwd+bwd (batch {BATCH}, seq {SEQ}, float32)\n")
    rows = [(name, f"{1e3 * w:.0f} ms", f"{1e3 * c:.0f} ms") for name, (w, c) in t.items()]
    if llama3 is not None:
        (w0, c0), (w1, c1) = t["ours"], t["tunix llama3"]
        rows.append(("ratio ours / tunix", f"{w0 / w1:.2f}x", f"{c0 / c1:.2f}x"))
    else:
        rows.append(("tunix llama3", f"unavailable: {why}", ""))
    table(rows, ("model", "wall per step (median)", "CPU per step (median)"))


class _IdTokenizer:
    """Tunix's Sampler takes strings: here a string is space-separated token ids."""

    def encode(self, text: str, **_) -> list[int]:
        return [int(t) for t in text.split()]

    def decode(self, ids, **_) -> str:
        return " ".join(str(int(i)) for i in ids)

    def bos_id(self) -> int:
        return 0  # falsy: Tunix then adds no BOS

    def eos_id(self) -> int:
        return VOCAB  # never produced: every row decodes all steps

    def pad_id(self) -> int:
        return 0


def bench_decode(rounds: int) -> None:
    rng = np.random.default_rng(0)
    prompts = rng.integers(1, VOCAB, (BATCH, PROMPT_LEN)).tolist()  # 0 is padding
    ours = Sampler(our_model(), pad_id=0, stop_ids=[])
    fns = {
        "ours": lambda: ours(prompts, max_new_tokens=NEW_TOKENS, temperature=0.0).tokens,
    }
    llama3, why = tunix_import()
    if llama3 is not None:
        from tunix.generate.sampler import CacheConfig
        from tunix.generate.sampler import Sampler as TunixSampler

        cache = CacheConfig(PROMPT_LEN + NEW_TOKENS, LAYERS, HEADS, HEAD_DIM)
        theirs = TunixSampler(tunix_model(llama3), _IdTokenizer(), cache)
        strings = [" ".join(map(str, p)) for p in prompts]
        fns["tunix Sampler"] = lambda: theirs(
            strings, max_generation_steps=NEW_TOKENS, max_prompt_length=PROMPT_LEN,
            eos_tokens=[VOCAB], temperature=0.0,
        ).tokens  # fmt: skip
    t = time_interleaved(fns, rounds, per_round=1)
    print(f"## decode (batch {BATCH}, prompt {PROMPT_LEN}, {NEW_TOKENS} new tokens, greedy)\n")
    tokens = BATCH * NEW_TOKENS
    rows = [(n, f"{tokens / w:.0f} tok/s", f"{tokens / c:.0f} tok/s") for n, (w, c) in t.items()]
    if llama3 is not None:
        (w0, c0), (w1, c1) = t["ours"], t["tunix Sampler"]
        rows.append(("ratio ours / tunix (tok/s)", f"{w1 / w0:.2f}x", f"{c1 / c0:.2f}x"))
    else:
        rows.append(("tunix Sampler", f"unavailable: {why}", ""))
    table(rows, ("sampler", "tokens per wall second", "tokens per CPU second"))


def bench_lora(rounds: int) -> None:
    tokens = jax.random.randint(jax.random.key(0), (BATCH, SEQ + 1), 0, VOCAB)

    def adapted(quantize: str | None) -> Transformer:
        spec = LoraSpec(LORA_RANK, LORA_ALPHA, targets=[LORA_TARGETS], quantize=quantize)
        return apply_lora(our_model(), spec, nnx.Rngs(1))

    fns = {
        "ours full": train_step(our_model(), our_loss, nnx.Param),
        "ours LoRA": train_step(adapted(None), our_loss, nnx.LoRAParam),
        "ours QLoRA nf4": train_step(adapted("nf4"), our_loss, nnx.LoRAParam),
    }
    llama3, why = tunix_import()
    if llama3 is not None:
        import qwix

        def qwix_adapted(**quant) -> nnx.Module:
            provider = qwix.LoraProvider(
                module_path=r".*", rank=LORA_RANK, alpha=LORA_ALPHA, **quant
            )
            model = tunix_model(llama3)
            return qwix.apply_lora_to_model(model, provider, rngs=nnx.Rngs(1),
                                            **model.get_model_input())  # fmt: skip

        fns["tunix full"] = train_step(tunix_model(llama3), tunix_loss, nnx.Param)
        fns["tunix+qwix LoRA"] = train_step(qwix_adapted(), tunix_loss, nnx.LoRAParam)
        fns["tunix+qwix QLoRA nf4"] = train_step(
            qwix_adapted(weight_qtype="nf4", tile_size=64), tunix_loss, nnx.LoRAParam
        )
    t = time_interleaved({n: partial(f, tokens) for n, f in fns.items()}, rounds, per_round=1)
    print(f"## LoRA (rank {LORA_RANK}, all projections; step = loss + grads + AdamW)\n")
    rows = []
    for n, (w, c) in t.items():
        w_full, c_full = t["tunix full" if n.startswith("tunix") else "ours full"]
        rows.append((n, f"{1e3 * w:.0f} ms", f"{1e3 * c:.0f} ms", f"{c / c_full:.2f}x"))
    if llama3 is None:
        rows.append(("tunix", f"unavailable: {why}", "", ""))
    table(rows, ("step", "wall (median)", "CPU (median)", "CPU vs same model's full step"))


SECTIONS = {"fwd-bwd": bench_fwd_bwd, "decode": bench_decode, "lora": bench_lora}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    names = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {sorted(SECTIONS)}")
    print(f"jax {jax.__version__}, flax {flax.__version__}, devices {jax.devices()}\n")
    for name in names:
        SECTIONS[name](args.rounds)


if __name__ == "__main__":
    main()

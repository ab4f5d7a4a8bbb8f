"""Batched generation with a fixed-size KV cache: one prefill program, one decode program.

    prompts [B,P] (left-padded) --prefill--> cache, last logits   (B rows, once)
        --repeat each row G times--> [B*G] rows                  (G = num_samples)
        --decode: lax.while_loop, one token per step--> tokens [B*G, N]

Sampling: greedy (temperature 0) or softmax(logits / temperature), optionally
restricted to the top-k logits and/or the smallest set of tokens whose
probability reaches top-p. A row stops after it emits a stop id (the stop
token is kept); the loop ends when every row stopped or N tokens were drawn.

Returned log-probs are the model's, at temperature 1 and before top-k/top-p
(log softmax(logits)[token]): what RL ratios and KL terms need, and what a full
forward over the same tokens gives. Positions after a row stopped hold
`pad_id` and log-prob 0.

`prefill`, `decode` and `generate` are pure functions of (model, arrays, key):
the compiler calls them inside its own jitted rollout program. `Sampler`
wraps them as two jitted programs and draws a fresh key per call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tunix_dsl.models.kv_cache import KVCache, init_cache
from tunix_dsl.models.transformer import ModelOutput, Transformer


class SamplingError(ValueError):
    """Sampling settings or prompts that cannot be used; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int
    temperature: float = 1.0  # 0: greedy
    top_k: int | None = None
    top_p: float | None = None
    num_samples: int = 1  # completions per prompt, sharing the prompt's prefill
    stop_ids: tuple[int, ...] = ()
    pad_id: int = 0
    # Token sequences that also end a row once it has just emitted one (e.g. the ids of
    # `</tool_call>`): a multi-token stop, checked on the row's own tokens of this call.
    stop_sequences: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise SamplingError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise SamplingError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise SamplingError(f"top_k must be >= 1 or unset, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise SamplingError(f"top_p must be in (0, 1] or unset, got {self.top_p}")
        if self.num_samples < 1:
            raise SamplingError(f"num_samples must be >= 1, got {self.num_samples}")
        object.__setattr__(self, "stop_ids", tuple(int(i) for i in self.stop_ids))
        sequences = tuple(tuple(int(i) for i in seq) for seq in self.stop_sequences)
        if any(not seq for seq in sequences):
            raise SamplingError("a stop sequence needs at least one token")
        object.__setattr__(self, "stop_sequences", sequences)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SampleOutput:
    tokens: jax.Array  # [B*G, N] int32; pad_id after a row stopped
    logps: jax.Array  # [B*G, N] float32: log p_model(token) at temperature 1; 0 after stop
    lengths: jax.Array  # [B*G] int32: generated tokens per row, the stop token included

    @property
    def mask(self) -> jax.Array:
        """[B*G, N] bool: True on generated (real) tokens."""
        return jnp.arange(self.tokens.shape[1])[None, :] < self.lengths[:, None]


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> (tokens [B,P] int32, mask [B,P] bool), real tokens at the right end.
    `length` (default: the longest prompt) lets callers bucket P to limit recompiles."""
    longest = max((len(p) for p in prompts), default=0)
    if not prompts or longest == 0:
        raise SamplingError("every batch needs at least one non-empty prompt")
    length = longest if length is None else length
    if longest > length:
        raise SamplingError(f"a prompt has {longest} tokens, more than the length {length}")
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), bool)
    for row, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise SamplingError(f"prompt {row} is empty; give every prompt at least a BOS token")
        tokens[row, length - len(prompt) :] = prompt
        mask[row, length - len(prompt) :] = True
    return tokens, mask


def _inference_view(model: Transformer) -> Transformer:
    """The same weights with dropout off (e.g. LoRA dropout), without touching `model`."""
    return nnx.view(model, only=nnx.Dropout, deterministic=True, raise_if_not_found=False)


def prefill(
    model: Transformer,
    tokens: jax.Array,  # [B,P] left-padded
    mask: jax.Array,  # [B,P] True = real
    max_new_tokens: int,
    num_samples: int = 1,
) -> tuple[jax.Array, KVCache]:
    """Run the prompts once; return last-position logits and the cache, both repeated
    `num_samples` times per row ([B*G, V], cache of B*G rows with room for N tokens)."""
    batch, length = tokens.shape
    cache = init_cache(model.cfg, batch=batch, max_len=length + max_new_tokens)
    out = _inference_view(model)(tokens, attention_mask=mask, cache=cache)
    assert isinstance(out, ModelOutput) and out.cache is not None  # a cache call returns both
    logits = out.logits[:, -1].astype(jnp.float32)  # left padding: the last slot is real
    if num_samples == 1:
        return logits, out.cache
    return jnp.repeat(logits, num_samples, axis=0), out.cache.repeat(num_samples)


def sample_token(
    logits: jax.Array, key: jax.Array, config: SamplingConfig
) -> tuple[jax.Array, jax.Array]:
    """Draw one token per row from logits [R,V]; return (tokens [R], log p_model [R])."""
    logits = logits.astype(jnp.float32)
    if config.temperature == 0:
        token = jnp.argmax(logits, axis=-1)
    else:
        scaled = logits / config.temperature
        if config.top_k is not None and config.top_k < logits.shape[-1]:
            kth = jax.lax.top_k(scaled, config.top_k)[0][:, -1:]
            scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
        if config.top_p is not None and config.top_p < 1:
            ordered = jnp.sort(scaled, axis=-1)[:, ::-1]
            probs = jax.nn.softmax(ordered, axis=-1)
            # keep a token if the mass strictly before it is below top_p (the first is kept)
            kept = (jnp.cumsum(probs, axis=-1) - probs) < config.top_p
            cutoff = jnp.min(jnp.where(kept, ordered, jnp.inf), axis=-1, keepdims=True)
            scaled = jnp.where(scaled < cutoff, -jnp.inf, scaled)
        token = jax.random.categorical(key, scaled, axis=-1)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), token[:, None], axis=-1)
    return token.astype(jnp.int32), logp[:, 0]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeEnd:
    """Where a decode loop stopped, for a caller that continues the same sequences.

    The last sampled token of each row is not in the cache yet (a token is written when
    it is fed back); `real` says which rows drew a real token at the last step."""

    token: jax.Array  # [R] int32
    real: jax.Array  # [R] bool
    cache: KVCache


def _ends_with(tokens: jax.Array, step: jax.Array, sequence: tuple[int, ...]) -> jax.Array:
    """[R] bool: the row's tokens [step - L + 1, step] equal `sequence` (L = its length)."""
    length = len(sequence)
    start = jnp.maximum(step - length + 1, 0)
    window = jax.lax.dynamic_slice_in_dim(tokens, start, length, axis=1)
    return (step + 1 >= length) & jnp.all(window == jnp.asarray(sequence, jnp.int32), axis=1)


def decode(
    model: Transformer,
    logits: jax.Array,  # [R,V] logits for the first new token (from `prefill`)
    cache: KVCache,
    key: jax.Array,
    config: SamplingConfig,
) -> SampleOutput:
    """The decode loop (`lax.while_loop`): sample, record, feed the token back."""
    return decode_turn(model, logits, cache, key, config)[0]


def decode_turn(
    model: Transformer,
    logits: jax.Array,  # [R,V]
    cache: KVCache,
    key: jax.Array,
    config: SamplingConfig,
    active: jax.Array | None = None,  # [R] bool: rows that generate (default: all)
) -> tuple[SampleOutput, DecodeEnd]:
    """`decode`, plus where it ended, so a multi-turn rollout can append to the same cache.

    Inactive rows draw nothing (length 0, pad tokens); their slots stay invalid."""
    model = _inference_view(model)
    rows, steps = logits.shape[0], config.max_new_tokens
    stop_ids = jnp.asarray(config.stop_ids or (-1,), jnp.int32)
    columns = max(steps, *(len(s) for s in config.stop_sequences)) if config.stop_sequences else steps

    def pick(step, logits, done, tokens, logps, lengths):
        token, logp = sample_token(logits, jax.random.fold_in(key, step), config)
        real = ~done  # rows that had not stopped draw a real token this step
        token = jnp.where(real, token, config.pad_id)
        tokens = tokens.at[:, step].set(token)
        logps = logps.at[:, step].set(jnp.where(real, logp, 0.0))
        stop = jnp.isin(token, stop_ids)
        for sequence in config.stop_sequences:
            stop = stop | _ends_with(tokens, step, sequence)
        done = done | (real & stop)
        return token, real, done, tokens, logps, lengths + real

    # (room for a stop sequence longer than the turn, so the window slice never clamps)
    tokens = jnp.full((rows, columns), config.pad_id, jnp.int32)
    logps = jnp.zeros((rows, columns), jnp.float32)
    lengths = jnp.zeros(rows, jnp.int32)
    done = jnp.zeros(rows, bool) if active is None else ~active
    first = pick(0, logits, done, tokens, logps, lengths)
    state = (jnp.zeros((), jnp.int32), *first, cache)

    def keep_going(state) -> jax.Array:
        step, _, _, done, *_ = state
        return (step + 1 < steps) & ~jnp.all(done)

    def step_fn(state):
        step, token, real, done, tokens, logps, lengths, cache = state
        out = model(token[:, None], attention_mask=real[:, None], cache=cache)
        assert isinstance(out, ModelOutput)
        picked = pick(step + 1, out.logits[:, 0], done, tokens, logps, lengths)
        return (step + 1, *picked, out.cache)

    _, token, real, _, tokens, logps, lengths, cache = jax.lax.while_loop(keep_going, step_fn, state)
    return SampleOutput(tokens[:, :steps], logps[:, :steps], lengths), DecodeEnd(token, real, cache)


def generate(
    model: Transformer,
    tokens: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    config: SamplingConfig,
) -> SampleOutput:
    """prefill + decode as one function, for a caller that fuses rollout into one program."""
    logits, cache = prefill(model, tokens, mask, config.max_new_tokens, config.num_samples)
    return decode(model, logits, cache, key, config)


# Module-level, so every Sampler shares the compiled programs (keyed on the model's
# graph definition, the shapes and the static settings). The model goes in as
# (graphdef, state) split once per call: nnx.jit would re-walk the module graph
# on every call of each program, which costs more than a whole decode at small sizes.
@partial(jax.jit, static_argnums=(0, 4, 5))
def _prefill_jit(graphdef, state, tokens, mask, max_new_tokens, num_samples):
    return prefill(nnx.merge(graphdef, state), tokens, mask, max_new_tokens, num_samples)


@partial(jax.jit, static_argnums=(0, 5))
def _decode_jit(graphdef, state, logits, cache, key, config):
    return decode(nnx.merge(graphdef, state), logits, cache, key, config)


class Sampler:
    """Generation for a model: two jitted programs (prefill, decode), a fresh key per call.

    Keys: call n uses fold_in(key(seed), n), so a new Sampler with the same seed
    replays the same outputs and consecutive calls never reuse a key; pass
    `key=` to choose one explicitly.
    """

    def __init__(self, model: Transformer, *, pad_id: int, stop_ids: Sequence[int], seed: int = 0):
        self.model = model
        self.pad_id = pad_id
        self.stop_ids = tuple(stop_ids)
        self._base_key = jax.random.key(seed)
        self._calls = 0

    def __call__(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        num_samples: int = 1,
        prompt_length: int | None = None,
        key: jax.Array | None = None,
    ) -> SampleOutput:
        config = SamplingConfig(
            max_new_tokens, temperature, top_k, top_p, num_samples, self.stop_ids, self.pad_id
        )
        tokens, mask = left_pad(prompts, self.pad_id, prompt_length)
        if key is None:
            key = jax.random.fold_in(self._base_key, self._calls)
            self._calls += 1
        graphdef, state = nnx.split(self.model)  # the model's current weights, every call
        logits, cache = _prefill_jit(graphdef, state, tokens, mask, max_new_tokens, num_samples)
        return _decode_jit(graphdef, state, logits, cache, key, config)

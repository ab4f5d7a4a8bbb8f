"""Multi-turn rollout: model turns and observations in one KV cache, never re-prefilled.

    prompts ──prefill (once, shared by the G episodes of a prompt)──▶ cache
    repeat up to max_turns:
        decode a turn on the active rows (stops at eos or `</tool_call>`)    ── device
        decode the turns' text; the environment answers (tools in a pool)    ── host
        append [the turn's last token, observation] to the same cache        ── device

Only the new tokens of each turn go through the model: the history stays in the cache.
An observation is rendered through the chat template (`ObservationFraming`, jax-free in
`data/observation_framing.py` so lint can size it): the text the
template puts between an assistant message and a `tool` (or `user`) message, the
observation, and the generation prompt that follows.

The result, `Episodes`, lays each episode out as the RL programs read a completion:
after the (left-padded) prompt, the episode's tokens right-padded to
`episode_tokens = max_turns × max_new_tokens + (max_turns − 1) × max_observation_tokens`,
with `real` (every token of the episode) and `own` (the model's tokens: the only ones
trained on — observations are context, never targets).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tunix_dsl.data.observation_framing import FramingError, ObservationFraming
from tunix_dsl.data.tokenizers import Tokenizer
from tunix_dsl.models.kv_cache import KVCache
from tunix_dsl.models.sampler import (
    DecodeEnd,
    SampleOutput,
    SamplingConfig,
    _inference_view,
    decode_turn,
    prefill,
)
from tunix_dsl.models.transformer import ModelOutput
from tunix_dsl.runtime.agent_env import AgentError, PythonEnv, ToolsEnv
from tunix_dsl.runtime.tool_calls import CALL_CLOSE


@dataclass(frozen=True)
class AgentSettings:
    max_turns: int
    max_new_tokens: int
    max_observation_tokens: int

    @property
    def episode_tokens(self) -> int:
        turns = self.max_turns
        return turns * self.max_new_tokens + (turns - 1) * self.max_observation_tokens


@dataclass
class Episodes:
    """A batch of finished episodes, host-side, in the RL batch layout (R rows)."""

    tokens: np.ndarray  # [R, C] int32, right-padded with pad_id
    real: np.ndarray  # [R, C] bool: a token of the episode (model or observation)
    own: np.ndarray  # [R, C] bool: the model's own token (trained on)
    logps: np.ndarray  # [R, C] float32: behaviour log-probs on own tokens, 0 elsewhere
    turns: np.ndarray  # [R] int32: model turns taken
    turn_texts: list[list[str]]  # per row, each model turn's text
    rewards: np.ndarray  # [R] float32: the environment's own rewards (python envs), summed
    observation_cuts: int = 0  # observations cut to max_observation_tokens
    calls_ok: np.ndarray | None = None  # [R] int32: tool calls that ran without error (tools envs)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def final_texts(self) -> list[str]:
        """The last model turn of each episode: the answer rewards score."""
        return [texts[-1] if texts else "" for texts in self.turn_texts]

    @property
    def own_lengths(self) -> np.ndarray:
        return self.own.sum(axis=1).astype(np.int32)

    def batch(self, prompt_tokens: np.ndarray, prompt_mask: np.ndarray, generations: int
              ) -> dict[str, np.ndarray]:
        """The RL rollout batch: prompt rows repeated G times, then the episode. `old_logps`
        are the sampler's behaviour log-probs (temperature 1, as a full forward computes them,
        within 1e-5): an off-policy update (async, μ > 1) reads them instead of a score forward."""
        prompt_tokens = np.repeat(prompt_tokens, generations, axis=0)
        prompt_mask = np.repeat(prompt_mask, generations, axis=0)
        mask = np.concatenate([prompt_mask, self.real], axis=1)
        return {
            "tokens": np.concatenate([prompt_tokens, self.tokens], axis=1).astype(np.int32),
            "attention_mask": mask,
            "positions": np.maximum(np.cumsum(mask, axis=1, dtype=np.int32) - 1, 0),
            "completion_mask": self.own,
            "lengths": self.own_lengths,
            "old_logps": self.logps,
        }


# Jitted pieces, module-level so every rollout of a stage shares the compiled programs (and
# `agent_plan` compiles the same ones ahead for `tnx plan`).
@partial(jax.jit, static_argnums=(0, 4, 5))
def episode_prefill(graphdef, state, tokens, mask, room, num_samples):
    return prefill(nnx.merge(graphdef, state), tokens, mask, room, num_samples)


@partial(jax.jit, static_argnums=(0, 5))
def episode_turn(graphdef, state, logits, cache, key, config, active) -> tuple[SampleOutput, DecodeEnd]:
    return decode_turn(nnx.merge(graphdef, state), logits, cache, key, config, active)


@partial(jax.jit, static_argnums=(0,))
def episode_append(graphdef, state, cache: KVCache, tokens, mask) -> tuple[jax.Array, KVCache]:
    """Feed a right-padded chunk [R, W]; logits [R, V] at each row's last real token."""
    model = _inference_view(nnx.merge(graphdef, state))
    out = model(tokens, attention_mask=mask, cache=cache)
    assert isinstance(out, ModelOutput) and out.cache is not None
    last = jnp.maximum(jnp.sum(mask, axis=1) - 1, 0)
    logits = jnp.take_along_axis(out.logits, last[:, None, None], axis=1)[:, 0]
    return logits.astype(jnp.float32), out.cache


class AgentRollout:
    """Runs episodes for a policy: `rollout(policy, prompts, rows, key) -> Episodes`."""

    def __init__(self, env: ToolsEnv | PythonEnv, tokenizer: Tokenizer, settings: AgentSettings,
                 sampling: SamplingConfig):
        self.env = env
        self.tokenizer = tokenizer
        self.settings = settings
        stops = ((tuple(tokenizer.encode(CALL_CLOSE)),) if isinstance(env, ToolsEnv) else ())
        self.sampling = SamplingConfig(
            settings.max_new_tokens, sampling.temperature, sampling.top_k, sampling.top_p,
            sampling.num_samples, sampling.stop_ids, sampling.pad_id, stops)
        try:
            self.framing = ObservationFraming.of(tokenizer, env.role, env.schemas or None)
        except FramingError as err:
            raise AgentError(str(err)) from None
        self._before, self._after = self.framing.ids(tokenizer)
        budget = settings.max_observation_tokens - len(self._before) - len(self._after)
        if budget < 1:
            raise AgentError(
                f"max_observation_tokens = {settings.max_observation_tokens} leaves no room for "
                f"an observation: the chat template frames it with "
                f"{len(self._before) + len(self._after)} tokens; raise max_observation_tokens")
        self._budget = budget
        # a python environment's `reset` observation comes before the first turn
        self.opening = isinstance(env, PythonEnv)
        self.width = settings.episode_tokens + (settings.max_observation_tokens if self.opening else 0)

    def observation_ids(self, text: str) -> tuple[list[int], bool]:
        """Framed observation tokens, the observation cut to fit; (ids, whether cut)."""
        body = self.tokenizer.encode(text)
        return self._before + body[:self._budget] + self._after, len(body) > self._budget

    def rollout(self, policy: nnx.Module, prompt_tokens: np.ndarray, prompt_mask: np.ndarray,
                rows: Sequence[Mapping[str, Any]], key: jax.Array) -> Episodes:
        """`rows`: the dataset row of each episode (R = prompts × G, a prompt's G together)."""
        s, cfg = self.settings, self.sampling
        graphdef, state = nnx.split(policy)
        episodes, width = len(rows), self.width
        tokens = np.full((episodes, width), cfg.pad_id, np.int32)
        own = np.zeros((episodes, width), bool)
        real = np.zeros((episodes, width), bool)
        logps = np.zeros((episodes, width), np.float32)
        filled = np.zeros(episodes, np.int64)
        turns = np.zeros(episodes, np.int32)
        texts: list[list[str]] = [[] for _ in range(episodes)]
        rewards = np.zeros(episodes, np.float32)
        calls_ok = np.zeros(episodes, np.int32)
        cuts = 0

        def put(row: int, ids: Sequence[int] | np.ndarray, mine: bool,
                lp: np.ndarray | None = None) -> None:
            start, n = int(filled[row]), len(ids)
            tokens[row, start:start + n] = ids
            real[row, start:start + n] = True
            own[row, start:start + n] = mine
            if lp is not None:
                logps[row, start:start + n] = lp
            filled[row] += n

        pending: list[list[int] | None] = [None] * episodes
        for row, text in enumerate(self.env.start(rows)):
            if text:
                ids, cut = self.observation_ids(text)
                cuts += cut
                pending[row] = ids
                put(row, ids, False)
        # Cache room: a turn's tokens but its last are written while decoding, then a chunk
        # of [last token, observation] (1 + O) before the next turn (and before the first,
        # for an opening): P + T·(N−1) + T·(1+O) ≤ P + width.
        logits, cache = episode_prefill(graphdef, state, prompt_tokens, prompt_mask, width, cfg.num_samples)
        active = np.ones(episodes, bool)
        last_tok = np.zeros(episodes, np.int32)
        last_real = np.zeros(episodes, bool)
        for turn in range(s.max_turns):
            if any(p is not None for p in pending):
                logits, cache = self._feed(graphdef, state, cache, pending, last_tok, last_real)
            out, end = episode_turn(graphdef, state, logits, cache, jax.random.fold_in(key, turn), cfg,
                             jnp.asarray(active))
            cache = end.cache
            got, lp, lengths, last_tok, last_real = (np.asarray(a) for a in jax.device_get(
                (out.tokens, out.logps, out.lengths, end.token, end.real)))
            stepping = [int(r) for r in np.flatnonzero(active)]
            said = []
            for row in stepping:
                n = int(lengths[row])
                put(row, got[row, :n], True, lp[row, :n])
                turns[row] += 1
                texts[row].append(self.tokenizer.decode(got[row, :n].tolist()))
                said.append(texts[row][-1])
            replies = self.env.step(stepping, said)
            pending = [None] * episodes
            for row, reply in zip(stepping, replies, strict=True):
                rewards[row] += reply.reward
                calls_ok[row] += reply.calls_ok
                if reply.observation is None or turn == s.max_turns - 1:
                    active[row] = False
                    continue
                ids, cut = self.observation_ids(reply.observation)
                cuts += cut
                pending[row] = ids
                put(row, ids, False)
            if not active.any():
                break
        return Episodes(tokens, real, own, logps, turns, texts, rewards, cuts,
                        calls_ok if isinstance(self.env, ToolsEnv) else None)

    def _feed(self, graphdef: Any, state: Any, cache: KVCache, pending: Sequence[list[int] | None],
              last_tok: np.ndarray, last_real: np.ndarray) -> tuple[jax.Array, KVCache]:
        """Append each waiting row's [last unfed token, observation] to the cache."""
        chunk_width = 1 + self.settings.max_observation_tokens
        chunk = np.full((len(pending), chunk_width), self.sampling.pad_id, np.int32)
        mask = np.zeros((len(pending), chunk_width), bool)
        for row, ids in enumerate(pending):
            if ids is None:
                continue
            ids = ([int(last_tok[row])] if last_real[row] else []) + ids
            chunk[row, :len(ids)] = ids
            mask[row, :len(ids)] = True
        return episode_append(graphdef, state, cache, jnp.asarray(chunk), jnp.asarray(mask))

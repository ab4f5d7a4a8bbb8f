"""Sampler: cached decoding agrees with full forwards; stops, seeds, shared prefill, filters."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tunix_dsl.models.config import ModelConfig
from tunix_dsl.models.sampler import (
    Sampler,
    SamplingConfig,
    SamplingError,
    generate,
    left_pad,
    sample_token,
)
from tunix_dsl.models.transformer import Transformer, gather_logps

VOCAB, PAD, EOS = 259, 256, 258
PROMPTS = [[257, 10, 20, 30], [257, 40], [257, 50, 60, 70, 80, 90]]


@pytest.fixture(scope="module")
def model() -> Transformer:
    """Untied and with weights scaled up, so the next-token distributions are far from
    uniform and greedy paths do not just repeat the last token."""
    cfg = ModelConfig.from_preset("pico", VOCAB, tie_embeddings=False)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    nnx.update(model, jax.tree.map(lambda p: 4 * p, nnx.state(model, nnx.Param)))
    return model


def full_forward_logps(model: Transformer, prompts, tokens, lengths, num_samples=1):
    """Reference: log-probs of the generated tokens from one uncached forward over
    prompt + completion (left-padded, completion padding masked)."""
    rows = [p for p in prompts for _ in range(num_samples)]
    seqs = [list(p) + list(t[:n]) for p, t, n in zip(rows, tokens, lengths, strict=True)]
    width = max(len(s) for s in seqs)
    ids, mask = left_pad(seqs, PAD, width)
    logps = np.asarray(gather_logps(model(ids, attention_mask=mask)[:, :-1], ids[:, 1:]))
    return [logps[r, width - 1 - n : width - 1] for r, n in enumerate(lengths)]


def test_logps_equal_full_forward(model: Transformer) -> None:
    sampler = Sampler(model, pad_id=PAD, stop_ids=[EOS], seed=0)
    out = sampler(PROMPTS, max_new_tokens=8, temperature=0.7, top_k=50, num_samples=2)
    assert out.tokens.shape == (6, 8) and out.logps.shape == (6, 8)
    lengths = np.asarray(out.lengths).tolist()
    expected = full_forward_logps(model, PROMPTS, np.asarray(out.tokens), lengths, 2)
    for row, n in enumerate(lengths):
        np.testing.assert_allclose(out.logps[row, :n], expected[row], atol=1e-4, rtol=0)
        assert np.all(np.asarray(out.logps[row, n:]) == 0)


def test_greedy_equals_stepwise_argmax_of_full_forwards(model: Transformer) -> None:
    sampler = Sampler(model, pad_id=PAD, stop_ids=[EOS])
    out = sampler(PROMPTS, max_new_tokens=8, temperature=0.0)
    width = max(map(len, PROMPTS)) + 8
    # a full forward, right-padded to one width (causal: padding after a position cannot
    # change its logits) so that one compiled program serves every step
    last_logits = nnx.jit(lambda m, ids, n: m(ids)[0, n - 1])
    for row, prompt in enumerate(PROMPTS):
        seq = list(prompt)
        for _ in range(8):
            ids = jnp.asarray([seq + [PAD] * (width - len(seq))])
            seq.append(int(jnp.argmax(last_logits(model, ids, len(seq)))))
        assert np.asarray(out.tokens[row]).tolist() == seq[len(prompt) :]
    assert np.asarray(out.lengths).tolist() == [8, 8, 8]


def test_stop_id_ends_one_row_while_others_continue(model: Transformer) -> None:
    key = jax.random.key(7)
    free = Sampler(model, pad_id=PAD, stop_ids=[])(PROMPTS, max_new_tokens=8, key=key)
    row0, rest = np.asarray(free.tokens[0]), np.asarray(free.tokens[1:])
    # a token row 0 first draws at step k >= 1 and no other row ever draws
    k, stop = next(
        (k, int(t)) for k, t in enumerate(row0) if k and t not in row0[:k] and t not in rest
    )
    out = Sampler(model, pad_id=PAD, stop_ids=[stop])(PROMPTS, max_new_tokens=8, key=key)
    assert np.asarray(out.lengths).tolist() == [k + 1, 8, 8]
    np.testing.assert_array_equal(out.tokens[0, : k + 1], row0[: k + 1])  # stop token kept
    assert np.all(np.asarray(out.tokens[0, k + 1 :]) == PAD)
    np.testing.assert_array_equal(out.tokens[1:], rest)  # the other rows are untouched
    np.testing.assert_array_equal(out.mask[0], np.arange(8) <= k)


def test_seeds_are_deterministic_and_distinct(model: Transformer) -> None:
    def draw(seed: int, calls: int = 1):
        sampler = Sampler(model, pad_id=PAD, stop_ids=[EOS], seed=seed)
        return [np.asarray(sampler(PROMPTS, max_new_tokens=8).tokens) for _ in range(calls)]

    first, second = draw(0, calls=2)
    np.testing.assert_array_equal(draw(0)[0], first)  # same seed, same output
    assert not np.array_equal(draw(1)[0], first)  # another seed differs
    assert not np.array_equal(second, first)  # and the next call draws a fresh key


def test_generate_inside_a_callers_jit_matches_sampler(model: Transformer) -> None:
    """The pure `generate` (what the compiler fuses into its rollout program) draws the
    same tokens as the two-program Sampler for the same key."""
    key = jax.random.key(11)
    expected = Sampler(model, pad_id=PAD, stop_ids=[EOS])(PROMPTS, max_new_tokens=8, key=key)
    tokens, mask = left_pad(PROMPTS, PAD)
    config = SamplingConfig(max_new_tokens=8, stop_ids=(EOS,), pad_id=PAD)
    fused = nnx.jit(generate, static_argnums=(4,))(model, tokens, mask, key, config)
    np.testing.assert_array_equal(fused.tokens, expected.tokens)
    np.testing.assert_allclose(fused.logps, expected.logps, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(fused.lengths, expected.lengths)


def test_samples_share_one_prefill(model: Transformer, monkeypatch) -> None:
    seen: list[tuple[int, int]] = []
    forward = Transformer.__call__

    def spy(self, tokens, **kwargs):
        seen.append(tuple(tokens.shape))
        return forward(self, tokens, **kwargs)

    monkeypatch.setattr(Transformer, "__call__", spy)
    sampler = Sampler(model, pad_id=PAD, stop_ids=[EOS])
    out = sampler(PROMPTS, max_new_tokens=4, num_samples=4, temperature=0.0)
    assert seen[0] == (3, 6)  # the prompts go through the model once, 3 rows
    assert set(seen[1:]) == {(12, 1)}  # then only single-token decode steps on 3 x 4 rows
    greedy = np.asarray(out.tokens).reshape(3, 4, 4)
    assert np.all(greedy == greedy[:, :1])  # greedy copies agree
    sampled = np.asarray(sampler(PROMPTS, max_new_tokens=4, num_samples=4).tokens)
    assert len({tuple(r) for r in sampled[:4]}) > 1  # sampled copies of one prompt differ


def test_top_k_and_top_p_restrict_the_support() -> None:
    logits = jnp.tile(jnp.log(jnp.asarray([0.4, 0.3, 0.15, 0.1, 0.05])), (4000, 1))
    key = jax.random.key(0)

    def support(**kwargs) -> set[int]:
        config = SamplingConfig(max_new_tokens=1, **kwargs)
        tokens, logps = sample_token(logits, key, config)
        np.testing.assert_allclose(logps, np.asarray(logits)[0][np.asarray(tokens)], atol=1e-6)
        return set(np.asarray(tokens).tolist())

    assert support() == {0, 1, 2, 3, 4}
    assert support(top_k=2) == {0, 1}
    assert support(top_p=0.69) == {0, 1}  # mass before token 1 is 0.4 < 0.69; before 2: 0.7
    assert support(top_p=0.71) == {0, 1, 2}
    assert support(top_p=0.01) == {0}
    assert support(temperature=0.0) == {0}
    assert support(top_k=3, top_p=0.5, temperature=2.0) == {0, 1}


def test_bad_settings_name_the_fix(model: Transformer) -> None:
    with pytest.raises(SamplingError, match="top_p must be in"):
        SamplingConfig(max_new_tokens=4, top_p=0.0)
    with pytest.raises(SamplingError, match="temperature must be >= 0"):
        SamplingConfig(max_new_tokens=4, temperature=-1.0)
    with pytest.raises(SamplingError, match="prompt 1 is empty"):
        left_pad([[1], []], PAD)
    with pytest.raises(SamplingError, match="more than the length 2"):
        left_pad([[1, 2, 3]], PAD, length=2)


def test_lora_dropout_is_off_while_sampling(model: Transformer) -> None:
    """A LoRA model in train mode (dropout on) samples as its merged, dropout-free self."""
    from tunix_dsl.models.lora import LoraSpec, apply_lora, lora_modules, merge_lora

    adapted = apply_lora(nnx.clone(model), LoraSpec(4, 8.0, dropout=0.5), nnx.Rngs(1))
    for n, (_, module) in enumerate(lora_modules(adapted)):
        shape = module.lora_b[...].shape
        module.lora_b[...] = 0.5 * jax.random.normal(jax.random.key(n), shape)
    sample = partial(Sampler.__call__, prompts=PROMPTS, max_new_tokens=6, temperature=0.0)
    ours = sample(Sampler(adapted, pad_id=PAD, stop_ids=[EOS]))
    merged = sample(Sampler(merge_lora(adapted), pad_id=PAD, stop_ids=[EOS]))
    base = sample(Sampler(model, pad_id=PAD, stop_ids=[EOS]))
    np.testing.assert_array_equal(ours.tokens, merged.tokens)
    np.testing.assert_allclose(ours.logps, merged.logps, atol=1e-4, rtol=0)
    assert not np.array_equal(ours.tokens, base.tokens)  # the adapters mattered

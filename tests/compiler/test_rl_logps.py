"""RL log-probs: the shared-prompt forward equals the full forward, the chunked output head
equals the unchunked one (float32, within 1e-6, gradients too), and with a small `loss_chunk`
no score or update program holds `[N, C, V]` float32 logits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.compiler.test_chunked_loss import assert_trees_close, grads_of
from tests.compiler.test_precision import MESH
from tests.compiler.test_rl_program import REWARDS, one_step, program_for
from tunix_dsl.compiler.model_init import init_model
from tunix_dsl.compiler.rl_program import assemble
from tunix_dsl.compiler.rl_step import completion_hidden, completion_logps, completion_terms
from tunix_dsl.models.config import ModelConfig

V, P, C, G = 97, 7, 6, 3
CFG = ModelConfig(vocab_size=V, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16,
                  mlp_dim=64, max_seq_len=32, tie_embeddings=False)


def rollout_batch() -> dict[str, jax.Array]:
    """Two left-padded prompts (4 and 7 real tokens), G completions each, some stopped early
    (pad after the stop, as the sampler leaves them)."""
    rng = np.random.default_rng(0)
    prompts = rng.integers(1, V, (2, P)).astype(np.int32)
    prompt_mask = np.ones((2, P), bool)
    prompt_mask[0, :3] = False
    prompts[~prompt_mask] = 0
    lengths = np.array([6, 3, 1, 6, 5, 2], np.int32)
    completion = rng.integers(1, V, (2 * G, C)).astype(np.int32)
    completion[np.arange(C)[None, :] >= lengths[:, None]] = 0
    return assemble(jnp.asarray(prompts), jnp.asarray(prompt_mask), jnp.asarray(completion),
                    jnp.asarray(lengths), G)


def test_shared_prompt_forward_equals_the_full_forward() -> None:
    model = init_model(CFG, MESH, seed=0)
    batch = rollout_batch()
    mask = np.asarray(batch["completion_mask"])
    shared = np.asarray(completion_hidden(model, batch, group=G))
    full = np.asarray(completion_hidden(model, batch))
    np.testing.assert_allclose(shared[mask], full[mask], atol=1e-5, rtol=1e-5)

    def loss(group: int) -> Callable[[nnx.Module], jax.Array]:
        return lambda m: jnp.sum(completion_logps(m, batch, chunk=C, group=group))

    np.testing.assert_allclose(loss(G)(model), loss(1)(model), rtol=1e-6)
    assert_trees_close(grads_of(model, loss(G)), grads_of(model, loss(1)), atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 4])
def test_chunked_log_probs_and_entropy_equal_unchunked(chunk: int) -> None:
    model = init_model(CFG, MESH, seed=0)
    batch = rollout_batch()
    whole = completion_terms(model, batch, chunk=C, group=G, entropy_gradient=True)
    chunked = completion_terms(model, batch, chunk=chunk, group=G, entropy_gradient=True)
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-6)

    def loss(c: int) -> Callable[[nnx.Module], jax.Array]:
        def f(m: nnx.Module) -> jax.Array:
            logps, entropy = completion_terms(m, batch, chunk=c, group=G, entropy_gradient=True)
            return jnp.sum(logps) + 0.1 * jnp.sum(entropy)

        return f

    assert_trees_close(grads_of(model, loss(C)), grads_of(model, loss(chunk)))


def test_grpo_step_with_a_small_loss_chunk_equals_the_unchunked_step(tmp_path: Path) -> None:
    fields = "beta = 0.1\n iterations = 2\n optimizer = sgd(lr = 0.1)"
    whole, _ = program_for(tmp_path / "whole", fields)  # 4 new tokens: one chunk
    chunked, _ = program_for(tmp_path / "chunked", fields + "\n loss_chunk = 1")
    s1, m1, _, scores1 = one_step(whole, whole.init_state(), REWARDS)
    s2, m2, _, scores2 = one_step(chunked, chunked.init_state(), REWARDS)
    for name in scores1:
        np.testing.assert_allclose(np.asarray(scores1[name]), np.asarray(scores2[name]), atol=1e-6)
    for name in m1:
        np.testing.assert_allclose(m1[name], m2[name], atol=1e-6, rtol=1e-6, err_msg=name)
    assert_trees_close(s1.trainable, s2.trainable)


def largest_logits(fn: Callable[..., Any], *args: Any, vocab: int, skip: set[tuple[int, ...]]) -> int:
    """Elements of the largest float32 value with `vocab` in its last axis anywhere in the
    traced program (sub-programs of maps, scans, checkpoints and conditionals included),
    leaving out values shaped like a parameter (`skip`: the output head, its transpose, its
    gradient)."""

    def jaxprs(params: dict[str, Any]) -> Iterator[Any]:
        for value in params.values():
            for item in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(item, "jaxpr", item)
                if hasattr(inner, "eqns"):
                    yield inner

    def walk(jaxpr: Any) -> Iterator[int]:
        for eqn in jaxpr.eqns:
            for var in eqn.outvars:
                aval = var.aval
                shape = tuple(getattr(aval, "shape", ()))
                if shape and shape[-1] == vocab and aval.dtype == jnp.float32 and shape not in skip:
                    yield int(np.prod(aval.shape))
            for inner in jaxprs(eqn.params):
                yield from walk(inner)

    return max(walk(jax.make_jaxpr(fn)(*args).jaxpr), default=0)


def test_rl_programs_never_hold_the_completion_logits_with_a_small_chunk(tmp_path: Path) -> None:
    fields = "beta = 0.1\n iterations = 2"  # 8 rows of 4 new tokens
    for chunk, bound in ((None, None), (1, 1)):
        extra = f"\n loss_chunk = {chunk}" if chunk else ""
        program, _ = program_for(tmp_path / str(chunk), fields + extra)
        state = program.init_state()
        prompts = program.put({"tokens": np.full((2, 8), 257, np.int32), "attention_mask": np.ones((2, 8), bool)})
        rollout = program.rollout(state, program.split.frozen, prompts["tokens"], prompts["attention_mask"],
                                  np.int32(0), np.int32(0))
        scores = program.score(state, program.split.frozen, rollout)
        batch = {**rollout, **scores, **program.put({"rewards": REWARDS})}
        vocab, rows, new = program.rl.modules.policy.cfg.vocab_size, 8, 4
        params = {s for p in jax.tree.leaves(state.trainable) for s in (tuple(p.shape), tuple(p.shape)[::-1])}
        for fn, args in ((program.score, (state, program.split.frozen, rollout)),
                         (program.update, (state, program.split.frozen, batch))):
            largest = largest_logits(fn, *args, vocab=vocab, skip=params)
            if bound is None:  # unchunked: the whole [N, C, V] logits exist (the test can fail)
                assert largest >= rows * new * vocab
            else:
                assert largest <= rows * bound * vocab

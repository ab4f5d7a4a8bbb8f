"""The GRPO programs on a tiny random model: what each variant and option does, exact gradient
accumulation, the old-policy pass with μ > 1, and no second copy of the weights with LoRA."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from tunix_dsl.api import load
from tunix_dsl.compiler.stages import grpo
from tunix_dsl.runtime import rl_run
from tunix_dsl.runtime.executor import Executor

PIPELINE = """
pipeline p {{ seed = 0 }}
tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars, n_layers = 1)
dataset sums = synthetic("addition", digits = 1, count = 20, seed = 1)
reward correct = exact_match(field = "answer")
stage solve: grpo {{
  policy = tiny
  data = sums
  rewards = [correct]
  generations = 4
  batch_size = 8
  max_prompt_len = 8
  max_new_tokens = 4
  steps = 3
  {fields}
}}
"""


def program_for(tmp_path: Path, fields: str = ""):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "p.tnx").write_text(PIPELINE.format(fields=fields))
    pipeline = load(tmp_path / "p.tnx")
    assert pipeline.ok, [d.message for d in pipeline.diagnostics]
    executor = Executor(pipeline, tmp_path / "run", log=lambda _: None)
    stage = pipeline.stages[0]
    models = executor.stage_models(stage, executor.stage_seed(stage))
    return rl_run.lower(executor, stage, models), stage.config


def one_step(program, state, rewards: np.ndarray):
    """rollout → score → update on two fixed prompts; returns (state, metrics, rollout)."""
    prompts = np.full((2, 8), 256, np.int32)
    prompts[:, -4:] = [[257, 51, 43, 52], [257, 50, 43, 55]]  # bos "3+4", bos "2+7"
    mask = prompts != 256
    placed = program.put({"tokens": prompts, "attention_mask": mask})
    frozen = program.split.frozen
    rollout = program.rollout(state, frozen, placed["tokens"], placed["attention_mask"], np.int32(0), np.int32(0))
    scores = program.score(state, frozen, rollout) if program.score is not None else {}
    batch = {**rollout, **scores, **program.put({"rewards": rewards.astype(np.float32)})}
    state, metrics = program.update(state, frozen, batch)
    return state, jax.device_get(metrics), rollout, scores


REWARDS = np.array([1, 0, 0, 1, 0, 0, 0, 1], np.float32)


def test_mu_1_has_no_score_pass_without_kl_and_its_ratio_is_exactly_one(tmp_path: Path) -> None:
    program, _ = program_for(tmp_path, "beta = 0")
    assert program.score is None  # no old-policy pass (μ = 1), no reference pass (β = 0)
    assert "reference" not in program.split.frozen  # not even held
    _, metrics, rollout, _ = one_step(program, program.init_state(), REWARDS)
    assert metrics["ratio"] == 1.0 and metrics["clip_fraction"] == 0.0
    assert metrics["kl_ref"] == 0.0 and np.isfinite(metrics["loss"])
    lengths = np.asarray(rollout["lengths"])
    assert rollout["tokens"].shape == (8, 12) and ((lengths >= 1) & (lengths <= 4)).all()


def test_mu_2_scores_the_old_policy_and_runs_two_updates(tmp_path: Path) -> None:
    program, _ = program_for(tmp_path, "iterations = 2\n beta = 0.1\n optimizer = adamw(lr = 1e-2)")
    state, metrics, _, scores = one_step(program, program.init_state(), REWARDS)
    assert set(scores) == {"old_logps", "ref_logps"}
    assert int(state.step) == 2  # μ optimizer updates in one dispatch
    # the second pass sees a moved policy: its ratio is no longer 1
    assert metrics["ratio"] != 1.0 and metrics["approx_kl_old"] > 0


def test_gradient_accumulation_is_exact(tmp_path: Path) -> None:
    # sgd: the update is the gradient itself (adam would magnify rounding of near-zero gradients)
    fields = "aggregation = \"sequence-mean-token-mean\"\n optimizer = sgd(lr = 1.0)"
    one, _ = program_for(tmp_path / "a", fields)
    two, _ = program_for(tmp_path / "b", fields + "\n grad_accum = 2")
    s1, m1, _, _ = one_step(one, one.init_state(), REWARDS)
    s2, m2, _, _ = one_step(two, two.init_state(), REWARDS)
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m1["grad_norm"], m2["grad_norm"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(s1.trainable), jax.tree.leaves(s2.trainable), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("loss = \"grpo\"", (True, "sequence-mean-token-mean", 0.2)),
        ("loss = \"dr-grpo\"", (False, "sequence-mean-token-scale", 0.2)),
        ("loss = \"dapo\"", (True, "token-mean", 0.28)),
        ("loss = \"dapo\"\n epsilon_high = 0.3\n aggregation = \"seq-mean-token-sum\"",
         (True, "seq-mean-token-sum", 0.3)),
    ],
)
def test_loss_variants_fill_in_their_defaults(tmp_path: Path, fields: str, expected: tuple) -> None:
    (tmp_path / "p.tnx").write_text(PIPELINE.format(fields=fields))
    pipeline = load(tmp_path / "p.tnx")
    assert grpo.effective(pipeline.stages[0].config) == expected


def test_equal_rewards_give_no_gradient_and_dr_grpo_skips_the_std(tmp_path: Path) -> None:
    program, _ = program_for(tmp_path, "beta = 0\n loss = \"dr-grpo\"\n dual_clip = 3.0")
    _, flat, _, _ = one_step(program, program.init_state(), np.ones(8, np.float32))
    assert flat["grad_norm"] == 0.0 and flat["advantage_std"] == 0.0
    _, metrics, _, _ = one_step(program, program.init_state(), 2 * REWARDS)
    # dr-grpo: A = r − mean_g, so doubling the rewards doubles the advantages' spread
    grouped = 2 * REWARDS.reshape(2, 4)
    expected = np.std(grouped - grouped.mean(axis=1, keepdims=True))
    assert metrics["advantage_std"] == pytest.approx(expected, rel=1e-5)


def nbytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def score_argument_bytes(program) -> int:
    """What the score program (the reference pass) reads, by XLA's own accounting."""
    rows, width = 8, 12
    s = jax.ShapeDtypeStruct
    batch = {"tokens": s((rows, width), np.int32), "attention_mask": s((rows, width), bool),
             "positions": s((rows, width), np.int32), "completion_mask": s((rows, 4), bool),
             "lengths": s((rows,), np.int32)}
    compiled = program.score.lower(program.abstract_state(), program.split.frozen, batch).compile()
    return int(compiled.memory_analysis().argument_size_in_bytes)


def test_lora_reference_is_the_base_with_adapters_off_no_second_copy(tmp_path: Path) -> None:
    full, _ = program_for(tmp_path / "full", "beta = 0.1")
    lora, _ = program_for(tmp_path / "lora", "beta = 0.1\n lora = lora(rank = 2, alpha = 4)")
    assert "reference" in full.split.frozen and "reference" not in lora.split.frozen
    params = nbytes(full.split.trainable)
    # weights held by the stage: full fine-tuning keeps the policy and a frozen copy; LoRA the base once
    assert nbytes(full.split.trainable) + nbytes(full.split.frozen) >= 2 * params
    assert nbytes(lora.split.trainable) + nbytes(lora.split.frozen) < 1.2 * params
    # the reference pass of LoRA reads the base (+ adapters, ignored) and the batch: one copy
    assert score_argument_bytes(lora) < 1.2 * params
    _, metrics, _, _ = one_step(lora, lora.init_state(), REWARDS)
    assert metrics["kl_ref"] < 1e-6  # adapters start at zero: policy = reference


def test_ppo_critic_from_a_named_model_trains_at_its_own_rate(tmp_path: Path) -> None:
    (tmp_path / "p.tnx").write_text(PIPELINE.replace("stage solve: grpo", "stage solve: ppo").replace(
        "  generations = 4\n", "").replace(
        'model tiny = transformer(preset = "pico", tokenizer = chars, n_layers = 1)',
        'model tiny = transformer(preset = "pico", tokenizer = chars, n_layers = 1)\n'
        'model judge = transformer(preset = "pico", tokenizer = chars, n_layers = 2)').format(
        fields="critic = judge\n critic_lr = 0.1\n beta = 0\n optimizer = sgd(lr = 1e-9)"))
    pipeline = load(tmp_path / "p.tnx")
    assert pipeline.ok, [d.message for d in pipeline.diagnostics]
    executor = Executor(pipeline, tmp_path / "run", log=lambda _: None)
    stage = pipeline.stages[0]
    program = rl_run.lower(executor, stage, executor.stage_models(stage, 0))
    critic = program.rl.modules.critic
    assert critic.trunk.cfg.n_layers == 2 and program.rl.modules.policy.cfg.n_layers == 1  # the named model
    state = program.init_state()
    prompts = program.put({"tokens": np.full((8, 8), 257, np.int32), "attention_mask": np.ones((8, 8), bool)})
    frozen = program.split.frozen
    batch = program.rollout(state, frozen, prompts["tokens"], prompts["attention_mask"], np.int32(0), np.int32(0))
    scores = program.score(state, frozen, batch)
    new, _ = program.update(state.__class__(state.step, jax.tree.map(np.copy, state.trainable), state.opt_state,
                                            state.rest), frozen,
                            {**batch, **scores, **program.put({"rewards": np.arange(8, dtype=np.float32)})})
    moved = lambda role: max(  # noqa: E731
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(new.trainable),
                                     jax.tree_util.tree_leaves_with_path(state.trainable), strict=True)
        if getattr(path[0], "key", None) == role)
    # critic_lr = 0.1 moves the critic; the policy's lr of 1e-9 barely moves it
    assert moved("critic") > 1e-3 > 1e-6 > moved("policy")

"""Stage kinds (DESIGN.md §6): one config schema per kind, built from shared parts.

Every field is defined once: the common training loop fields live in
`TrainingConfig`, sequence length in `SequenceConfig`, sampling in
`GenerationConfig`, adapters in `AdapterConfig`, policy/reference in
`PolicyConfig`. A stage kind combines the parts it needs.

Batch sizes count sequences per optimizer step over the whole mesh (the
global batch); for grpo a sequence is one completion, so
`batch_size / generations` prompts are sampled per step.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunix_dsl.schemas.agents import AgentConfig, ToolInput
from tunix_dsl.schemas.base import (
    SEED_MAX,
    DatasetInput,
    ModelInput,
    Problem,
    RewardInput,
    Schema,
)
from tunix_dsl.schemas.kinds import STAGE_KINDS, StageKind
from tunix_dsl.schemas.training import (
    AdamW,
    Adapter,
    LogitStrategy,
    Optimizer,
    OverlongPenalty,
    Strategy,
)


class TrainingConfig(Schema):
    """Fields of every training stage: data, step budget, optimizer, checkpointing."""

    data: DatasetInput = Field(description="dataset the stage trains on")
    steps: int = Field(gt=0, description="optimizer steps")
    batch_size: int = Field(32, gt=0, description="global batch: sequences per optimizer step")
    optimizer: Optimizer = Field(default_factory=AdamW, description="adamw | adafactor | sgd | lion")
    grad_accum: int = Field(1, gt=0, description="micro-batches accumulated per step")
    steps_per_call: int = Field(1, gt=0, description="optimizer steps fused into one dispatch")
    eval_every: int = Field(0, ge=0, description="steps between held-out evaluations (0: never)")
    eval_data: DatasetInput | None = Field(None, description="held-out dataset for `eval_every`")
    checkpoint_every: int = Field(0, ge=0, description="steps between checkpoints (0: at the end)")
    checkpoint_minutes: float = Field(
        30.0, ge=0, description="also checkpoint when this many minutes passed since the last (0: off)"
    )
    keep_checkpoints: int = Field(2, gt=0, description="most recent checkpoints kept")
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="a NaN/Inf loss or gradient: stop the stage, or skip that update"
    )
    loss_chunk: int | None = Field(
        None, gt=0, description="tokens per sequence chunk of the loss and log-probs, so "
        "[batch, seq, vocab] logits never exist at once (unset: sized from the vocabulary)")
    seed: int | None = Field(None, ge=0, le=SEED_MAX,
                             description="stage seed, a 32-bit PRNG seed (unset: derived from the "
                                         "pipeline seed)")

    def problems(self) -> list[Problem]:
        found = super().problems()
        if self.eval_every and self.eval_data is None:
            found.append(Problem("eval_every", "`eval_every` needs `eval_data`, the dataset to "
                                               "evaluate on"))
        if self.batch_size % self.grad_accum:
            found.append(Problem("grad_accum", f"`batch_size` ({self.batch_size}) is not divisible "
                                               f"by `grad_accum` ({self.grad_accum})"))
        if self.steps % self.steps_per_call:
            # the step program always runs `steps_per_call` updates per dispatch
            fewer = self.steps - self.steps % self.steps_per_call
            options = " or ".join(str(n) for n in (fewer, fewer + self.steps_per_call) if n)
            found.append(Problem(
                "steps", f"`steps` ({self.steps}) is not a multiple of `steps_per_call` "
                f"({self.steps_per_call})", "TNX220",
                f"not a multiple of steps_per_call = {self.steps_per_call}",
                f"use steps = {options}, or a `steps_per_call` that divides {self.steps}"))
        warmup = self.optimizer.warmup
        if warmup and warmup >= self.steps:
            found.append(Problem(
                "optimizer.warmup", f"warm-up of {warmup} steps is not shorter than the stage's "
                f"{self.steps} steps", "TNX221", f"`steps` = {self.steps}",
                f"lower `warmup` below {self.steps} (e.g. {max(self.steps // 10, 0)}), or raise "
                "`steps`"))
        return found


class SequenceConfig(Schema):
    max_seq_len: int = Field(128, gt=0, description="tokens per example; longer rows are truncated")


class AdapterConfig(Schema):
    lora: Adapter | None = Field(None, description="lora(...) or qlora(...); unset: full fine-tuning")


class GenerationConfig(Schema):
    """Sampling of completions (grpo, ppo)."""

    max_prompt_len: int = Field(64, gt=0, description="prompt tokens (longer prompts are truncated)")
    max_new_tokens: int = Field(32, gt=0, description="generated tokens per completion")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass (1: off)")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens (0: off)")


class PolicyConfig(Schema):
    policy: ModelInput = Field(description="model being trained")
    reference: ModelInput | None = Field(
        None, description="frozen reference (unset: the policy's starting weights)"
    )


class RewardConfig(Schema):
    rewards: list[RewardInput] = Field(
        default_factory=list, description="reward declarations, summed (may be empty with an "
        "`environment`, whose reward then counts alone)")
    reward_weights: list[float] | None = Field(
        None, description="one weight per reward (unset: all 1.0)"
    )

    def problems(self) -> list[Problem]:
        found = super().problems()
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            found.append(Problem("reward_weights", f"`reward_weights` has {len(self.reward_weights)} "
                                                   f"weights for {len(self.rewards)} rewards"))
        return found


# --------------------------------------------------------------------------- the kinds


class PretrainConfig(TrainingConfig, SequenceConfig):
    """Next-token cross-entropy on whole sequences."""

    model: ModelInput = Field(description="model to train")


class SFTConfig(TrainingConfig, SequenceConfig, AdapterConfig):
    """Cross-entropy on completion tokens only (prompt masked); full, LoRA or QLoRA."""

    model: ModelInput = Field(description="model to fine-tune")
    tools: list[ToolInput] = Field(
        default_factory=list, description="tool declarations whose JSON schemas conversations "
        "are rendered with (the chat template's `tools` variable), as an agent stage with these "
        "tools renders its prompts; a row's own `tools` column narrows them for that row")


class DPOConfig(TrainingConfig, SequenceConfig, AdapterConfig, PolicyConfig):
    """Direct preference optimisation: −[(1−ls)·logσ(βΔ) + ls·logσ(−βΔ)]."""

    beta: float = Field(0.1, gt=0, description="β: strength of the implicit KL constraint")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="ls: assumed label noise")


class ORPOConfig(TrainingConfig, SequenceConfig, AdapterConfig):
    """Odds-ratio preference optimisation: L_SFT(chosen) + λ·L_OR; no reference model."""

    policy: ModelInput = Field(description="model being trained")
    lambda_: float = Field(0.1, gt=0, alias="lambda", description="λ: weight of the odds-ratio term")


class RLTrainingConfig(TrainingConfig, GenerationConfig, AdapterConfig, PolicyConfig, RewardConfig,
                       AgentConfig):
    """What every RL kind's schema includes (`program = "rl"`): the generic RL lowering,
    planning and runtime read only these fields; a kind's own step reads its subclass."""

    rollout: Literal["sync", "async"] = Field(
        "sync", description="async: the rollout (and host rewards) of later steps run in a "
        "background thread while the current update trains, on weights up to `max_staleness` "
        "steps old; the ratio uses the generating weights' log-probs")
    max_staleness: int = Field(
        1, description="async rollout: an update trains on a rollout generated by weights at most "
        "this many steps old (also the number of rollouts in flight)")

    def uses_reference(self) -> bool:
        """Whether the score program needs the reference model's log-probs."""
        return True


class GRPOConfig(RLTrainingConfig):
    """Group relative policy optimisation and its variants (Dr. GRPO, DAPO, GSPO-token)."""

    generations: int = Field(8, gt=1, description="G: completions sampled per prompt")
    beta: float = Field(0.04, ge=0, description="β: weight of KL(π‖ref) (0: no reference pass)")
    epsilon: float = Field(0.2, gt=0, lt=1, description="ε_low: lower clip of the ratio")
    epsilon_high: float | None = Field(
        None, gt=0, description="ε_high: upper clip (unset: ε); DAPO clip-higher uses > ε"
    )
    dual_clip: float | None = Field(
        None, gt=1, description="dual-clip bound c for negative advantages (unset: off)"
    )
    kl_estimator: Literal["k1", "k3"] = Field("k3", description="per-token KL estimator")
    loss: Literal["grpo", "dr-grpo", "dapo", "gspo-token"] = Field(
        "grpo", description="objective: dr-grpo drops the std division (default aggregation "
        "sequence-mean-token-scale), dapo defaults to token-mean and epsilon_high 0.28, "
        "gspo-token uses a sequence-level ratio",
    )
    aggregation: Literal[
        "token-mean", "sequence-mean-token-mean", "seq-mean-token-sum", "sequence-mean-token-scale"
    ] = Field("sequence-mean-token-mean", description="how per-token losses become one number")
    iterations: int = Field(1, gt=0, description="μ: policy updates per generated batch")
    overlong: OverlongPenalty | None = Field(
        None, description="overlong(buffer = ..., penalty = ...): DAPO length penalty (tokens)"
    )
    dynamic_sampling: bool = Field(
        False, description="DAPO dynamic sampling: drop groups whose rewards are all equal and "
        "refill the batch from further prompts",
    )
    max_draws: int = Field(
        3, gt=0, description="dynamic sampling: rollout batches drawn per step at most (the first "
        "included); past it, all-equal groups fill the batch",
    )

    def problems(self) -> list[Problem]:
        found = super().problems()
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            found.append(Problem("epsilon_high", f"`epsilon_high` ({self.epsilon_high}) is below "
                                                 f"`epsilon` ({self.epsilon})"))
        if self.overlong is not None and self.overlong.buffer >= self.max_new_tokens:
            found.append(Problem("overlong", f"overlong buffer {self.overlong.buffer} must be "
                                             f"below `max_new_tokens` ({self.max_new_tokens})"))
        return found

    def uses_reference(self) -> bool:
        return self.beta > 0  # β = 0: no KL term, so no reference pass


class PPOConfig(RLTrainingConfig):
    """PPO with a learned critic, GAE, clipped policy and value losses."""

    critic: ModelInput | None = Field(
        None, description="model whose trunk initialises the critic (unset: the policy)"
    )
    critic_lr: float | None = Field(None, gt=0, description="critic learning rate (unset: optimizer lr)")
    beta: float = Field(0.05, ge=0, description="β: per-token KL penalty folded into rewards")
    kl_estimator: Literal["k1", "k3"] = Field("k1", description="per-token KL estimator")
    gamma: float = Field(1.0, ge=0, le=1, description="γ: discount")
    lam: float = Field(0.95, ge=0, le=1, description="λ: GAE smoothing")
    epsilon: float = Field(0.2, gt=0, lt=1, description="ε: policy ratio clip")
    value_clip: float = Field(0.2, gt=0, description="c: value prediction clip around V_old")
    value_coef: float = Field(0.5, ge=0, description="weight of the value loss")
    entropy_coef: float = Field(0.0, ge=0, description="weight of the entropy bonus")
    iterations: int = Field(1, gt=0, description="updates per generated batch")
    whiten_advantages: bool = Field(True, description="normalise advantages over the batch")

    def uses_reference(self) -> bool:
        return self.beta > 0  # β = 0: no KL term, so no reference pass


class DistillConfig(TrainingConfig, SequenceConfig):
    """Teacher → student knowledge distillation; the teacher gets no gradients."""

    teacher: ModelInput = Field(description="frozen teacher model")
    student: ModelInput = Field(description="model being trained")
    strategy: Strategy = Field(
        default_factory=LogitStrategy, description="logit(...) | attention(...) | feature_projection(...)"
    )


# The built-in kinds, registered by `tunix_dsl.schemas.plugins` like a plugin's entry point.
_STEP = "tunix_dsl.compiler.stages."
_LM_METRICS = ("loss", "tokens", "accuracy", "perplexity")
_DPO_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy",
                "pairs")
_ORPO_METRICS = ("loss", "sft_loss", "or_loss", "log_odds", "chosen_logps", "rejected_logps",
                 "accuracy", "tokens", "pairs")
_RL_METRICS = ("reward", "reward_std", "completion_length", "clip_fraction", "ratio",
               "approx_kl_old", "kl_ref", "entropy")
BUILTIN_KINDS: tuple[StageKind, ...] = (
    StageKind("pretrain", PretrainConfig, "model", ("model",), "lm", _STEP + "sft:build",
              metrics=_LM_METRICS),
    StageKind("sft", SFTConfig, "model", ("model",), "prompt_completion", _STEP + "sft:build",
              metrics=_LM_METRICS),
    StageKind("dpo", DPOConfig, "policy", ("policy", "reference"), "preference",
              _STEP + "dpo:build", metrics=_DPO_METRICS),
    StageKind("orpo", ORPOConfig, "policy", ("policy",), "preference", _STEP + "orpo:build",
              metrics=_ORPO_METRICS),
    StageKind("grpo", GRPOConfig, "policy", ("policy", "reference"), "prompt",
              _STEP + "grpo:build", "rl", _RL_METRICS),
    StageKind("ppo", PPOConfig, "policy", ("policy", "reference", "critic"), "prompt",
              _STEP + "ppo:build", "rl", (*_RL_METRICS, "policy_loss", "value_loss",
                                         "explained_variance")),
    StageKind("distill", DistillConfig, "student", ("teacher", "student"), "lm",
              _STEP + "distill:build", metrics=("loss", "tokens")),
)

__all__ = ["BUILTIN_KINDS", "STAGE_KINDS", "StageKind", "TrainingConfig"]

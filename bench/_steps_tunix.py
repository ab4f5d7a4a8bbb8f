"""Tunix's trainers on the benchmark sizes, driven step by step from `bench/steps.py`.

Runs in the Tunix venv (`/tmp/tunix-venv/bin/python bench/_steps_tunix.py`),
so PyPI `google-tunix` never touches the project's environment. A tiny
line protocol on stdin/stdout keeps the trainers alive between timing rounds,
so the parent can interleave them with our steps:

    → {"build": [names]}          ← {"built": {name: seconds incl. 2 warm-up steps}, "errors": {…}}
    → {"run": name, "steps": n}   ← {"times": [seconds per step, …]}
    → {"quit": true}

Replies are single lines prefixed with `@@ ` (anything else on stdout is a
library's chatter). A step is one `trainer.train([example])` call: the
trainer's own loop for one example, including its input preparation (DPO's
reference log-probs, distillation's teacher forward) and metric buffering,
with `is_managed_externally = True` so it neither stops at `max_steps` nor
closes itself — the way Tunix's RL learners drive it. `train` waits for the
step's loss before returning.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import _steps_common as common
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

warnings.simplefilter("ignore")
LORA_MODULES = r".*(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def llama(seed: int = 0) -> nnx.Module:
    from tunix.models.llama3 import model as llama3

    cfg = llama3.ModelConfig(
        num_layers=common.LAYERS, vocab_size=common.VOCAB, embed_dim=common.D_MODEL,
        hidden_dim=common.MLP, num_heads=common.HEADS, head_dim=common.HEAD_DIM,
        num_kv_heads=common.HEADS, rope_theta=10_000, norm_eps=1e-6, weight_tying=False,
    )  # fmt: skip
    return llama3.Llama3(cfg, rngs=nnx.Rngs(seed))


def lora(model: nnx.Module) -> nnx.Module:
    import qwix

    provider = qwix.LoraProvider(module_path=LORA_MODULES, rank=common.LORA_RANK,
                                 alpha=common.LORA_ALPHA)
    return qwix.apply_lora_to_model(model, provider, rngs=nnx.Rngs(1), **model.get_model_input())


def positions_and_mask(tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    b, t = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    return positions, jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))


def lm_inputs(x: Any) -> dict[str, jax.Array]:
    positions, mask = positions_and_mask(x.input_tokens)
    return {"input_tokens": x.input_tokens, "input_mask": x.input_mask,
            "positions": positions, "attention_mask": mask}


def config(cls: type, **extra: Any) -> Any:
    return cls(eval_every_n_steps=10**9, max_steps=None, pbar_description=None, **extra)


def peft(lora_on: bool) -> tuple[Any, Any]:
    from tunix.sft import peft_trainer

    model = lora(llama()) if lora_on else llama()
    trainer = peft_trainer.PeftTrainer(
        model, common.adamw(common.decays), config(peft_trainer.TrainingConfig))
    trainer.with_gen_model_input_fn(lm_inputs)
    # Tunix's default loss: CE of tokens[1:] under input_mask[1:]; mask the prompt.
    b = common.lm_batch(0)
    mask = np.zeros_like(b["loss_mask"], np.int32)
    mask[:, common.PROMPT :] = 1
    return trainer, peft_trainer.TrainingInput(input_tokens=b["tokens"], input_mask=mask)


def dpo(lora_on: bool) -> tuple[Any, Any]:
    from tunix.sft.dpo import dpo_trainer

    reference = llama()
    policy = lora(llama()) if lora_on else llama()
    trainer = dpo_trainer.DPOTrainer(
        policy, reference, common.adamw(common.decays),
        config(dpo_trainer.DPOTrainingConfig, beta=common.DPO_BETA),
    )  # fmt: skip
    b, p = common.preference_batch(0), common.PROMPT
    completion = np.ones((common.BATCH, common.SEQ - p), np.int32)
    example = dpo_trainer.TrainingInput(
        prompt_ids=b["chosen_tokens"][:, :p], prompt_mask=np.ones((common.BATCH, p), np.int32),
        chosen_ids=b["chosen_tokens"][:, p:], chosen_mask=completion,
        rejected_ids=b["rejected_tokens"][:, p:], rejected_mask=completion,
    )  # fmt: skip
    return trainer, example


def distill() -> tuple[Any, Any]:
    from tunix.distillation import distillation_trainer, strategies

    def logits_of(model: nnx.Module, input_tokens: jax.Array, input_mask: jax.Array,
                  positions: jax.Array, attention_mask: jax.Array) -> jax.Array:
        logits, _ = model(input_tokens, positions, None, attention_mask)
        return logits[:, :-1]

    def labels(input_tokens: jax.Array, input_mask: jax.Array, **_: jax.Array) -> jax.Array:
        return jax.nn.one_hot(input_tokens[:, 1:], common.VOCAB) * input_mask[:, 1:, None]

    strategy = strategies.LogitStrategy(
        student_forward_fn=logits_of,
        teacher_forward_fn=nnx.jit(logits_of),  # outside the train step: jit it, else eager
        labels_fn=labels, temperature=common.DISTILL_TEMPERATURE, alpha=common.DISTILL_ALPHA,
    )  # fmt: skip
    trainer = distillation_trainer.DistillationTrainer(
        llama(0), llama(1), strategy, common.adamw(common.decays),
        config(distillation_trainer.TrainingConfig),
    )  # fmt: skip
    trainer.with_gen_model_input_fn(lm_inputs)
    b = common.lm_batch(0)
    mask = np.ones_like(b["tokens"])
    mask[:, : common.PROMPT] = 0
    return trainer, distillation_trainer.TrainingInput(input_tokens=b["tokens"], input_mask=mask)


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "sft": lambda: peft(False),
    "sft lora": lambda: peft(True),
    "dpo": lambda: dpo(False),
    "dpo lora": lambda: dpo(True),
    "distill logit": distill,
}


class Driven:
    """A trainer and its one example; `step()` runs one training step to completion."""

    def __init__(self, name: str):
        self.trainer, self.example = BUILDERS[name]()
        self.trainer.is_managed_externally = True

    def step(self) -> None:
        self.trainer.train([self.example])


def serve() -> None:
    driven: dict[str, Driven] = {}
    for line in sys.stdin:
        request = json.loads(line)
        if "build" in request:
            built, errors = {}, {}
            for name in request["build"]:
                start = time.perf_counter()
                try:
                    driven[name] = Driven(name)
                    common.time_steps(driven[name].step, 2)  # compile + one warm step
                    built[name] = time.perf_counter() - start
                except Exception as err:  # report, keep serving the others
                    errors[name] = f"{type(err).__name__}: {err}"
                    traceback.print_exc(file=sys.stderr)
            common.reply({"built": built, "errors": errors})
        elif "run" in request:
            common.reply({"times": common.time_steps(driven[request["run"]].step, request["steps"])})
        else:
            return


if __name__ == "__main__":
    common.worker_main("tunix", serve)

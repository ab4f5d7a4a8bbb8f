"""What a TRL user runs: PyTorch eager training steps, driven step by step from `bench/steps.py`.

`transformers`' `LlamaForCausalLM` (`attn_implementation="sdpa"`), float32 on the
CPU, loaded from the HF export (`save_hf`) of the very weights our step starts
from, so its first loss must equal ours; a plain loop of forward, `backward()`,
`clip_grad_norm_` and `torch.optim.AdamW` (weight decay on matrices only, the
same warm-up + cosine schedule as `_steps_common.schedule`). SFT is the masked
token-mean cross-entropy; DPO runs the policy on chosen + rejected rows in one
forward, the frozen reference under `no_grad` in the same step (as TRL's
`DPOTrainer` does without precomputed reference log-probs), and the sigmoid loss.

Runs as a subprocess of `bench/steps.py` with the same line protocol as
`_steps_tunix.py`, so PyTorch's thread pool never shares a process with XLA's:

    → {"build": [names], "checkpoint": dir}
    ← {"built": {name: seconds incl. 2 warm-up steps}, "errors": {…}, "params": n, "threads": t,
       "first_loss": {name: loss of the first step}}
    → {"run": name, "steps": n}   ← {"times": {"wall": […], "cpu": […]}}
    → {"quit": true}
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable

import _steps_common as common
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Batch = dict[str, torch.Tensor]


def lr_factor(step: int) -> float:
    """`_steps_common.schedule(step) / LR`: linear warm-up, then cosine to 0 at TOTAL_STEPS."""
    if step < common.WARMUP:
        return step / common.WARMUP
    progress = min(1.0, (step - common.WARMUP) / (common.TOTAL_STEPS - common.WARMUP))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def load(checkpoint: str) -> nn.Module:
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(checkpoint, attn_implementation="sdpa",
                                             dtype=torch.float32)
    return model.train()


def target_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] = logit[target] − logsumexp(logits), [B, T]."""
    picked = logits.gather(-1, targets[..., None])[..., 0]
    return picked - torch.logsumexp(logits, dim=-1)


def sft_loss(models: dict[str, nn.Module], b: Batch) -> torch.Tensor:
    """Token mean of −log p(target) over the loss mask."""
    logits = models["policy"](input_ids=b["tokens"], attention_mask=b["attention_mask"]).logits
    per_token = F.cross_entropy(logits.flatten(0, 1), b["targets"].flatten(), reduction="none")
    mask = b["loss_mask"].flatten()
    return (per_token * mask).sum() / mask.sum()


def pair_logps(model: nn.Module, both: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(input_ids=both["tokens"], attention_mask=both["attention_mask"]).logits
    seq = (target_logps(logits, both["targets"]) * both["loss_mask"]).sum(-1)
    chosen, rejected = seq.chunk(2)
    return chosen, rejected


def dpo_loss(models: dict[str, nn.Module], b: Batch) -> torch.Tensor:
    """−mean log σ(β[(π_c − ref_c) − (π_r − ref_r)]), chosen and rejected in one forward."""
    names = ("tokens", "targets", "loss_mask", "attention_mask")
    both = {n: torch.cat([b["chosen_" + n], b["rejected_" + n]]) for n in names}
    chosen, rejected = pair_logps(models["policy"], both)
    with torch.no_grad():
        ref_chosen, ref_rejected = pair_logps(models["reference"], both)
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return -F.logsigmoid(common.DPO_BETA * margin).mean()


class TorchStep:
    """One optimizer step of `loss` on a fixed batch; `__call__` returns the loss as a float
    (`.item()`, as a trainer's logging does), so the step has finished when it returns."""

    def __init__(self, models: dict[str, nn.Module], loss: Callable[[dict[str, nn.Module], Batch],
                 torch.Tensor], batch: dict[str, np.ndarray]):
        self.models, self.loss = models, loss
        self.batch = {n: torch.as_tensor(v).long() if "tokens" in n or "targets" in n
                      else torch.as_tensor(v) for n, v in batch.items()}
        policy = models["policy"]
        matrices = [p for p in policy.parameters() if p.ndim >= 2]
        vectors = [p for p in policy.parameters() if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": matrices, "weight_decay": common.WEIGHT_DECAY},
             {"params": vectors, "weight_decay": 0.0}], lr=common.LR)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor)
        for role, model in models.items():
            model.requires_grad_(role == "policy")

    def __call__(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.models, self.batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.models["policy"].parameters(), common.CLIP_NORM)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()


def build(name: str, checkpoint: str) -> TorchStep:
    policy = load(checkpoint)
    if name == "sft":
        return TorchStep({"policy": policy}, sft_loss, common.lm_batch(0))
    if name == "dpo":
        reference = copy.deepcopy(policy).eval()
        return TorchStep({"policy": policy, "reference": reference}, dpo_loss,
                         common.preference_batch(0))
    raise ValueError(f"no PyTorch step for {name!r} (only sft and dpo)")


def threads() -> int:
    """XLA:CPU's thread pool has one thread per core this process may run on: so does ours."""
    return len(os.sched_getaffinity(0))


def reply(obj: dict) -> None:
    sys.stdout.write("@@ " + json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve() -> None:
    torch.set_num_threads(threads())
    steps: dict[str, TorchStep] = {}
    for line in sys.stdin:
        request = json.loads(line)
        if "build" in request:
            built, errors, first, params = {}, {}, {}, 0
            for name in request["build"]:
                start = time.perf_counter()
                try:
                    steps[name] = build(name, request["checkpoint"])
                    first[name] = steps[name]()
                    steps[name]()  # one warm step
                    built[name] = time.perf_counter() - start
                    params = sum(p.numel() for p in steps[name].models["policy"].parameters())
                except Exception as err:  # report, keep serving the others
                    errors[name] = f"{type(err).__name__}: {err}"
                    traceback.print_exc(file=sys.stderr)
            reply({"built": built, "errors": errors, "params": params,
                   "threads": torch.get_num_threads(), "first_loss": first})
        elif "run" in request:
            reply({"times": common.time_steps(steps[request["run"]], request["steps"])})
        else:
            return


if __name__ == "__main__":
    reply({"ready": True})
    serve()

"""Plain float64 numpy references for the loss math, written from the formulas in DESIGN.md §6
and the papers — deliberately loop-based and independent of ``compiler/losses*.py``.

Masks: True = counts. Every function reads only the positions its mask selects.
"""

from __future__ import annotations

import math

import numpy as np


def log_softmax(row: np.ndarray) -> np.ndarray:
    row = np.asarray(row, np.float64)
    shifted = row - row.max()
    return shifted - math.log(np.exp(shifted).sum())


def log_sigmoid(x: float) -> float:
    # log σ(x) = −log(1 + e^{−x}), written stably for either sign
    return -np.logaddexp(0.0, -x)


def real_positions(mask: np.ndarray):
    """(b, t) pairs where the mask is on."""
    return [tuple(int(i) for i in ix) for ix in np.argwhere(np.asarray(mask, bool))]


# --------------------------------------------------------------------------- supervised


def token_logps(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.zeros(targets.shape)
    for b, t in real_positions(mask):
        out[b, t] = log_softmax(logits[b, t])[targets[b, t]]
    return out


def sft(logits, targets, mask) -> dict[str, float]:
    nll = correct = count = 0.0
    for b, t in real_positions(mask):
        row = np.asarray(logits[b, t], np.float64)
        nll -= log_softmax(row)[targets[b, t]]
        correct += float(np.argmax(row) == targets[b, t])
        count += 1
    loss = nll / count if count else 0.0
    return {
        "loss": loss, "tokens": count, "accuracy": correct / count if count else 0.0,
        "perplexity": math.exp(loss), "nll_sum": nll,
    }


def dpo(pc, pr, rc, rr, beta, label_smoothing, pair_mask=None) -> dict[str, float]:
    n = len(pc)
    keep = np.ones(n, bool) if pair_mask is None else np.asarray(pair_mask, bool)
    losses, chosen, rejected, wins = [], [], [], []
    for i in range(n):
        if not keep[i]:
            continue
        delta = (pc[i] - rc[i]) - (pr[i] - rr[i])
        losses.append(
            -((1 - label_smoothing) * log_sigmoid(beta * delta)
              + label_smoothing * log_sigmoid(-beta * delta))
        )
        rc_i, rr_i = beta * (pc[i] - rc[i]), beta * (pr[i] - rr[i])
        chosen.append(rc_i)
        rejected.append(rr_i)
        wins.append(1.0 if rc_i > rr_i else 0.5 if rc_i == rr_i else 0.0)
    return {
        "loss": np.mean(losses), "rewards/chosen": np.mean(chosen),
        "rewards/rejected": np.mean(rejected),
        "rewards/margin": np.mean(chosen) - np.mean(rejected),
        "rewards/accuracy": np.mean(wins), "pairs": len(losses),
    }


def orpo(chosen_lp, chosen_mask, rejected_lp, rejected_mask, lam) -> dict[str, float]:
    nll, tokens = 0.0, 0
    ors, odds, lcs, lrs, wins = [], [], [], [], []
    for i in range(chosen_lp.shape[0]):
        c = [float(chosen_lp[i, t]) for t in range(chosen_lp.shape[1]) if chosen_mask[i, t]]
        r = [float(rejected_lp[i, t]) for t in range(rejected_lp.shape[1]) if rejected_mask[i, t]]
        nll -= sum(c)
        tokens += len(c)
        lc, lr = sum(c) / len(c), sum(r) / len(r)
        log_odds = (lc - lr) - (math.log(1 - math.exp(lc)) - math.log(1 - math.exp(lr)))
        ors.append(-log_sigmoid(log_odds))
        odds.append(log_odds)
        lcs.append(lc)
        lrs.append(lr)
        wins.append(1.0 if lc > lr else 0.5 if lc == lr else 0.0)
    sft_loss = nll / tokens
    return {
        "loss": sft_loss + lam * np.mean(ors), "sft_loss": sft_loss, "or_loss": np.mean(ors),
        "log_odds": np.mean(odds), "chosen_logps": np.mean(lcs), "rejected_logps": np.mean(lrs),
        "accuracy": np.mean(wins),
    }


def logit_distill(student, teacher, labels, mask, temperature, alpha) -> dict[str, float]:
    kl = ce = 0.0
    positions = real_positions(mask)
    for b, t in positions:
        log_q = log_softmax(np.asarray(student[b, t], np.float64) / temperature)
        log_p = log_softmax(np.asarray(teacher[b, t], np.float64) / temperature)
        kl += float(np.sum(np.exp(log_p) * (log_p - log_q)))
        ce -= log_softmax(student[b, t])[labels[b, t]]
    n = len(positions)
    kl, ce = (kl / n, ce / n) if n else (0.0, 0.0)
    return {"loss": alpha * temperature**2 * kl + (1 - alpha) * ce, "kl": kl, "ce": ce}


def attention_transfer(student_layers, teacher_layers, mask, layer_map) -> dict[str, float]:
    distances = []
    for s_layer, t_layer in layer_map:
        s_maps = np.asarray(student_layers[s_layer], np.float64)
        t_maps = np.asarray(teacher_layers[t_layer], np.float64)
        group = t_maps.shape[1] // s_maps.shape[1]
        for b, q in real_positions(mask):
            for h in range(s_maps.shape[1]):
                teacher_row = t_maps[b, h * group:(h + 1) * group, q].mean(axis=0)
                student_row = s_maps[b, h, q]
                cos = student_row @ teacher_row / (
                    np.linalg.norm(student_row) * np.linalg.norm(teacher_row)
                )
                distances.append(1.0 - cos)
    return {"loss": np.mean(distances), "cosine": 1.0 - np.mean(distances)}


def feature_projection(student_hidden, teacher_hidden, kernel, mask) -> float:
    errors = []
    for b, t in real_positions(mask):
        projected = np.asarray(student_hidden[b, t], np.float64) @ np.asarray(kernel, np.float64)
        errors.append(np.mean((projected - teacher_hidden[b, t]) ** 2))
    return float(np.mean(errors))


# --------------------------------------------------------------------------- RL


def group_advantages(rewards, group_size, scale_by_std) -> np.ndarray:
    out = []
    for start in range(0, len(rewards), group_size):
        group = np.asarray(rewards[start:start + group_size], np.float64)
        mean = group.mean()
        std = math.sqrt(((group - mean) ** 2).sum() / (group_size - 1))
        out.extend((group - mean) / (std + 1e-6) if scale_by_std else group - mean)
    return np.asarray(out)


def aggregate(per_token, mask, mode, norm=None) -> float:
    rows = [[float(per_token[b, t]) for t in range(mask.shape[1]) if mask[b, t]]
            for b in range(mask.shape[0])]
    rows = [r for r in rows if r]
    if mode == "token-mean":
        return sum(sum(r) for r in rows) / sum(len(r) for r in rows)
    if mode == "sequence-mean-token-mean":
        return float(np.mean([sum(r) / len(r) for r in rows]))
    if mode == "seq-mean-token-sum":
        return float(np.mean([sum(r) for r in rows]))
    if mode == "sequence-mean-token-scale":
        return float(np.mean([sum(r) / (norm or mask.shape[1]) for r in rows]))
    raise ValueError(mode)


def clipped_per_token(ratio, advantages, eps_low, eps_high, dual_clip) -> np.ndarray:
    out = np.zeros(ratio.shape)
    for b in range(ratio.shape[0]):
        for t in range(ratio.shape[1]):
            a = advantages[b] if np.ndim(advantages) == 1 else advantages[b, t]
            rho = ratio[b, t]
            loss = max(-a * rho, -a * min(max(rho, 1 - eps_low), 1 + eps_high))
            if dual_clip is not None and a < 0:
                loss = min(loss, -dual_clip * a)
            out[b, t] = loss
    return out


def kl(logps, ref_logps, estimator) -> np.ndarray:
    if estimator == "k1":
        return logps - ref_logps
    ratio = np.exp(ref_logps - logps)  # π_ref / π
    return ratio - np.log(ratio) - 1


def entropy(logits) -> np.ndarray:
    out = np.zeros(logits.shape[:-1])
    for ix in np.ndindex(*logits.shape[:-1]):
        logp = log_softmax(logits[ix])
        out[ix] = -np.sum(np.exp(logp) * logp)
    return out


def gae(rewards, values, mask, gamma, lam) -> tuple[np.ndarray, np.ndarray]:
    """GAE over each row's real tokens in order (masked-out positions are not time steps)."""
    advantages = np.zeros(rewards.shape)
    for b in range(rewards.shape[0]):
        steps = np.flatnonzero(mask[b])  # the row's time steps, in order
        running, next_value = 0.0, 0.0
        for t in reversed(steps):
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            running = delta + gamma * lam * running
            advantages[b, t] = running
            next_value = values[b, t]
    returns = np.where(mask, advantages + values, 0.0)
    return advantages, returns


def whiten(x, mask) -> np.ndarray:
    selected = np.asarray(x, np.float64)[np.asarray(mask, bool)]
    mean, var = selected.mean(), selected.var()
    return np.where(mask, (x - mean) / math.sqrt(var + 1e-8), 0.0)


def value_loss(values, old_values, returns, mask, clip) -> float:
    total = []
    for b, t in real_positions(mask):
        v, r = values[b, t], returns[b, t]
        clipped = min(max(v, old_values[b, t] - clip), old_values[b, t] + clip)
        total.append(0.5 * max((v - r) ** 2, (clipped - r) ** 2))
    return float(np.mean(total))


# --------------------------------------------------------------------------- schedules


def learning_rate(step, lr, warmup, total, kind, min_ratio) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (total - warmup))
    if kind == "constant":
        return lr
    if kind == "linear":
        return lr * (1 - (1 - min_ratio) * progress)
    return lr * (min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * progress)) / 2)

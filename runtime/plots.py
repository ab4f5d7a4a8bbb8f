"""PNG plots of a run: one figure per stage (a panel per metric) and a bar chart per eval block.

matplotlib is imported inside the drawing functions (Agg backend, no display needed), so
importing this module costs nothing and `tnx lint` never pays for it.

Which panels a stage gets comes from ``PANELS``: a panel is drawn when the stage's
metrics hold one of its keys. Held-out rows (``eval.jsonl``) are drawn on the panel of the
same key, as points joined by a dashed line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Panel:
    title: str
    keys: tuple[str, ...]  # the first key the rows hold is drawn
    log_scale: bool = False


# Order = top to bottom. RL keys match the rl stages' metrics (compiler/stages/grpo.py, ppo.py):
# the per-step `reward` mean, `kl_ref` (KL to the reference; distill logs `kl`), `clip_fraction`;
# agent stages add `agent/*` (runtime/rl_agent.py).
PANELS: tuple[Panel, ...] = (
    Panel("loss", ("loss",)),
    Panel("token accuracy", ("accuracy",)),
    Panel("reward", ("reward",)),
    Panel("DPO reward margin", ("rewards/margin",)),
    Panel("KL", ("kl_ref", "kl")),
    Panel("clip fraction", ("clip_fraction",)),
    Panel("episodes with a working tool call", ("agent/tool_success",)),  # agent stages
    Panel("turns per episode", ("agent/turns",)),
    Panel("learning rate", ("lr",)),
)


def _series(rows: Sequence[Row], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows holding a finite number under ``key``."""
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, int | float) and math.isfinite(value) and "step" in row:
            steps.append(float(row["step"]))
            values.append(float(value))
    return steps, values


def panels_for(rows: Sequence[Row], held_out: Sequence[Row] = ()) -> list[tuple[Panel, str]]:
    """The panels a stage's rows can fill, each with the key it draws."""
    found = []
    for panel in PANELS:
        key = next((k for k in panel.keys if _series(rows, k)[0] or _series(held_out, k)[0]), None)
        if key is not None:
            found.append((panel, key))
    return found


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never open a window, work without a display
    import matplotlib.pyplot as plt

    return plt


def plot_stage(path: Path, title: str, rows: Sequence[Row], held_out: Sequence[Row] = (),
               planned_steps: int | None = None) -> bool:
    """Draw a stage's metrics to ``path``; False (nothing written) when no panel has data."""
    panels = panels_for(rows, held_out)
    if not panels:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 2.3 * len(panels) + 0.6),
                             sharex=True, squeeze=False)
    for ax, (panel, key) in zip(axes[:, 0], panels, strict=True):
        steps, values = _series(rows, key)
        if steps:
            # a stage a step or two in: a marker, since a line through one point is invisible
            ax.plot(steps, values, lw=1.4, color="tab:blue", label="train",
                    marker="o" if len(steps) < 3 else None, ms=4)
        eval_steps, eval_values = _series(held_out, key)
        if eval_steps:
            ax.plot(eval_steps, eval_values, "o--", ms=4, lw=1.2, color="tab:orange",
                    label="held-out")
        if eval_steps and steps:
            ax.legend(loc="best", fontsize=8, frameon=False)
        ax.set_ylabel(panel.title if key in panel.keys[:1] else f"{panel.title} ({key})",
                      fontsize=9)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    axes[-1, 0].xaxis.set_major_locator(plt.MaxNLocator(integer=True))  # steps are whole
    if planned_steps:  # a running stage shows how far along it is
        axes[-1, 0].set_xlim(0, max(planned_steps, max(_series(rows, "loss")[0], default=0)))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_eval(path: Path, title: str, metric: str, scores: Sequence[tuple[str, float]]) -> bool:
    """One bar per model; False when there are no scores."""
    if not scores:
        return False
    plt = _pyplot()
    names = [name for name, _ in scores]
    values = [value for _, value in scores]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(names) + 2), 3.6))
    bars = ax.bar(range(len(names)), values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize=8, padding=2)
    ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 3 else 0,
                  ha="right" if len(names) > 3 else "center", fontsize=9)
    top = max(values, default=0.0)
    low = min(0.0, min(values, default=0.0))
    ax.set_ylim(low, 1.05 if 0 <= top <= 1 else top * 1.15 + 1e-9)
    ax.set_ylabel(metric, fontsize=9)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True

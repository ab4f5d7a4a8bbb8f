"""`report.md` and its plots, built from what a run directory holds (jax-free).

Everything comes from files, so `tnx report RUN_DIR` works on a finished run, on a
run that is still training (a partial `metrics.jsonl`, even one with a torn last
line) and on one that was interrupted; `tnx run` calls the same code when it ends.

    report.md                 summary table, one section per stage with its plot, evals
    plots/<stage>.png         loss (+ held-out), reward / KL / clip fraction, learning rate
    plots/eval_<name>.png     one bar per model of each `eval` block
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunix_dsl.runtime.plots import panels_for, plot_eval, plot_stage

PLOTS_DIR = "plots"
FINISHED_MARKER = "tnx_finished.json"  # runtime/run_dir.py writes it last into output/


class ReportError(Exception):
    """A directory that is not a run directory; the message says what is missing."""


def read_rows(path: Path) -> list[dict[str, Any]]:
    """JSON rows of a `*.jsonl` file; unreadable lines (a torn last line of a running stage)
    are skipped, a missing file is no rows."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class StageReport:
    name: str
    kind: str
    planned_steps: int | None
    rows: list[dict[str, Any]]
    held_out: list[dict[str, Any]]
    finished: dict[str, Any] | None
    plot: str | None = None

    @property
    def status(self) -> str:
        if self.finished is not None:
            return "finished"
        return "running or interrupted" if self.rows else "not started"

    @property
    def steps_done(self) -> int:
        return int(self.rows[-1].get("step", len(self.rows))) if self.rows else 0


@dataclass
class RunReport:
    name: str
    stages: list[StageReport]
    evals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    eval_plots: dict[str, str] = field(default_factory=dict)


def collect(run_dir: Path) -> RunReport:
    """What the run directory holds, stage by stage in plan order."""
    plan = _read_json(run_dir / "plan.json")
    if not isinstance(plan, dict) or not isinstance(plan.get("stages"), list):
        raise ReportError(f"{run_dir}: no readable plan.json; is this a run directory "
                          "(`tnx run` writes one before the first step)?")
    stages = []
    for entry in plan["stages"]:
        directory = run_dir / "stages" / str(entry.get("name"))
        finished = _read_json(directory / "output" / FINISHED_MARKER)
        stages.append(StageReport(
            str(entry.get("name")), str(entry.get("kind", "?")), entry.get("steps"),
            read_rows(directory / "metrics.jsonl"), read_rows(directory / "eval.jsonl"),
            finished if isinstance(finished, dict) else None))
    evals = _read_json(run_dir / "evals.json")
    return RunReport(str(plan.get("pipeline", run_dir.name)), stages,
                     evals if isinstance(evals, dict) else {})


def _number(value: Any, digits: int = 4) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}g}"


def _count(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, int | float) and math.isfinite(value) else "–"


def _last(rows: list[dict[str, Any]], key: str) -> Any:
    return next((r[key] for r in reversed(rows) if key in r), None)


def _first(rows: list[dict[str, Any]], key: str) -> Any:
    return next((r[key] for r in rows if key in r), None)


def _stage_section(stage: StageReport) -> list[str]:
    lines = [f"## stage {stage.name} ({stage.kind})", ""]
    planned = f" of {stage.planned_steps}" if stage.planned_steps else ""
    lines.append(f"{stage.status}: {stage.steps_done}{planned} steps logged.")
    if not stage.rows and not stage.held_out:
        return [*lines, ""]
    lines += ["", "| metric | first | last | held-out (last) |", "|---|---|---|---|"]
    for _panel, key in panels_for(stage.rows, stage.held_out):
        lines.append(f"| {key} | {_number(_first(stage.rows, key))} | "
                     f"{_number(_last(stage.rows, key))} | {_number(_last(stage.held_out, key))} |")
    if stage.plot:
        lines += ["", f"![{stage.name}]({stage.plot})"]
    return [*lines, ""]


def _eval_section(name: str, results: list[dict[str, Any]], plot: str | None) -> list[str]:
    lines = [f"## eval {name}", "", "| model | score | rows |", "|---|---|---|"]
    lines += [f"| {r.get('model')} | {_number(r.get('score'))} | {r.get('rows', '–')} |"
              for r in results]
    examples = [(r.get("model"), e) for r in results for e in r.get("examples", [])[:1]]
    if examples:
        lines += ["", "First completion of each model:", "",
                  "| model | prompt | completion | score |", "|---|---|---|---|"]
        lines += [f"| {m} | `{_cell(e.get('prompt'))}` | `{_cell(e.get('completion'))}` | "
                  f"{_number(e.get('score'))} |" for m, e in examples]
    if plot:
        lines += ["", f"![eval {name}]({plot})"]
    return [*lines, ""]


def _cell(text: Any) -> str:
    """Text safe inside a markdown table cell (one line, no pipes or backticks)."""
    return str(text).replace("\n", "⏎").replace("|", "¦").replace("`", "'")[:80]


def render(report: RunReport) -> str:
    lines = [f"# run {report.name}", "",
             "| stage | kind | steps | first loss | last loss | wall s | tokens/s | status |",
             "|---|---|---|---|---|---|---|---|"]
    for s in report.stages:
        info = s.finished or {}
        planned = f"/{s.planned_steps}" if s.planned_steps and s.finished is None else ""
        lines.append(
            f"| {s.name} | {s.kind} | {s.steps_done}{planned} | {_number(_first(s.rows, 'loss'))} | "
            f"{_number(_last(s.rows, 'loss'))} | {_number(info.get('wall_s'), 3)} | "
            f"{_count(info.get('tokens_per_s'))} | {s.status} |")
    lines.append("")
    for stage in report.stages:
        lines += _stage_section(stage)
    for name, results in report.evals.items():
        lines += _eval_section(name, results, report.eval_plots.get(name))
    return "\n".join(lines)


def write_report(run_dir: str | Path) -> Path:
    """Draw the plots and write `report.md` into ``run_dir``; returns the report's path."""
    run_dir = Path(run_dir)
    report = collect(run_dir)
    plots = run_dir / PLOTS_DIR
    for stage in report.stages:
        relative = f"{PLOTS_DIR}/{_file_name(stage.name)}.png"
        title = f"stage {stage.name} ({stage.kind})"
        if stage.finished is None and stage.rows:
            title += f": step {stage.steps_done}" + (f" of {stage.planned_steps}"
                                                     if stage.planned_steps else "")
        if plot_stage(run_dir / relative, title, stage.rows, stage.held_out,
                      None if stage.finished else stage.planned_steps):
            stage.plot = relative
    for name, results in report.evals.items():
        relative = f"{PLOTS_DIR}/eval_{_file_name(name)}.png"
        scores = [(str(r.get("model")), float(r["score"])) for r in results
                  if isinstance(r.get("score"), int | float) and math.isfinite(r["score"])]
        if plot_eval(run_dir / relative, f"eval {name}", "mean score", scores):
            report.eval_plots[name] = relative
    plots.mkdir(exist_ok=True)
    path = run_dir / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(render(report))
    tmp.replace(path)  # a reader never sees half a report
    return path


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)

"""What a run shows while it works: the run log, per-stage progress, the summary table.

On a terminal each stage gets one rich progress bar (step/total, loss,
tokens/s, ETA) and log lines print above it; otherwise the same numbers come
as plain lines once per log window. Every line also goes, timestamped, to
the run directory's `run.log`. The bar advances at each dispatch without
touching the device; loss and tokens/s change when the executor fetches a
log window's metrics (there is no per-step host sync).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
)
from rich.table import Table


class RunLog:
    """A callable log: stdout (or above the live bar) plus `run.log`."""

    def __init__(self, log_file: Path | None = None, *, stream: TextIO | None = None,
                 emit: Callable[[str], None] | None = None):
        """`emit`: send lines there instead of to `stream` (no bar then; for embedding, tests)."""
        self.stream = stream or sys.stdout
        self.emit = emit
        self.interactive = emit is None and self.stream.isatty()
        self.console = Console(file=self.stream) if self.interactive else None
        self._file: TextIO | None = None
        if log_file is not None:
            self.attach(log_file)

    def attach(self, log_file: Path) -> None:
        self._file = log_file.open("a")
        self._file.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")

    def __call__(self, message: str) -> None:
        if self.emit is not None:
            self.emit(message)
        elif self.console is not None:
            self.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)
        if self._file is not None:
            self._file.write(f"{time.strftime('%H:%M:%S')} {message}\n")
            self._file.flush()

    def record(self, message: str) -> None:
        """Into `run.log` only (for messages already shown elsewhere, e.g. on stderr)."""
        if self._file is not None:
            self._file.write(f"{time.strftime('%H:%M:%S')} {message}\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class StageProgress:
    """One stage's progress: a rich bar on a terminal, plain lines per window otherwise."""

    def __init__(self, log: RunLog, name: str, total: int, start_step: int,
                 clock: Callable[[], float] = time.perf_counter, headline: str = "loss"):
        """`clock`: seconds, monotonic (a fake one in tests). `headline`: the metric the bar
        shows (RL stages: the mean reward)."""
        self.log, self.name, self.total, self.headline = log, name, total, headline
        self.start_step, self.step = start_step, start_step
        self.clock = clock
        self._origin: tuple[float, int] | None = None  # (time, step) of the first window
        self._bar: Progress | None = None
        if log.console is not None:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn(headline + " {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                TextColumn("eta {task.fields[eta]}"), console=log.console, transient=False,
            )
            self._task = self._bar.add_task(name, total=total, completed=start_step, loss="-", tps="-",
                                            eta="-")
            self._bar.start()

    def advance(self, step: int) -> None:
        """A dispatch finished (on the host's side): no device values needed."""
        self.step = step
        if self._bar is not None:
            self._bar.update(self._task, completed=step)

    def window(self, row: dict[str, float], tokens_per_s: float) -> None:
        """A log window's metrics arrived from the device."""
        eta = self.eta(int(row["step"]))
        shown = "?" if eta is None else f"{eta:.0f}s"
        line = (f"  {self.name} step {row['step']}/{self.total} {format_row(row)} "
                f"tok/s={tokens_per_s:,.0f} eta={shown}")
        if self._bar is None:
            self.log(line)
            return
        self._bar.update(self._task, loss=f"{row.get(self.headline, float('nan')):.4g}",
                         tps=f"{tokens_per_s:,.0f}", eta=shown)
        self.log.record(line)  # the bar is for the eyes; run.log keeps the numbers

    def eta(self, step: int) -> float | None:
        """Seconds left at the steady step time: measured from the first window on, so the
        compilation inside the first dispatch (minutes for a big model) never counts.
        None at the first window, which has no steady interval yet."""
        now = self.clock()
        if self._origin is None:
            self._origin = (now, step)
            return None
        t0, s0 = self._origin
        if step <= s0:
            return None
        return (now - t0) / (step - s0) * (self.total - step)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def format_row(row: dict[str, float]) -> str:
    keys = ("reward", "loss", "accuracy", "rewards/margin", "rewards/accuracy", "kl", "grad_norm")
    return " ".join(f"{k}={row[k]:.4g}" for k in keys if k in row)


@dataclass
class SummaryRow:
    stage: str
    kind: str
    steps: int
    final_loss: float
    wall_s: float
    tokens_per_s: float
    status: str  # "ran", "resumed at N", "cached"


HEADERS = ("stage", "kind", "steps", "final loss", "wall s", "tok/s", "status")


def _cells(r: SummaryRow) -> tuple[str, ...]:
    return (r.stage, r.kind, str(r.steps), f"{r.final_loss:.4f}", f"{r.wall_s:.1f}",
            f"{r.tokens_per_s:,.0f}", r.status)


def print_summary(rows: list[SummaryRow], log: RunLog) -> None:
    print_table("run summary", HEADERS, [_cells(r) for r in rows], log, prefix="summary")


def print_evals(name: str, metric: str, results: list[tuple[str, float, int]], log: RunLog) -> None:
    """An eval block's scores, one row per model (`results`: model, mean score, rows scored)."""
    headers = ("model", metric, "rows")
    print_table(f"eval {name}", headers, [(m, f"{s:.4f}", str(n)) for m, s, n in results], log,
                prefix=f"eval {name}", plain_title=True)


def print_table(title: str, headers: tuple[str, ...], rows: list[tuple[str, ...]], log: RunLog,
                prefix: str, plain_title: bool = False) -> None:
    """A table on the terminal: rich on a console, aligned columns on a plain stream (under
    `title` when `plain_title`), and `prefix: cells` lines through `emit` (embedding, tests)."""
    if log.emit is not None:
        for cells in rows:
            log(f"{prefix}: " + " ".join(cells))
        return
    if log.console is not None:
        table = Table(*headers, title=title)
        for cells in rows:
            table.add_row(*cells)
        log.console.print(table)
        return
    widths = [max(len(h), *(len(cells[i]) for cells in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    if plain_title:
        print(title, file=log.stream)
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), file=log.stream)
    for cells in rows:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)), file=log.stream)
    log.stream.flush()


def summary_markdown(rows: list[SummaryRow], title: str) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


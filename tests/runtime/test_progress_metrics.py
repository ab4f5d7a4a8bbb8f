"""Progress output and the summary: a rich bar on a terminal, plain lines otherwise, a run
log with timestamps, the summary table and report.md. (The metrics.jsonl and TensorBoard
contents of real runs are checked in test_resume.py, on the runs it makes anyway.)"""

from __future__ import annotations

import io
from pathlib import Path

from tests.runtime.durable_helpers import tensorboard_scalars
from tunix_dsl.runtime.metrics import MetricsSink, read_metrics
from tunix_dsl.runtime.progress import (
    RunLog,
    StageProgress,
    SummaryRow,
    print_summary,
    summary_markdown,
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


ROW = {"step": 5, "loss": 1.2345, "accuracy": 0.5, "grad_norm": 0.25}


def test_plain_progress_lines_carry_step_loss_throughput_and_eta(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = RunLog(tmp_path / "run.log", stream=stream)
    progress = StageProgress(log, "base", total=10, start_step=0)
    progress.advance(5)
    progress.window(ROW, tokens_per_s=1234.0)
    progress.close()
    log.close()
    line = stream.getvalue().strip()
    assert line.startswith("base step 5/10 loss=1.234 accuracy=0.5 grad_norm=0.25 tok/s=1,234 eta=")
    logged = (tmp_path / "run.log").read_text().splitlines()
    assert logged[0].startswith("==== ")  # one header per invocation
    assert logged[1].endswith(line) and logged[1][:8].count(":") == 2  # HH:MM:SS prefix


def test_terminal_gets_a_rich_bar_with_loss_and_throughput(tmp_path: Path) -> None:
    stream = Terminal()
    log = RunLog(tmp_path / "run.log", stream=stream)
    progress = StageProgress(log, "tune", total=8, start_step=2)
    progress.advance(6)
    progress.window({**ROW, "step": 6}, tokens_per_s=4321.0)
    progress.close()
    shown = stream.getvalue()
    assert "tune" in shown and "6/8" in shown and "loss 1.234" in shown and "4,321 tok/s" in shown
    assert "step 6/8 loss=" not in shown  # no plain lines on a terminal...
    log.close()
    assert "tune step 6/8 loss=1.234" in (tmp_path / "run.log").read_text()  # ...but in run.log


def test_summary_table_plain_and_markdown(tmp_path: Path) -> None:
    rows = [SummaryRow("base", "pretrain", 12, 2.3047, 7.8, 47.0, "resumed at 9"),
            SummaryRow("tune", "sft", 8, 1.75, 0.0, 0.0, "cached")]
    stream = io.StringIO()
    print_summary(rows, RunLog(stream=stream))
    lines = stream.getvalue().splitlines()
    assert lines[0].split() == ["stage", "kind", "steps", "final", "loss", "wall", "s", "tok/s", "status"]
    assert lines[1].split() == ["base", "pretrain", "12", "2.3047", "7.8", "47", "resumed", "at", "9"]
    assert lines[2].split()[-1] == "cached"
    markdown = summary_markdown(rows, "run p")
    assert "| tune | sft | 8 | 1.7500 | 0.0 | 0 | cached |" in markdown


def test_resumed_sink_keeps_steps_up_to_the_checkpoint_once(tmp_path: Path) -> None:
    jsonl, events = tmp_path / "metrics.jsonl", tmp_path / "events"
    sink = MetricsSink(jsonl, events)
    for step in range(1, 8):  # the interrupted run got to step 7
        sink.write({"step": step, "loss": 10.0 - step})
    sink.close()
    sink = MetricsSink(jsonl, events, resume_step=4)  # its last checkpoint was step 4
    assert [r["step"] for r in sink.history] == [1, 2, 3, 4]
    for step in range(5, 9):
        sink.write({"step": step, "loss": 20.0 - step})
    sink.close()
    assert [r["step"] for r in read_metrics(jsonl)] == list(range(1, 9))
    losses = tensorboard_scalars(events, "loss")
    assert losses == {**{s: 10.0 - s for s in range(1, 5)}, **{s: 20.0 - s for s in range(5, 9)}}


def test_a_fresh_start_clears_the_events_of_an_earlier_run(tmp_path: Path) -> None:
    jsonl, events = tmp_path / "metrics.jsonl", tmp_path / "events"
    sink = MetricsSink(jsonl, events)
    sink.write({"step": 1, "loss": 5.0})
    sink.write({"step": 2, "loss": 4.0})
    sink.close()
    sink = MetricsSink(jsonl, events)  # e.g. the stage's config changed: it runs from step 0
    sink.write({"step": 1, "loss": 3.0})
    sink.close()
    assert read_metrics(jsonl) == [{"step": 1, "loss": 3.0}]
    assert tensorboard_scalars(events, "loss") == {1: 3.0}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_eta_comes_from_steady_step_time_not_compilation(tmp_path: Path) -> None:
    lines: list[str] = []
    clock = FakeClock()
    progress = StageProgress(RunLog(emit=lines.append), "base", total=10, start_step=0, clock=clock)
    clock.now = 460.0  # the first dispatch compiled for 460 s and ran step 1
    progress.advance(1)
    progress.window({**ROW, "step": 1}, tokens_per_s=1.0)
    clock.now = 464.0  # then 1 s per step
    progress.advance(5)
    progress.window(ROW, tokens_per_s=1.0)
    clock.now = 466.0
    progress.window({**ROW, "step": 7}, tokens_per_s=1.0)
    etas = [line.rsplit("eta=", 1)[1] for line in lines]
    assert etas == ["?", "5s", "3s"]  # counting compilation would say 464 / 5 * 5 = 464s

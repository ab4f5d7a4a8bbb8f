"""Shared helpers of the durability tests: copying runs, comparing outputs, reading events."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

HERE = Path(__file__).parent
STAGES = ("base", "tune")


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu"}


def fresh_workdir(tmp: Path, pipeline: str = "durable_small.tnx") -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / pipeline, tmp / "p.tnx")
    return tmp


def interrupt(work: Path, stage: str, step: int, *, during_save: bool = False) -> subprocess.CompletedProcess:
    """Run the pipeline in a subprocess that SIGKILLs itself at (stage, step)."""
    cmd = [sys.executable, str(HERE / "interrupt_run.py"), str(work / "p.tnx"), str(work / "run"),
           stage, str(step)] + (["--during-save"] if during_save else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300)


def output_tensors(run_dir: Path, stage: str) -> dict[str, np.ndarray]:
    return hf_tensors(run_dir / "stages" / stage / "output")


def hf_tensors(directory: Path) -> dict[str, np.ndarray]:
    return load_file(directory / "model.safetensors")


def assert_bit_identical(a: Path, b: Path, stages: tuple[str, ...] = STAGES) -> None:
    for stage in stages:
        left, right = output_tensors(a, stage), output_tensors(b, stage)
        assert left.keys() == right.keys()
        for name in left:
            assert left[name].dtype == right[name].dtype == np.float32, name
            assert np.array_equal(left[name], right[name]), f"{stage}: {name} differs"


def metric_rows(run_dir: Path, stage: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stages" / stage / "metrics.jsonl").open()]


def tensorboard_scalars(events_dir: Path, tag: str) -> dict[int, float]:
    """step -> value of `tag` in the event files (TFRecord framing, Event protos).

    Honours purges like TensorBoard does: a session START at step s (what a
    writer opened with `purge_step=s` writes) drops the values at steps >= s.
    """
    from tensorboardX.proto import event_pb2

    out: dict[int, float] = {}
    for file in sorted(events_dir.glob("events.out.tfevents.*")):
        data = file.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos: pos + 8])
            record = data[pos + 12: pos + 12 + length]
            pos += 12 + length + 4
            event = event_pb2.Event.FromString(record)
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                out = {s: v for s, v in out.items() if s < event.step}
            for value in event.summary.value:
                if value.tag == tag:
                    out[event.step] = value.simple_value
    return out

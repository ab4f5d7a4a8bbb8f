"""The run directory (DESIGN.md §8) and which stages a run has left to do. jax-free.

    <run_dir>/
      plan.json                 stages in order: kind, fingerprint, inputs, steps
      source.json               the .tnx file this directory belongs to (one per directory)
      run.log                   every log line of every invocation, timestamped
      report.md, plots/         `tnx report` (runtime/report.py): summary, metric plots, evals
      evals.json                `eval` blocks: score per model, example completions
      stages/<name>/
        checkpoints/<step>/     orbax: `state` (TrainState) + `meta` (fingerprint, cursor)
        checkpoints_corrupt/    checkpoints whose files were missing or garbled, moved aside
        superseded/<fingerprint>/  the same layout for an earlier configuration of the stage
                                (moved aside when the stage's fingerprint changed or it was forced)
        output/                 the trained model as a Hugging Face directory, and
        output/tnx_finished.json  written last (atomic rename): fingerprint, summary, every
                                output file with its size (checked before the output is reused)
        output/adapter/         LoRA stages: the adapter weights alone (orbax), for `.adapter`
        metrics.jsonl           one JSON row per optimizer step
        eval.jsonl              held-out metrics (`eval_every` + `eval_data`), one row per eval
        events/                 TensorBoard event files

A stage output counts as finished only when its marker exists, records the
stage's current fingerprint and every file it lists is there with its size:
`save_hf` writes several files, and a kill in the middle (or a file deleted
later) must not leave something that looks done.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # run directories need only the IR's shape, not the checker's imports
    from tunix_dsl.check.ir import Pipeline, Stage

FINISHED_MARKER = "tnx_finished.json"


class RunDirError(Exception):
    """The run directory cannot be used (unwritable, full); the message names the fix."""


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write `path` so a reader sees the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class StageDir:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def marker(self) -> Path:
        return self.output / FINISHED_MARKER

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def events(self) -> Path:
        return self.root / "events"

    @property
    def superseded_root(self) -> Path:
        return self.root / "superseded"

    def superseded(self, fingerprint: str) -> StageDir:
        """Where the work of another configuration of this stage waits, same layout as this one."""
        return StageDir(self.superseded_root / fingerprint)

    def finished(self) -> dict[str, Any] | None:
        """The marker's contents when the output is complete, else None."""
        try:
            info = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def finished_with(self, fingerprint: str) -> dict[str, Any] | None:
        """The marker of a finished output of `fingerprint` whose files are all there, else None."""
        info = self.finished()
        if info is None or info.get("fingerprint") != fingerprint or self.output_problem(info):
            return None
        return info

    def output_problem(self, info: dict[str, Any]) -> str | None:
        """What is wrong with the files the marker lists (missing, other size), or None."""
        for name, size in sorted(info.get("files", {}).items()):
            try:
                actual = (self.output / name).stat().st_size
            except OSError:
                return f"output/{name} is missing"
            if actual != size:
                return f"output/{name} has {actual} bytes, not the {size} it was written with"
        return None

    def broken_output(self, fingerprint: str) -> str | None:
        """Why a finished output of `fingerprint` cannot be reused, when its files are damaged."""
        info = self.finished()
        if info is None or info.get("fingerprint") != fingerprint:
            return None
        return self.output_problem(info)

    def mark_finished(self, info: dict[str, Any]) -> None:
        """Write the marker last, listing every output file with its size (checked before reuse)."""
        files = {str(f.relative_to(self.output)): f.stat().st_size
                 for f in sorted(self.output.rglob("*")) if f.is_file() and f.name != FINISHED_MARKER}
        write_json_atomic(self.marker, {**info, "files": files})

    def unmark(self) -> None:
        """Invalidate the output before it is rewritten."""
        self.marker.unlink(missing_ok=True)

    def checkpoint_steps(self, fingerprint: str) -> list[int]:
        """Committed checkpoint steps of this fingerprint (read from their JSON meta, no orbax)."""
        if not self.checkpoints.is_dir():
            return []
        steps = []
        for entry in self.checkpoints.iterdir():
            if not entry.name.isdigit():
                continue  # orbax temporaries of unfinished saves
            try:
                meta = json.loads((entry / "meta" / "metadata").read_text())
            except (OSError, ValueError):
                continue
            if meta.get("fingerprint") == fingerprint:
                steps.append(int(entry.name))
        return sorted(steps)


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock: Any = None

    def stage(self, name: str) -> StageDir:
        return StageDir(self.root / "stages" / name)

    @property
    def log_file(self) -> Path:
        return self.root / "run.log"

    def prepare(self) -> None:
        """Create the directory, prove it writable and lock it, before any training starts.

        The lock (`flock` on `.lock`) keeps two runs out of one directory; the
        kernel drops it when its process dies, so a killed run leaves none behind.
        """
        try:
            (self.root / "stages").mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
            lock = (self.root / ".lock").open("a+")
        except OSError as err:
            raise RunDirError(
                f"run directory {self.root} is not writable ({err.strerror or err}); "
                "pass --run-dir with a writable location"
            ) from err
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise RunDirError(
                f"run directory {self.root} is in use by {holder}; wait for it to finish, stop it "
                "(it resumes later), or pass another --run-dir"
            ) from None
        lock.truncate(0)
        lock.write(f"tnx run (pid {os.getpid()})\n")
        lock.flush()
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing drops the flock
            self._lock = None

    def check_free_space(self, stage: str, needed_bytes: int) -> None:
        """Fail before training when the disk cannot hold the stage's checkpoints and output."""
        free = shutil.disk_usage(self.root).free
        if free < needed_bytes:
            raise RunDirError(
                f"stage `{stage}`: {_gib(free)} free under {self.root} but its checkpoints and "
                f"output need about {_gib(needed_bytes)}; free some space, lower "
                "keep_checkpoints, or pass --run-dir on a larger disk"
            )

    def write_plan(self, pipeline: Pipeline, fingerprints: dict[str, str], status: dict[str, str]) -> None:
        stages = []
        for stage in pipeline.stages:
            stages.append({
                "name": stage.name,
                "kind": stage.kind,
                "fingerprint": fingerprints[stage.name],
                "inputs": sorted(upstream_stages(stage)),
                "steps": stage.config.steps,
                "status": status[stage.name],
            })
        write_json_atomic(self.root / "plan.json", {
            "pipeline": pipeline.name,
            "order": [s.name for s in pipeline.stages],
            "stages": stages,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def derived_seed(root: int, name: str) -> int:
    """A stable per-stage seed from the pipeline seed and the stage's name."""
    return zlib.crc32(f"{root}:{name}".encode()) & 0x7FFFFFFF


def upstream_stages(stage: Stage) -> set[str]:
    """Names of the stages whose outputs `stage` reads."""
    return {ref.name for ref in stage.models.values() if ref.kind == "stage"}


def forced_closure(pipeline: Pipeline, forced: Iterable[str]) -> set[str]:
    """The forced stages and everything downstream of them."""
    out = set(forced)
    for stage in pipeline.stages:  # topological order
        if upstream_stages(stage) & out:
            out.add(stage.name)
    return out


@dataclass(frozen=True)
class StageStatus:
    """What a run will do with one stage."""

    action: str  # "cached" | "resume" | "run"
    resume_step: int = 0
    forced: bool = False
    superseded: bool = False  # the output or checkpoints wait under superseded/<fingerprint>/
    broken: str | None = None  # why a finished output of this configuration cannot be reused

    def describe(self) -> str:
        if self.action == "cached":
            return "cached"
        note = " (output damaged)" if self.broken else " (forced)" if self.forced else ""
        if self.action == "resume":
            return f"will resume at step {self.resume_step}{note}"
        return "will run (forced)" if self.forced else f"will run{note}"


def stage_status(directory: StageDir, fingerprint: str) -> StageStatus:
    """Cached (a finished, intact output of this fingerprint), resume (its checkpoints) or run,
    looking in the stage directory first and then among its superseded configurations."""
    aside = directory.superseded(fingerprint)
    for place, superseded in ((directory, False), (aside, True)):
        if place.finished_with(fingerprint):
            return StageStatus("cached", superseded=superseded)
    broken = directory.broken_output(fingerprint) or aside.broken_output(fingerprint)
    for place, superseded in ((directory, False), (aside, True)):
        if steps := place.checkpoint_steps(fingerprint):
            return StageStatus("resume", resume_step=steps[-1], superseded=superseded, broken=broken)
    return StageStatus("run", broken=broken)


def forced_status(directory: StageDir, fingerprint: str) -> StageStatus:
    """Run afresh; or resume an interrupted forced run: its checkpoints are in the directory
    while the output it will supersede still waits aside, finished."""
    if directory.superseded(fingerprint).finished_with(fingerprint) and not directory.finished_with(fingerprint):
        if steps := directory.checkpoint_steps(fingerprint):
            return StageStatus("resume", resume_step=steps[-1], forced=True)
    return StageStatus("run", forced=True)


def stage_statuses(pipeline: Pipeline, run_dir: RunDir, fingerprints: dict[str, str],
                   force: Iterable[str] = ()) -> dict[str, StageStatus]:
    """Per stage: what the run will do (`stage_status`, or `forced_status` when forced)."""
    forced = forced_closure(pipeline, force)
    return {
        stage.name: (forced_status if stage.name in forced else stage_status)(
            run_dir.stage(stage.name), fingerprints[stage.name])
        for stage in pipeline.stages
    }


def unknown_stages(pipeline: Pipeline, names: Iterable[str]) -> list[str]:
    known = {s.name for s in pipeline.stages}
    return [n for n in names if n not in known]


SOURCE_FILE = "source.json"  # which .tnx file a run directory belongs to


def _relative_source(root: Path, source: str) -> str:
    """`source` as seen from `root`: a project folder moved or copied whole keeps its runs."""
    return os.path.relpath(Path(source).resolve(), Path(root).resolve())


def source_conflict(root: Path, source: str) -> str | None:
    """Why `root` must not be used for the pipeline in `source`, or None.

    Two `.tnx` files with the same `pipeline NAME` in one folder get the same
    default run directory; without this check each would discard the other's
    checkpoints and outputs as "configuration changed".
    """
    try:
        owner = json.loads((Path(root) / SOURCE_FILE).read_text()).get("file")
    except (OSError, ValueError, AttributeError):
        return None  # a new directory, or one from before the file was recorded
    if owner in (None, _relative_source(root, source)):
        return None
    owner_path = os.path.normpath(Path(root).resolve() / owner)
    if owner_path == str(Path(source).resolve()):
        # the same file by another relative route: a directory copied to another depth, whose
        # surplus `..` stop at the filesystem root
        return None
    return (f"run directory {root} belongs to {owner_path}, not {Path(source).resolve()} (two "
            ".tnx files would overwrite each other's checkpoints and outputs); pass --run-dir "
            "to give this one its own directory, or rename one of the pipelines (if the file "
            f"was moved or renamed, delete {Path(root) / SOURCE_FILE}). Nothing was changed")


def claim_source(root: Path, source: str) -> None:
    """Record `source` as the owner of `root`, refusing a directory another file owns."""
    conflict = source_conflict(root, source)
    if conflict:
        raise RunDirError(conflict)
    write_json_atomic(Path(root) / SOURCE_FILE, {"file": _relative_source(root, source)})

"""Finished work is moved aside, never deleted, until new work of the stage has succeeded. jax-free.

A stage directory holds the work of one configuration (one fingerprint): its
checkpoints, output, metrics, held-out evals and TensorBoard events. When a
stage starts work of another fingerprint (the configuration was edited) or is
forced, that work moves to `superseded/<old fingerprint>/`, in the same
layout. If the configuration comes back (the edit is undone), the run finds
it there: a finished output is reused (`cached`), checkpoints are resumed.
Nothing moves before the stage starts its new work, so a run that fails
earlier (a broken upstream, a data error) leaves the directory as it was.

A forced stage's previous output of the same fingerprint is removed only when
the new one is finished. Per stage, the newest `KEEP_SUPERSEDED`
configurations are kept, so repeated edits do not fill the disk.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tunix_dsl.runtime.run_dir import StageDir

# What belongs to one configuration of a stage (`checkpoints_corrupt/` and `superseded/` do not).
GENERATION = ("checkpoints", "output", "metrics.jsonl", "eval.jsonl", "events")
FINGERPRINT_FILE = "fingerprint"  # which configuration the stage directory holds
KEEP_SUPERSEDED = 3

Log = Callable[[str], None]


def recorded_fingerprint(directory: StageDir) -> str | None:
    """The configuration whose work the directory holds (older run directories: from the marker
    or the newest checkpoint)."""
    try:
        return (directory.root / FINGERPRINT_FILE).read_text().strip() or None
    except OSError:
        pass
    info = directory.finished()
    if info is not None and isinstance(info.get("fingerprint"), str):
        return info["fingerprint"]
    newest = _checkpoint_fingerprints(directory)
    return newest[max(newest)] if newest else None


def _checkpoint_fingerprints(directory: StageDir) -> dict[int, str]:
    out = {}
    if directory.checkpoints.is_dir():
        for entry in directory.checkpoints.iterdir():
            try:
                meta = json.loads((entry / "meta" / "metadata").read_text())
            except (OSError, ValueError):
                continue
            if entry.name.isdigit() and isinstance(meta, dict) and isinstance(meta.get("fingerprint"), str):
                out[int(entry.name)] = meta["fingerprint"]
    return out


def _holds_work(directory: StageDir) -> bool:
    return any((directory.root / name).exists() for name in GENERATION)


def move_aside(directory: StageDir, log: Log) -> None:
    """Move the directory's work to `superseded/<its fingerprint>/` (nothing is deleted, except
    unfinished work of a configuration that already has a finished output there)."""
    fingerprint = recorded_fingerprint(directory)
    if not _holds_work(directory):
        (directory.root / FINGERPRINT_FILE).unlink(missing_ok=True)
        return
    if fingerprint is None:  # work nobody can attribute (no marker, no readable checkpoint)
        fingerprint = "unknown"
    # Checkpoints of older configurations left in place by earlier versions go to their own place.
    for step, other in _checkpoint_fingerprints(directory).items():
        if other != fingerprint:
            _move(directory.checkpoints / str(step), directory.superseded(other).checkpoints / str(step))
    aside = directory.superseded(fingerprint)
    if _holds_work(aside):
        if aside.finished_with(fingerprint) and not directory.finished_with(fingerprint):
            _remove_work(directory)  # an unfinished attempt; the finished output stays aside
            (directory.root / FINGERPRINT_FILE).unlink(missing_ok=True)
            return
        _remove_work(aside)  # the newer of two attempts of one configuration wins
    for name in GENERATION:
        if (directory.root / name).exists():
            _move(directory.root / name, aside.root / name)
    (directory.root / FINGERPRINT_FILE).unlink(missing_ok=True)
    os.utime(aside.root)  # for pruning: the most recently superseded are kept
    log(f"  moved the previous work of stage `{directory.root.name}` (configuration {fingerprint}) "
        f"to {aside.root}")


def bring_back(directory: StageDir, fingerprint: str, log: Log) -> None:
    """Make `superseded/<fingerprint>/` the stage's current work again (the directory is empty)."""
    aside = directory.superseded(fingerprint)
    if not _holds_work(aside):
        return
    for name in GENERATION:
        if (aside.root / name).exists():
            _move(aside.root / name, directory.root / name)
    shutil.rmtree(aside.root, ignore_errors=True)
    _drop_if_empty(directory.superseded_root)
    log(f"  restored the work of stage `{directory.root.name}` for configuration {fingerprint} "
        f"from {aside.root}")


def start_work(directory: StageDir, fingerprint: str, *, fresh: bool, log: Log) -> None:
    """Just before a stage trains: the directory holds only `fingerprint`'s resumable work.

    Another configuration's work (all work, when starting `fresh` for a
    forced run) moves aside; this configuration's work comes back from aside;
    an unfinished or damaged output left by a killed run is dropped (the
    checkpoints remake it).
    """
    if fresh or recorded_fingerprint(directory) != fingerprint:
        move_aside(directory, log)
    if not fresh and not _holds_work(directory):
        bring_back(directory, fingerprint, log)
    if directory.output.exists() and directory.finished_with(fingerprint) is None:
        shutil.rmtree(directory.output)
    directory.root.mkdir(parents=True, exist_ok=True)
    (directory.root / FINGERPRINT_FILE).write_text(fingerprint + "\n")


def adopt(directory: StageDir, fingerprint: str, log: Log) -> None:
    """A finished output of `fingerprint` waits aside: make it current again (a cached stage)."""
    if recorded_fingerprint(directory) == fingerprint and not directory.finished_with(fingerprint):
        _remove_work(directory)  # an unfinished (e.g. forced, interrupted) attempt of the same config
    else:
        move_aside(directory, log)
    bring_back(directory, fingerprint, log)
    (directory.root / FINGERPRINT_FILE).write_text(fingerprint + "\n")


def finish_work(directory: StageDir, fingerprint: str, log: Log) -> None:
    """The stage's new output is finished: drop what it supersedes of the same configuration
    (a forced re-run's previous output) and all but the newest superseded configurations."""
    same = directory.superseded(fingerprint)
    if same.root.exists():
        shutil.rmtree(same.root)
        log(f"  removed the previous output of stage `{directory.root.name}` (superseded by this run)")
    _drop_if_empty(directory.superseded_root)
    if not directory.superseded_root.is_dir():
        return
    kept = sorted((p for p in directory.superseded_root.iterdir() if p.is_dir()),
                  key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in kept[KEEP_SUPERSEDED:]:
        shutil.rmtree(old)
        log(f"  removed {old} (only the {KEEP_SUPERSEDED} newest superseded configurations are kept)")


def _drop_if_empty(path: Path) -> None:
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()


def _remove_work(directory: StageDir) -> None:
    for name in GENERATION:
        path = directory.root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _move(source: Path, destination: Path) -> None:
    """Rename `source` to `destination` (same file system: never a copy). Callers move newer work
    over older work of the same configuration, so an existing destination is replaced."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.is_dir():
        shutil.rmtree(destination)
    os.replace(source, destination)

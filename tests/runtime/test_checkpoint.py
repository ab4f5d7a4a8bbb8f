"""Checkpoints (orbax): bit-exact round trip of a TrainState with typed PRNG keys, keep-N,
atomicity, fallback from a truncated checkpoint, sharded restore; run-directory checks."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.runtime.checkpoint_state import abstract_of, host_leaves, make_state
from tests.runtime.durable_helpers import HERE, fresh_workdir, subprocess_env
from tunix_dsl.runtime import checkpoint as checkpoint_module
from tunix_dsl.runtime.checkpoint import (
    CheckpointMismatch,
    CheckpointRestoreError,
    StageCheckpoints,
)
from tunix_dsl.runtime.metrics import read_metrics
from tunix_dsl.runtime.run_dir import RunDir, RunDirError, StageDir


def saved(directory: Path, steps: list[int], keep: int = 5, log: list[str] | None = None) -> StageCheckpoints:
    checkpoints = StageCheckpoints(directory, keep=keep, log=(log.append if log is not None else print))
    for step in steps:
        checkpoints.save(step, make_state(step), {"fingerprint": "fp", "cursor": step * 4})
    checkpoints.wait()
    return checkpoints


def restore(checkpoints: StageCheckpoints, fingerprint: str = "fp"):
    state = make_state(0)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    return checkpoints.restore_latest(abstract_of(state), shardings, fingerprint)


def test_round_trip_is_bit_exact_with_keys_optimizer_state_and_cursor(tmp_path: Path) -> None:
    restored = restore(saved(tmp_path / "checkpoints", [1, 2]))
    assert restored is not None and restored.step == 2 and restored.meta["cursor"] == 8
    original = make_state(2)
    assert jax.tree.structure(restored.state) == jax.tree.structure(original)
    for a, b in zip(host_leaves(original), host_leaves(restored.state), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    key = restored.state.rest["rngs"]["dropout"]["key"].get_value()
    assert jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)  # a typed key again


def test_keeps_only_the_newest_n(tmp_path: Path) -> None:
    checkpoints = saved(tmp_path / "checkpoints", [1, 2, 3, 4], keep=2)
    assert checkpoints.steps() == [3, 4]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["3", "4"]


def test_unfinished_write_is_never_taken_for_a_checkpoint(tmp_path: Path) -> None:
    saved(tmp_path / "checkpoints", [1]).close()
    # What a kill during an orbax save leaves behind: the step under its temporary name.
    shutil.copytree(tmp_path / "checkpoints" / "1", tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp")
    assert StageDir(tmp_path).checkpoint_steps("fp") == [1]
    restored = restore(StageCheckpoints(tmp_path / "checkpoints", keep=5))
    assert restored is not None and restored.step == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax aborted reads
def test_truncated_latest_falls_back_to_the_previous_with_a_warning(tmp_path: Path) -> None:
    saved(tmp_path / "checkpoints", [1, 2]).close()
    files = [p for p in (tmp_path / "checkpoints" / "2" / "state").rglob("*") if p.is_file()]
    biggest = max(files, key=lambda p: p.stat().st_size)
    os.truncate(biggest, biggest.stat().st_size // 2)
    log: list[str] = []
    restored = restore(StageCheckpoints(tmp_path / "checkpoints", keep=5, log=log.append))
    assert restored is not None and restored.step == 1
    assert np.array_equal(host_leaves(restored.state)[2], host_leaves(make_state(1))[2])
    assert len(log) == 1 and log[0].startswith(f"warning: checkpoint {(tmp_path / 'checkpoints' / '2').resolve()} is unreadable")
    assert (tmp_path / "checkpoints_corrupt" / "2").is_dir() and not (tmp_path / "checkpoints" / "2").exists()


CORRUPTIONS = {
    "meta-item-missing": lambda step: shutil.rmtree(step / "meta"),
    "array-metadata-deleted": lambda step: (step / "state" / "_METADATA").unlink(),
    "sharding-file-garbled": lambda step: (step / "state" / "_sharding").write_text(""),
    "meta-json-garbled": lambda step: (step / "meta" / "metadata").write_text("{not json"),
}


@pytest.mark.parametrize("corrupt", sorted(CORRUPTIONS))
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax aborted reads
def test_corrupt_files_are_moved_aside(tmp_path: Path, corrupt: str) -> None:
    saved(tmp_path / "checkpoints", [1, 2]).close()
    CORRUPTIONS[corrupt](tmp_path / "checkpoints" / "2")
    log: list[str] = []
    restored = restore(StageCheckpoints(tmp_path / "checkpoints", keep=5, log=log.append))
    assert restored is not None and restored.step == 1
    assert (tmp_path / "checkpoints_corrupt" / "2").is_dir() and "is unreadable" in log[0]


def wrapped(cause: BaseException) -> Exception:
    """What orbax raises for a failed array read: a bare Exception caused by the real error."""
    try:
        raise Exception("Encountered error while reading array index") from cause
    except Exception as err:  # noqa: BLE001 - building the chain
        return err


@pytest.mark.parametrize(("error", "corrupt"), [
    (wrapped(ValueError("DATA_LOSS: Error reading local file")), True),
    (wrapped(ValueError("OUT_OF_RANGE: Error opening \"zarr\" driver")), True),
    (ValueError('FAILED_PRECONDITION: Error reading local file "_sharding": Invalid JSON'), True),
    (FileNotFoundError(2, "No such file"), True),
    (wrapped(MemoryError()), False),
    (ValueError("INVALID_ARGUMENT: a bug in a spec"), False),
    (PermissionError(13, "Permission denied"), False),
    (KeyError("x"), False),
])
def test_only_read_errors_count_as_corruption(error: BaseException, corrupt: bool) -> None:
    assert checkpoint_module.is_corruption(error) is corrupt


@pytest.mark.parametrize(("error", "raised"), [
    (MemoryError("cannot allocate"), CheckpointRestoreError),
    (wrapped(MemoryError("cannot allocate")), CheckpointRestoreError),
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 123 bytes"), CheckpointRestoreError),
    (PermissionError(13, "Permission denied"), CheckpointRestoreError),
    (TypeError("a bug in the restore code"), TypeError),
])
def test_failures_that_are_not_corruption_keep_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, raised: type
) -> None:
    saved(tmp_path / "checkpoints", [1, 2]).close()

    def fail(_tree: object) -> None:
        raise error

    monkeypatch.setattr(checkpoint_module.jax, "block_until_ready", fail)
    log: list[str] = []
    with pytest.raises(raised) as caught:
        restore(StageCheckpoints(tmp_path / "checkpoints", keep=5, log=log.append))
    where = str((tmp_path / "checkpoints" / "2").resolve())
    assert where in (str(caught.value) if raised is CheckpointRestoreError else log[-1])
    assert "the checkpoint is kept" in (str(caught.value) + " ".join(log))
    assert (tmp_path / "checkpoints" / "2").is_dir() and not (tmp_path / "checkpoints_corrupt").exists()


def test_a_state_of_other_shapes_is_a_configuration_message_not_corruption(tmp_path: Path) -> None:
    saved(tmp_path / "checkpoints", [1]).close()
    state = make_state(0)
    wider = dataclasses.replace(state, trainable=jax.tree.map(
        lambda x: jnp.zeros((9, *x.shape[1:]), x.dtype), state.trainable))
    checkpoints = StageCheckpoints(tmp_path / "checkpoints", keep=5)
    with pytest.raises(CheckpointMismatch, match=r"is intact but does not fit this stage's program: "
                                                 r"`trainable/\w+/value` is \[\d+(, 16)?\] float32 in the "
                                                 r"checkpoint and \[9(, 16)?\] float32 now .*--force"):
        checkpoints.restore_latest(abstract_of(wider), jax.tree.map(lambda x: x.sharding, wider), "fp")
    assert (tmp_path / "checkpoints" / "1").is_dir() and not (tmp_path / "checkpoints_corrupt").exists()


def test_checkpoints_of_another_fingerprint_are_ignored(tmp_path: Path) -> None:
    log: list[str] = []
    checkpoints = saved(tmp_path / "checkpoints", [1], log=log)
    assert restore(checkpoints, fingerprint="other") is None
    assert "belongs to another configuration" in log[-1]
    assert StageDir(tmp_path).checkpoint_steps("other") == []


def test_sharded_state_restores_into_its_shardings(tmp_path: Path) -> None:
    env = {**subprocess_env(), "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = subprocess.run([sys.executable, str(HERE / "checkpoint_state.py"), str(tmp_path / "checkpoints")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sharded roundtrip ok" in out.stdout


# ---------------------------------------------------------------- run directory


def test_finished_marker_is_checked_against_the_fingerprint(tmp_path: Path) -> None:
    stage = RunDir(tmp_path).stage("s")
    stage.output.mkdir(parents=True)
    assert stage.finished_with("a") is None
    stage.mark_finished({"fingerprint": "a", "steps": 3})
    assert stage.finished_with("a") == {"fingerprint": "a", "steps": 3, "files": {}}
    assert stage.finished_with("b") is None
    assert [p.name for p in stage.output.iterdir()] == ["tnx_finished.json"]  # no temporaries
    stage.unmark()
    assert stage.finished() is None


def test_unwritable_run_dir_fails_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tunix_dsl.runtime.cli_commands import main as tnx

    work = fresh_workdir(tmp_path, "durable_three.tnx")
    (tmp_path / "a_file").write_text("")
    code = tnx("run", [str(work / "p.tnx"), "--run-dir", str(tmp_path / "a_file" / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"run directory {tmp_path / 'a_file' / 'run'} is not writable" in err and "--run-dir" in err


def test_too_little_disk_space_fails_before_the_first_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunix_dsl.api import load
    from tunix_dsl.runtime import run_dir
    from tunix_dsl.runtime.executor import Executor

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(run_dir.shutil, "disk_usage", lambda _path: usage(10**9, 10**9 - 1000, 1000))
    work = fresh_workdir(tmp_path, "durable_three.tnx")
    steps: list[int] = []
    executor = Executor(load(str(work / "p.tnx")), work / "run", log=lambda _m: None,
                        on_dispatch=lambda _s, n: steps.append(n))
    with pytest.raises(RunDirError, match=r"stage `base`: 0.00 GiB free under .* need about"):
        executor.run()
    assert steps == []


def test_a_torn_metrics_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]


def test_a_failing_checkpoint_write_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoints = StageCheckpoints(tmp_path / "checkpoints", keep=2)

    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints.manager, "save", disk_full)
    with pytest.raises(RunDirError, match=r"cannot write a checkpoint under .*No space left on device.*"
                                          r"earlier checkpoints are intact"):
        checkpoints.save(1, make_state(1), {"fingerprint": "fp", "cursor": 4})


def test_a_run_directory_in_use_is_refused(tmp_path: Path) -> None:
    first, second = RunDir(tmp_path / "run"), RunDir(tmp_path / "run")
    first.prepare()
    with pytest.raises(RunDirError, match=r"is in use by tnx run \(pid \d+\)"):
        second.prepare()
    first.release()
    second.prepare()  # free again once the first run ends (or dies: flock goes with the process)
    second.release()


def test_a_checkpoint_of_per_layer_blocks_says_blocks_are_stacked_now(tmp_path: Path) -> None:
    """Checkpoints written before decoder blocks were stored stacked (`layers/0/...`) are kept,
    with a message naming the change, when the program now holds `layers/...` [L, ...]."""
    state = make_state(0)
    kernel = jnp.ones((4, 3), jnp.float32)
    per_layer = dataclasses.replace(state, trainable={"layers": {0: {"w": kernel}, 1: {"w": kernel}}})
    stacked = dataclasses.replace(state, trainable={"layers": {"w": jnp.stack([kernel, kernel])}})
    checkpoints = StageCheckpoints(tmp_path / "checkpoints", keep=5)
    checkpoints.save(1, per_layer, {"fingerprint": "fp", "cursor": 0})
    checkpoints.wait()
    with pytest.raises(CheckpointMismatch, match=r"stores the decoder blocks one by one .*--force"):
        checkpoints.restore_latest(abstract_of(stacked), jax.tree.map(lambda x: x.sharding, stacked),
                                   "fp")
    assert (tmp_path / "checkpoints" / "1").is_dir()

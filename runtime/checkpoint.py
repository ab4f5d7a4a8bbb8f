"""Stage checkpoints with orbax: the whole train state plus where the data stream stands.

A checkpoint of step `n` is the directory `checkpoints/<n>/` holding two
orbax items: `state` (every array of the `TrainState` — trainable
parameters, optimizer state, step counter, RNG state in `rest`) and `meta`
(JSON: the stage fingerprint, the step, the data cursor, tokens seen).
Given the cursor, `BatchStream` reproduces every later batch bit-exactly, so
restoring both continues the stage exactly where it stood.

The state is saved as a nested dict of arrays keyed by the pytree's key
paths (so nnx `Variable` nodes and optax namedtuples never reach orbax's
type handlers) and unflattened against the live program's tree structure on
restore. Typed PRNG keys are stored as their raw key data.

With several processes (`runtime/distributed.py`) every process saves and
restores its own shards of the same step (orbax's multi-process mode);
process 0 commits the step and alone moves a corrupt one aside.

Atomicity is orbax's: a step is written under a temporary name and renamed
when complete (`CheckpointManager` ignores unfinished temporaries and cleans
them up). Saves are asynchronous: `save` returns once the arrays are copied
off the device; `wait` blocks until the files are committed. A checkpoint
whose files are missing, truncated or garbled is moved aside to
`checkpoints_corrupt/` with a warning naming it, and the previous one is
tried; any other restore failure (out of memory, a state that no longer fits
the program, a bug) leaves the checkpoint in place and stops with a message.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec

from tunix_dsl.compiler.tree_paths import key_name
from tunix_dsl.runtime.distributed import on_primary
from tunix_dsl.runtime.run_dir import RunDirError

META_ITEM, STATE_ITEM = "meta", "state"


@dataclass
class Restored:
    step: int
    state: Any  # the TrainState, in the program's shardings
    meta: dict[str, Any]


def _is_prng_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def flatten_state(state: Any) -> tuple[dict[str, Any], Any]:
    """`state` as a nested dict `{path part: ... : array}` and its treedef."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(state)
    nested: dict[str, Any] = {}
    for path, leaf in with_paths:
        parts = [key_name(e) for e in path] or ["value"]
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if parts[-1] in node:
            raise ValueError(f"state path {'/'.join(parts)} is not unique")
        node[parts[-1]] = leaf
    return nested, treedef


def _leaves_in_order(nested: dict[str, Any], template: Any) -> list[Any]:
    with_paths, _ = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for path, _leaf in with_paths:
        node = nested
        for part in [key_name(e) for e in path] or ["value"]:
            node = node[part]
        out.append(node)
    return out


def _raw_keys(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_prng_key(x) else x, tree)


def _abstract_target(abstract_state: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the program's shardings; PRNG keys as raw uint32 data."""

    def one(leaf: jax.ShapeDtypeStruct, sharding: Any) -> jax.ShapeDtypeStruct:
        if _is_prng_key(leaf):
            data = jax.eval_shape(jax.random.key_data, leaf)
            if isinstance(sharding, NamedSharding):  # the key-data axis is replicated
                sharding = NamedSharding(sharding.mesh, PartitionSpec(*sharding.spec))
            return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

    return jax.tree.map(one, abstract_state, shardings)


def _key_impls(state: Any) -> dict[str, str]:
    """Path -> PRNG implementation name of every typed key (a restore target cannot tell)."""
    with_paths, _ = jax.tree_util.tree_flatten_with_path(state)
    return {jax.tree_util.keystr(path): str(jax.random.key_impl(leaf))
            for path, leaf in with_paths if _is_prng_key(leaf)}


def _rewrap_keys(restored: Any, abstract_state: Any, impls: dict[str, str]) -> Any:
    def one(path: Any, value: Any, leaf: Any) -> Any:
        if _is_prng_key(leaf):
            return jax.random.wrap_key_data(value, impl=impls[jax.tree_util.keystr(path)])
        return value

    return jax.tree_util.tree_map_with_path(one, restored, abstract_state)


def state_nbytes(abstract_state: Any) -> int:
    """Bytes of one checkpoint's arrays (the global sizes)."""
    return sum(int(np.prod(x.shape)) * np.dtype(_raw_dtype(x)).itemsize for x in jax.tree.leaves(abstract_state))


def _raw_dtype(x: Any) -> Any:
    return np.uint32 if _is_prng_key(x) else x.dtype


class StageCheckpoints:
    """The checkpoints of one stage: save every so often, restore the newest good one."""

    def __init__(self, directory: Path, *, keep: int, log: Callable[[str], None] = print,
                 asynchronous: bool = True):
        self.directory = Path(directory).resolve()
        self.log = log
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True,
            enable_async_checkpointing=asynchronous,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=(STATE_ITEM, META_ITEM))

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Start saving `state` as step `step` (returns once the arrays are off the device)."""
        nested, _ = flatten_state(_raw_keys(state))
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(**{
                    STATE_ITEM: ocp.args.StandardSave(nested),
                    META_ITEM: ocp.args.JsonSave({**meta, "step": step, "prng_impls": _key_impls(state)}),
                }),
                force=True,
            )
        except Exception as err:  # noqa: BLE001 - disk full, permissions, I/O: one clear message
            raise self._write_error(err) from err

    def wait(self) -> None:
        """Block until every started save is committed."""
        try:
            self.manager.wait_until_finished()
        except Exception as err:  # noqa: BLE001 - an asynchronous write failed
            raise self._write_error(err) from err

    def _write_error(self, err: BaseException) -> RunDirError:
        return RunDirError(
            f"cannot write a checkpoint under {self.directory} ({type(err).__name__}: "
            f"{_short_reason(err)}); earlier checkpoints are intact — free disk space or fix "
            "permissions, then run the same command to resume"
        )

    def read_meta(self, step: int) -> dict[str, Any]:
        restored = self.manager.restore(step, args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()}))
        return dict(restored[META_ITEM])

    def restore_latest(self, abstract_state: Any, shardings: Any, fingerprint: str) -> Restored | None:
        """The newest checkpoint of this fingerprint that restores cleanly, or None.

        `abstract_state` is the program's TrainState as ShapeDtypeStructs and
        `shardings` its `state_shardings`: arrays come back in those shardings.
        A checkpoint that is corrupt (missing, truncated or garbled files) is
        moved aside with a warning and the previous one is tried. Any other
        failure leaves the checkpoint where it is: a state whose shapes differ
        from the program's raises `CheckpointMismatch`, an out-of-memory or a
        permission problem `CheckpointRestoreError`, and anything else (a bug)
        propagates after a log line saying the checkpoint was kept.
        """
        target, _ = flatten_state(_abstract_target(abstract_state, shardings))
        treedef = jax.tree.structure(abstract_state)
        for step in reversed(self.steps()):
            try:
                self._check_items(step)
                meta = self.read_meta(step)
                if meta.get("fingerprint") != fingerprint:
                    self.log(f"  checkpoint {self.directory / str(step)} belongs to another "
                             "configuration of this stage; ignored")
                    continue
                self._check_layout(step, target)
                restored = self.manager.restore(step, args=ocp.args.Composite(**{
                    STATE_ITEM: ocp.args.StandardRestore(target),
                }))[STATE_ITEM]
                jax.block_until_ready(restored)
            except CheckpointMismatch:
                raise
            except Exception as err:  # noqa: BLE001 - sorted below: only corruption is moved aside
                if is_corruption(err):
                    self.quarantine(step, err)
                    continue
                raise self._not_corrupt(step, err) from err
            # Outside the try: `_check_layout` proved every path present, so a failure here is a bug.
            leaves = _leaves_in_order(restored, abstract_state)
            state = _rewrap_keys(jax.tree.unflatten(treedef, leaves), abstract_state,
                                 meta.get("prng_impls", {}))
            return Restored(step, state, meta)
        return None

    def _check_items(self, step: int) -> None:
        missing = [item for item in (STATE_ITEM, META_ITEM) if not (self.directory / str(step) / item).is_dir()]
        if missing:
            raise CorruptCheckpoint(f"item `{missing[0]}` is missing")

    def _check_layout(self, step: int, target: dict[str, Any]) -> None:
        """The saved arrays have the program's paths, shapes and dtypes (read from orbax's metadata).

        A differing layout is not corruption: the checkpoint is intact and belongs to a program
        that changed (`CheckpointMismatch`).
        """
        path = self.directory / str(step)
        saved = ocp.StandardCheckpointHandler().metadata(path / STATE_ITEM)
        saved_tree = getattr(saved, "tree", saved)
        want = _layout(target)
        have = _layout(saved_tree)
        if want == have:
            return
        if _per_layer(have) and not _per_layer(want):
            raise CheckpointMismatch(
                f"checkpoint {path} stores the decoder blocks one by one (`layers/0/...`, written "
                "by tunix-dsl before blocks were stored stacked along a layer axis); this version "
                "stores them stacked and cannot resume it. The checkpoint is kept; finish the "
                "stage with the tunix-dsl that wrote it, or pass --force with this stage to start "
                "it over (its checkpoints are moved aside, not deleted)")
        differs = sorted(set(want) ^ set(have)) or sorted(k for k in want if want[k] != have[k])
        first = differs[0]
        raise CheckpointMismatch(
            f"checkpoint {path} is intact but does not fit this stage's program: `{first}` is "
            f"{_describe(have.get(first))} in the checkpoint and {_describe(want.get(first))} now "
            f"({len(differs)} array(s) differ). The model or the tool changed without changing the "
            "stage's configuration. The checkpoint is kept; pass --force with this stage to start "
            "it over (its checkpoints are moved aside, not deleted)"
        )

    def _not_corrupt(self, step: int, err: BaseException) -> BaseException:
        """A restore failure that says nothing about the checkpoint: it stays where it is."""
        path = self.directory / str(step)
        reason = f"{type(err).__name__}: {_short_reason(err)}"
        chain = _chain(err)
        if any(isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e) for e in chain):
            return CheckpointRestoreError(
                f"out of memory while restoring checkpoint {path} ({reason}); the checkpoint is kept "
                "— free memory (a smaller batch or fewer devices sharing the host) and run again")
        if any(isinstance(e, OSError) for e in chain):
            return CheckpointRestoreError(
                f"cannot read checkpoint {path} ({reason}); the checkpoint is kept — fix the "
                "file system problem (permissions, mount) and run again")
        self.log(f"error: restoring checkpoint {path} failed ({reason}); the checkpoint is kept")
        return err

    def quarantine(self, step: int, err: BaseException) -> None:
        bad = self.directory / str(step)
        aside = self.directory.parent / "checkpoints_corrupt" / str(step)
        reason = _short_reason(err)
        self.log(f"warning: checkpoint {bad} is unreadable ({type(err).__name__}: {reason}); "
                 f"moved to {aside}, falling back to the previous checkpoint")

        def move() -> None:
            aside.parent.mkdir(parents=True, exist_ok=True)
            if aside.exists():
                shutil.rmtree(aside)
            shutil.move(str(bad), str(aside))

        on_primary(f"move checkpoint {bad} aside", move)  # every process saw the same damage
        self.manager.reload()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


class CorruptCheckpoint(Exception):
    """A checkpoint directory that is incomplete or unreadable (it is moved aside)."""


class CheckpointMismatch(Exception):
    """An intact checkpoint whose arrays do not fit the stage's program; the message names the fix."""


class CheckpointRestoreError(Exception):
    """Restoring failed for a reason outside the checkpoint (memory, permissions); it is kept."""


# tensorstore reports a file it cannot read or decode with these status codes (as a ValueError);
# FAILED_PRECONDITION only counts with "Error reading" (e.g. a garbled `_sharding` file).
_READ_ERROR_CODES = ("DATA_LOSS", "OUT_OF_RANGE", "NOT_FOUND")
_MISSING_FILE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, EOFError)


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and its causes: orbax wraps tensorstore's read errors in a bare `Exception`."""
    found: list[BaseException] = []
    while err is not None and err not in found:
        found.append(err)
        err = err.__cause__  # type: ignore[assignment]  # explicit `raise ... from`, not context
    return found


def is_corruption(err: BaseException) -> bool:
    """Whether a restore failure means the checkpoint's files are missing, truncated or garbled.

    Out-of-memory, permissions and bugs are not: moving a healthy checkpoint
    aside for them would throw away good work.
    """
    return any(_is_read_error(e) for e in _chain(err))


def _is_read_error(err: BaseException) -> bool:
    if isinstance(err, (CorruptCheckpoint, *_MISSING_FILE_ERRORS, json.JSONDecodeError, UnicodeDecodeError)):
        return True
    if isinstance(err, OSError):
        return err.errno == errno.EIO  # the disk could not read the bytes back
    if isinstance(err, ValueError):
        text = str(err)
        return text.startswith(_READ_ERROR_CODES) or (
            text.startswith("FAILED_PRECONDITION") and "Error reading" in text)
    return False


def _layout(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """`path -> (shape, dtype)` of a nested dict of arrays or array metadata."""
    with_paths, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
    return {"/".join(key_name(e) for e in path): (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
            for path, leaf in with_paths}


def _per_layer(layout: dict[str, tuple[tuple[int, ...], str]]) -> bool:
    """Whether a layout holds decoder blocks one by one (`.../layers/<i>/...`)."""
    return any(re.search(r"(^|/)layers/\d+/", name) for name in layout)


def _describe(entry: tuple[tuple[int, ...], str] | None) -> str:
    return "absent" if entry is None else f"{list(entry[0])} {entry[1]}"


def _short_reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    text = text.split(" See full TensorStore details")[0]  # the rest is a repr of the store spec
    return text if len(text) <= 200 else text[:197] + "..."

"""Multi-process runs on JAX's multi-controller runtime (`jax.distributed`).

Every host runs the same `tnx run` command. `initialize` joins the job: from
`--coordinator HOST:PORT --num-processes N --process-id I`, or from what JAX
detects in the environment (a TPU pod slice, SLURM, Open MPI, the
`JAX_COORDINATOR_ADDRESS` variables). On CPU, collectives go over gloo.

Then every process walks the same program: the same stages, the same data
order, the same steps, and the arrays are global (`jax.Array`s spanning the
devices of all processes). What differs per process:

- data: each process tokenizes the same rows but collates only the rows its
  own devices hold (`local_rows`), and the step's global batch is assembled
  with `jax.make_array_from_process_local_data` (`compiler/program.py`);
- files: process 0 alone writes the run directory's own files (lock,
  `plan.json`, `run.log`, metrics, outputs, exports, report); `on_primary`
  runs such a write on process 0 and makes the others wait for it and fail
  with its error. Checkpoints are written collectively by orbax;
- decisions that depend on the host (a signal arrived, the checkpoint timer
  ran out, the files a process sees) are agreed through a collective
  (`gather`, `agree`), so every process takes the same branch.

The run directory must be one file system that every host sees (NFS,
Filestore, a GCS FUSE mount): orbax writes each host's shards there, and the
check that the fingerprints and stage statuses agree fails otherwise.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

# environment variable -> how it shows a job of several processes (None: it does not)
Detector = Callable[[Mapping[str, str]], str | None]


class DistributedError(Exception):
    """Joining the job failed, or the processes disagree; the message names the fix."""


def _more_than_one(name: str, what: str) -> Detector:
    def detect(env: Mapping[str, str]) -> str | None:
        value = env.get(name, "")
        return f"{what} ({name}={value})" if value.isdigit() and int(value) > 1 else None
    return detect


def _tpu_hosts(env: Mapping[str, str]) -> str | None:
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    return f"a TPU slice with {len(hosts)} hosts (TPU_WORKER_HOSTNAMES)" if len(hosts) > 1 else None


def _coordinator(env: Mapping[str, str]) -> str | None:
    address = env.get("JAX_COORDINATOR_ADDRESS")
    return f"a jax.distributed job (JAX_COORDINATOR_ADDRESS={address})" if address else None


# What JAX's own cluster detection handles (jax.distributed.initialize() without arguments).
DETECTORS: tuple[Detector, ...] = (
    _tpu_hosts,
    _coordinator,
    _more_than_one("JAX_NUM_PROCESSES", "a jax.distributed job"),
    _more_than_one("SLURM_NTASKS", "a SLURM job of several tasks"),
    _more_than_one("OMPI_COMM_WORLD_SIZE", "an MPI job of several ranks"),
)
# Launchers JAX cannot join by itself: the job needs the explicit flags.
UNDETECTED: tuple[Detector, ...] = (
    _more_than_one("WORLD_SIZE", "a launcher that started several processes"),
)


def multi_process_job(env: Mapping[str, str]) -> str | None:
    """What in the environment says this process is one of several, or None."""
    for detect in (*DETECTORS, *UNDETECTED):
        found = detect(env)
        if found:
            return found
    return None


@dataclass(frozen=True)
class JobFlags:
    """`--coordinator HOST:PORT --num-processes N --process-id I` (all three, or none)."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def problem(self) -> str | None:
        given = [v is not None for v in (self.coordinator, self.num_processes, self.process_id)]
        if any(given) and not all(given):
            return ("--coordinator, --num-processes and --process-id go together: pass all three "
                    "(the same coordinator and count on every host, a different id on each)")
        if self.coordinator is None:
            return None
        host, _, port = self.coordinator.rpartition(":")
        if not host or not port.isdigit():
            return f"--coordinator {self.coordinator!r}: expected HOST:PORT, e.g. 10.0.0.2:1234"
        assert self.num_processes is not None and self.process_id is not None
        if self.num_processes < 1:
            return f"--num-processes {self.num_processes}: expected at least 1"
        if not 0 <= self.process_id < self.num_processes:
            return (f"--process-id {self.process_id}: expected 0 … {self.num_processes - 1} "
                    f"(one id per process of --num-processes {self.num_processes})")
        return None


def initialize(flags: JobFlags, env: Mapping[str, str] = os.environ) -> bool:
    """Join the multi-process job the flags or the environment describe; False when there is
    none (a single-process run). Call before anything touches jax's devices."""
    problem = flags.problem()
    if problem:
        raise DistributedError(problem)
    found = None if flags.coordinator else multi_process_job(env)
    if flags.coordinator is None and found is None:
        return False
    if flags.coordinator is None and any(detect(env) for detect in UNDETECTED) and not any(
            detect(env) for detect in DETECTORS):
        raise DistributedError(
            f"this process is one of several ({found}), which jax.distributed cannot detect by "
            "itself: pass --coordinator HOST:PORT --num-processes N --process-id I on every host")
    import jax

    # CPU processes exchange collectives over gloo (the default has none across processes).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        if flags.coordinator is not None:
            jax.distributed.initialize(flags.coordinator, flags.num_processes, flags.process_id)
        else:  # JAX reads JAX_COORDINATOR_ADDRESS itself, not the count and id beside it
            count, index = env.get("JAX_NUM_PROCESSES", ""), env.get("JAX_PROCESS_ID", "")
            jax.distributed.initialize(num_processes=int(count) if count.isdigit() else None,
                                       process_id=int(index) if index.isdigit() else None)
    except Exception as err:  # noqa: BLE001 - jax raises RuntimeError/ValueError/XlaRuntimeError
        where = f"coordinator {flags.coordinator}" if flags.coordinator else found
        raise DistributedError(
            f"could not join the multi-process job ({where}): {' '.join(str(err).split())[:300]}; "
            "check that every host runs the same command, that process 0 is reachable at the "
            "coordinator address, and that each process has its own --process-id") from err
    return True


def describe() -> str:
    """`process I of N: D local devices of T` (after `initialize`)."""
    import jax

    return (f"process {jax.process_index()} of {jax.process_count()}: "
            f"{jax.local_device_count()} local devices of {jax.device_count()}")


# ----------------------------------------------------------------------------- who does what

def process_count() -> int:
    import jax

    return int(jax.process_count())


def is_primary() -> bool:
    """Process 0: the one that writes the run directory's files and prints."""
    import jax

    return int(jax.process_index()) == 0


def _allgather(values: np.ndarray) -> np.ndarray:
    """`[processes, ...]`: every process's `values` (a collective: every process must call it)."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values))


def gather(values: Sequence[int]) -> np.ndarray:
    """`[processes, len(values)]`: every process's integers (a collective when several)."""
    if process_count() == 1:
        return np.asarray([values], np.int64)
    return _allgather(np.asarray(values, np.int64)).reshape(process_count(), len(values))


def agree(what: str, text: str) -> None:
    """Fail on every process when the processes see different `text` (fingerprints, statuses)."""
    if process_count() == 1:
        return
    digests = _allgather(np.asarray([zlib.crc32(text.encode())], np.int64))[:, 0]
    differing = [i for i, d in enumerate(digests) if d != digests[0]]
    if differing:
        raise DistributedError(
            f"the processes disagree on {what} (process {differing[0]} differs from process 0): "
            "every host must run the same command on the same .tnx file, data and code, with a "
            "run directory on a file system all hosts share")


_MESSAGE_BYTES = 2048


def _broadcast_text(text: str) -> str:
    """Process 0's `text` on every process (a collective)."""
    from jax.experimental import multihost_utils

    raw = np.zeros(_MESSAGE_BYTES, np.uint8)
    data = text.encode()[:_MESSAGE_BYTES]
    raw[: len(data)] = np.frombuffer(data, np.uint8)
    out = np.asarray(multihost_utils.broadcast_one_to_all(raw))
    return bytes(out[out != 0].astype(np.uint8)).decode(errors="replace")


def on_primary(what: str, write: Callable[[], T]) -> T | None:
    """Run `write` (a change to the run directory) on process 0 only; the others wait for it.

    When it fails, process 0 raises its own error and every other process a
    `DistributedError` quoting it, so no process waits forever for the rest.
    Returns `write`'s result on process 0, None elsewhere.
    """
    if process_count() == 1:
        return write()
    result: T | None = None
    failure: Exception | None = None
    if is_primary():
        try:
            result = write()
        except Exception as err:  # noqa: BLE001 - re-raised below, after the others know
            failure = err
    reason = "" if failure is None else (str(failure) or type(failure).__name__)
    message = _broadcast_text(reason)
    if failure is not None:
        raise failure
    if message:
        raise DistributedError(f"process 0 failed to {what}: {message}")
    return result


def barrier(name: str) -> None:
    """Wait until every process got here (no-op with one process)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# ----------------------------------------------------------------------------- arrays

def local_rows(mesh: Any, micro_batch: int) -> tuple[int, int]:
    """`[start, stop)`: the rows of each micro-batch that this process's devices hold.

    A micro-batch's example axis is split over the mesh's batch axes; the
    devices of one process hold a contiguous run of it (all of it when the
    batch axes do not cross processes).
    """
    from tunix_dsl.compiler.sharding import batch_sharding

    indices = batch_sharding(mesh, 1).addressable_devices_indices_map((micro_batch,)).values()
    rows = [index[0] if index else slice(None) for index in indices]  # None: the whole array
    spans = sorted({(r.start or 0, micro_batch if r.stop is None else r.stop) for r in rows})
    start, stop = spans[0][0], spans[-1][1]
    covered = sum(b - a for a, b in spans)
    if covered != stop - start:
        raise DistributedError(
            f"this process's devices hold rows {spans} of each micro-batch, not one run of rows: "
            "order the mesh so each host's devices are neighbours on the batch axes")
    return start, stop


def host_copy(tree: T) -> T:
    """`tree` with every array as numpy, gathered from all processes (a collective when several)."""
    import jax

    if process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


# ----------------------------------------------------------------------------- what is not built

def unsupported(pipeline: Any) -> str | None:
    """What of `pipeline` cannot run with several processes yet (checked before anything runs).

    RL stages and `eval` blocks run: every process generates and scores the whole
    batch (rewards on the host, compared across processes), and the device arrays
    take each process's shards. Two things stay single-process: a worker thread
    issuing collectives beside the main loop's (async rollout) could interleave them
    differently on each host, and tool calls (timeouts, latency) need not agree
    across hosts.
    """
    from tunix_dsl.schemas.stages import STAGE_KINDS

    for stage in pipeline.stages:
        if STAGE_KINDS[stage.kind].program != "rl":
            continue
        config = stage.config
        if getattr(config, "rollout", "sync") == "async":
            return (f"stage `{stage.name}`: rollout = \"async\" cannot run with several processes yet; "
                    "use rollout = \"sync\" for the multi-process job, or run the stage on one host "
                    "(its checkpoints and cached outputs are shared with multi-process runs)")
        if getattr(config, "environment", None) is not None:
            return (f"stage `{stage.name}`: an `environment` (multi-turn episodes with tools) cannot run "
                    "with several processes yet (a tool's answer or timeout may differ between hosts); "
                    "run the stage on one host (its checkpoints and cached outputs are shared with "
                    "multi-process runs)")
    for block in getattr(pipeline, "evals", ()):
        if block.config.environment is not None:
            return (f"eval `{block.name}`: an `environment` (episodes with tools) cannot run with "
                    "several processes yet (a tool's answer or timeout may differ between hosts); "
                    "run the pipeline on one host to score it with the tools")
    return None

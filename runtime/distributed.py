"""Multi-process jobs: recognised, and refused at start until the runtime supports them.

`tnx run` is single-process today: it does not call `jax.distributed.initialize`,
every process would feed the whole global batch, and all of them would write
metrics, logs and exports. Started as one process of many (a TPU pod slice
with several hosts, a SLURM or MPI job, an explicit JAX coordinator), it
stops before touching the run directory and says so, instead of running the
same pipeline N times side by side. `tnx plan --target` works for any slice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

# environment variable -> how it shows a job of several processes (None: it does not)
Detector = Callable[[Mapping[str, str]], str | None]


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


DETECTORS: tuple[Detector, ...] = (
    _tpu_hosts,
    _coordinator,
    _more_than_one("JAX_NUM_PROCESSES", "a jax.distributed job"),
    _more_than_one("SLURM_NTASKS", "a SLURM job of several tasks"),
    _more_than_one("OMPI_COMM_WORLD_SIZE", "an MPI job of several ranks"),
    _more_than_one("WORLD_SIZE", "a launcher that started several processes"),
)


def multi_process_job(env: Mapping[str, str]) -> str | None:
    """What in the environment says this process is one of several, or None."""
    for detect in DETECTORS:
        found = detect(env)
        if found:
            return found
    return None


def refusal(env: Mapping[str, str]) -> str | None:
    """The message `tnx run` stops with in a multi-process job, or None."""
    found = multi_process_job(env)
    if found is None:
        return None
    return (f"this process is one of several: {found}. `tnx run` is single-process in this "
            "version (no jax.distributed yet): run it on one host, with every device of that "
            "host in the mesh; `tnx plan --target tpu-…` sizes the stages for the whole slice")

"""`tnx run` and `tnx plan`: the commands that need jax; and `tnx report` (matplotlib only).

Both check the pipeline first, exactly like `tnx lint`: a pipeline with
errors never starts (exit 1, diagnostics printed with file:line:column).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `tnx --help` stays fast
    from tunix_dsl.check.ir import Pipeline
    from tunix_dsl.compiler.plan import StagePlan
    from tunix_dsl.grammar.diagnostics import Diagnostic
    from tunix_dsl.schemas.targets import Target

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2
# Not 0: `tnx run x.tnx && next-step` must not carry on with a pipeline that did not finish.
EXIT_INTERRUPTED = 3
EXIT_SECOND_INTERRUPT = 130  # from runtime/preemption.py: the shell's code for "killed by SIGINT"

EXIT_CODES = {
    "run": (
        (EXIT_OK, "every stage finished (or was cached); exports and evals written"),
        (EXIT_ERRORS, "the pipeline has errors, or a stage failed (the message names stage and fix)"),
        (EXIT_USAGE, "usage or I/O problem (bad arguments, unreadable .tnx file, a multi-process "
                     "job that could not be joined)"),
        (EXIT_INTERRUPTED, "interrupted by SIGTERM or Ctrl-C after saving a checkpoint; run the "
                           "same command to resume"),
        (EXIT_SECOND_INTERRUPT, "a second Ctrl-C: left at once without saving (the last checkpoint "
                                "stays valid)"),
    ),
    "report": (
        (EXIT_OK, "report.md and plots written"),
        (EXIT_USAGE, "not a run directory (no plan.json), or it cannot be written"),
    ),
    "plan": (
        (EXIT_OK, "planned"),
        (EXIT_ERRORS, "the pipeline has errors, or a stage cannot be planned"),
        (EXIT_USAGE, "usage or I/O problem (bad arguments, unreadable .tnx file)"),
    ),
}


def _parser(command: str) -> argparse.ArgumentParser:
    epilog = "exit status:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES[command])
    parser = argparse.ArgumentParser(prog=f"tnx {command}", epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="the .tnx pipeline")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a `param` (type-checked like source)")
    parser.add_argument("--run-dir", default=None,
                        help="run directory (default: <pipeline run_dir>/<pipeline name>)")
    parser.add_argument("--force", action="append", default=[], metavar="STAGE",
                        help="re-run STAGE (and the stages that consume it) even when cached")
    if command == "run":  # a multi-process job: the same command on every host, its own id each
        parser.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                            help="join a multi-process job whose process 0 listens at HOST:PORT "
                                 "(TPU pods and SLURM jobs are detected without it)")
        parser.add_argument("--num-processes", type=_count, default=None, metavar="N",
                            help="processes in the job (with --coordinator)")
        parser.add_argument("--process-id", type=_index, default=None, metavar="I",
                            help="this process's id, 0 … N-1 (with --coordinator)")
    if command == "plan":
        parser.add_argument("--format", choices=("text", "json"), default="text")
        parser.add_argument("--devices", type=_device_count, default=None,
                            help="plan for this many devices (default: the devices present)")
        parser.add_argument("--target", default="cpu", metavar="NAME",
                            help="cpu (this host) or a TPU slice: tpu-v4-8 … tpu-v4-4096, "
                                 "tpu-v5e-1 … tpu-v5e-256, tpu-v5p-8 … tpu-v5p-4096, "
                                 "tpu-v6e-1 … tpu-v6e-256 (needs the `tpu` extra)")
        parser.add_argument("--mesh", default=None, metavar="AXIS=SIZE,…",
                            help="override the pipeline's mesh block, e.g. data=2,fsdp=8")
    return parser


def _device_count(text: str) -> int:
    """`--devices N`: a whole number ≥ 1 (argparse turns the error into usage, exit 2)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a device count, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a device count of at least 1, got {count}")
    return count


def _count(text: str) -> int:
    """`--num-processes N`: a whole number ≥ 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a process count of at least 1, got {text!r}")
    return int(text)


def _index(text: str) -> int:
    """`--process-id I`: a whole number ≥ 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a process id (0, 1, …), got {text!r}")
    return int(text)


def _overrides(pairs: list[str]) -> dict[str, str] | None:
    from tunix_dsl.check.evaluate import split_override  # the one `--set` parser of every verb

    try:
        return dict(split_override(pair) for pair in pairs)
    except ValueError as err:
        print(f"--set: {err}", file=sys.stderr)
        return None


def _load_checked(args: argparse.Namespace) -> tuple[Pipeline | None, int]:
    from tunix_dsl.api import load
    from tunix_dsl.cli.render import render_text

    overrides = _overrides(args.set)
    if overrides is None:
        return None, EXIT_USAGE
    pipeline = load(args.file, overrides=overrides)
    if pipeline.diagnostics:
        print(render_text(pipeline.diagnostics, pipeline.sources, color=sys.stderr.isatty()), file=sys.stderr)
    if pipeline.io_error:
        return None, EXIT_USAGE
    if not pipeline.ok:
        return None, EXIT_ERRORS
    return pipeline, EXIT_OK


def run(argv: list[str]) -> int:
    args = _parser("run").parse_args(argv)
    from tunix_dsl.runtime.distributed import DistributedError, JobFlags, initialize, is_primary

    flags = JobFlags(args.coordinator, args.num_processes, args.process_id)
    if flags.problem():
        print(f"error: {flags.problem()}", file=sys.stderr)
        return EXIT_USAGE
    pipeline, code = _load_checked(args)
    if pipeline is None:
        return code
    from tunix_dsl.runtime.host_memory import cpu_host, reuse_freed_memory

    if cpu_host():  # before jax starts XLA's threads; see host_memory
        reuse_freed_memory()
    try:  # before anything asks jax for its devices
        initialize(flags)
    except DistributedError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    from tunix_dsl.runtime.executor import Executor
    from tunix_dsl.runtime.preemption import Preempted
    from tunix_dsl.runtime.preflight import PreflightError
    from tunix_dsl.runtime.progress import RunLog

    if not _mesh_fits(pipeline):
        return EXIT_ERRORS
    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(pipeline)
    # Process 0 alone prints progress and keeps run.log; the others stay quiet but for errors.
    log = RunLog() if is_primary() else RunLog(emit=lambda _line: None)
    try:
        Executor(pipeline, run_dir, log=log, force=args.force, export_root=_export_root(args)).run()
    except Preempted as stop:
        log(f"{stop}")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # Ctrl-C before the first stage took over the signal (loading, planning)
        log("interrupted before training started; nothing to save; run the same command to start")
        return EXIT_INTERRUPTED
    except PreflightError as err:
        print(err.render(color=sys.stderr.isatty()) + f"error: {err}", file=sys.stderr)
        return EXIT_ERRORS
    except _user_errors() as err:
        log.record(f"error: {err}")
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERRORS
    finally:
        log.close()
    if not is_primary():
        return EXIT_OK
    print(f"run directory: {run_dir}")
    print(f"report: {run_dir / 'report.md'}")  # the summary's last line: where to look next
    return EXIT_OK


def _mesh_fits(pipeline: Pipeline) -> bool:
    """The mesh on the devices present, checked like `tnx plan` does before anything trains:
    a batch that does not split is the lint diagnostic (TNX305), not an XLA error."""
    import jax

    from tunix_dsl.cli.render import render_text
    from tunix_dsl.runtime.planning import MeshDiagnostics, check_mesh

    try:
        check_mesh(pipeline, jax.device_count())
    except MeshDiagnostics as err:
        print(render_text(err.diagnostics, pipeline.sources, color=sys.stderr.isatty()),
              file=sys.stderr)
        return False
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return False
    return True


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the pipeline's inputs (data, files, configs): a message, not a traceback."""
    from tunix_dsl.data.datasets import DataError
    from tunix_dsl.data.tokenizers import TokenizerError
    from tunix_dsl.models.config import ModelConfigError
    from tunix_dsl.models.lora import LoraError
    from tunix_dsl.models.sampler import SamplingError
    from tunix_dsl.runtime.checkpoint import CheckpointMismatch, CheckpointRestoreError
    from tunix_dsl.runtime.executor import RunError
    from tunix_dsl.runtime.rewards import RewardError
    from tunix_dsl.runtime.run_dir import RunDirError
    from tunix_dsl.runtime.training import NonFiniteLoss

    found: list[type[BaseException]] = [
        DataError, ModelConfigError, LoraError, RunError, RunDirError, NonFiniteLoss, TokenizerError,
        RewardError, SamplingError, OSError, CheckpointMismatch, CheckpointRestoreError,
    ]
    from tunix_dsl.data.row_tools import RowToolsError
    from tunix_dsl.models.hf import ModelLoadError
    from tunix_dsl.runtime.agent_env import AgentError
    from tunix_dsl.runtime.distributed import DistributedError

    found += [ModelLoadError, DistributedError, AgentError, RowToolsError]
    return tuple(found)


def _export_root(args: argparse.Namespace) -> Path | None:
    """With --run-dir, relative export paths land in <run-dir>/exports/ (docs/running.md)."""
    return Path(args.run_dir) / "exports" if args.run_dir else None


def _default_run_dir(pipeline: Pipeline) -> Path:
    base = Path(pipeline.file).resolve().parent if pipeline.file else Path.cwd()
    root = Path(pipeline.settings.run_dir)
    return (root if root.is_absolute() else base / root) / pipeline.name


def plan(argv: list[str]) -> int:
    args = _parser("plan").parse_args(argv)
    from tunix_dsl.schemas.targets import TargetError, get_target

    try:
        target = get_target(args.target)
    except TargetError as err:
        print(f"error: --target: {err}", file=sys.stderr)
        return EXIT_USAGE
    if "jax" not in sys.modules:
        import os

        if args.devices:
            # On a CPU host, plan for N devices by letting XLA split the host into N.
            flag = f"--xla_force_host_platform_device_count={args.devices}"
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
        if target.is_tpu:
            # The TPU program is compiled for described devices; the host backend only
            # traces. Without this, an installed libtpu probes for local chips first.
            os.environ.setdefault("JAX_PLATFORMS", "cpu")
    pipeline, code = _load_checked(args)
    if pipeline is None:
        return code
    from tunix_dsl.cli.render import render_text
    from tunix_dsl.compiler.targets import TargetUnavailable, parse_mesh, target_devices
    from tunix_dsl.runtime.planning import (
        MeshDiagnostics,
        blocked_statuses,
        plan_pipeline,
        run_statuses,
    )

    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(pipeline)
    plan_errors: tuple[type[BaseException], ...] = (ValueError, *_user_errors())
    try:
        mesh = parse_mesh(args.mesh) if args.mesh else None
        devices = target_devices(target, args.devices)
    except (ValueError, TargetUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if _report(pipeline, _target_diagnostics(pipeline, target, len(devices), mesh)):
        return EXIT_ERRORS
    try:
        statuses = run_statuses(pipeline, run_dir, args.force)
        blocked = blocked_statuses(pipeline, run_dir, _export_root(args), statuses, color=sys.stderr.isatty())
        if blocked is not None and not blocked.plannable:  # `tnx run` would stop: say why per stage
            rows = [{"name": name, "status": status} for name, status in blocked.statuses.items()]
            print(json.dumps(rows, indent=2) if args.format == "json" else
                  "\n".join(f"{r['name']:<14}{r['status']}" for r in rows))
            return EXIT_ERRORS
        if blocked is not None:  # only downloads missing: plan from the presets, say "will not run"
            statuses = blocked.statuses
        plans = plan_pipeline(pipeline, devices=args.devices, target=target, mesh_spec=mesh)
    except MeshDiagnostics as err:  # the lint message (TNX305) for the resolved mesh
        print(render_text(err.diagnostics, pipeline.sources, color=sys.stderr.isatty()),
              file=sys.stderr)
        return EXIT_ERRORS
    except plan_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERRORS
    # a stage that does not fit, or a run that would stop at pre-flight: not a clean plan
    too_big = _report(pipeline, _fit_diagnostics(pipeline, plans)) or blocked is not None
    if args.format == "json":
        print(json.dumps([{**p.as_dict(), "status": statuses[p.name]} for p in plans], indent=2))
        return EXIT_ERRORS if too_big else EXIT_OK
    print(f"{'#':<3}{'stage':<14}{'kind':<15}{'trainable':>15}{'total':>15}{'tok/step':>10}"
          f"{'args':>10}{'temp':>10}{'peak/dev':>10}{'GFLOP/step':>12}  status")
    for i, p in enumerate(plans, 1):
        print(f"{i:<3}{p.name:<14}{p.kind:<15}{p.trainable_params:>15,}{p.total_params:>15,}"
              f"{p.tokens_per_step:>10,}{_mib(p.argument_bytes):>10}{_mib(p.temp_bytes):>10}"
              f"{_mib(p.peak_bytes):>10}{p.flops_per_step / 1e9:>12.2f}  {statuses[p.name]}")
    if target.is_tpu and plans:
        _print_fit(plans)
    where = (f"{target.name} ({plans[0].devices if plans else len(devices)} devices, compiled "
             f"by libtpu on this host)" if target.is_tpu
             else f"{plans[0].devices if plans else 0} device(s)")
    print(f"\nper-device bytes from XLA's memory analysis on {where}; no weights were allocated; "
          f"status against {run_dir}")
    return EXIT_ERRORS if too_big else EXIT_OK


def _target_diagnostics(pipeline: Pipeline, target: Target, devices: int,
                        mesh: Mapping[str, int] | None) -> list[Diagnostic]:
    from tunix_dsl.rules.target_checks import target_diagnostics

    return [d for d in target_diagnostics(pipeline, target, devices, mesh)
            if d.code != "TNX450" or mesh is not None or pipeline.settings.mesh.tensor == -1]


def _fit_diagnostics(pipeline: Pipeline, plans: list[StagePlan]) -> list[Diagnostic]:
    """TNX380 at every stage whose step does not fit one device of the target."""
    from tunix_dsl.rules.registry import diagnostic

    found = []
    for plan in plans:
        if plan.fits is not False:
            continue
        stage = pipeline.stage(plan.name)
        assert stage is not None, "a plan row for every stage of the pipeline"
        hints = ["more `fsdp` in the mesh (shards parameters and optimizer state)"]
        if plan.trainable_params == plan.total_params:
            hints.append("`lora = lora(rank = 16)` or QLoRA (`quantize`) instead of full tuning")
        hints += ["`remat = true` on the model", "a smaller micro-batch through `grad_accum`"]
        found.append(diagnostic(
            "TNX380", f"stage `{plan.name}` needs {_gib(plan.needed_bytes)} per device; "
            f"{plan.target} has {_gib(plan.hbm_bytes)}", stage.name_span,
            label=f"analytic floor {_gib(plan.floor_bytes)}"
                  + (f"; {plan.note}" if plan.note else ""),
            help="try " + ", ".join(hints)))
    return found


def _report(pipeline: Pipeline, diagnostics: list[Diagnostic]) -> bool:
    """Print diagnostics like lint does; True when one of them is an error."""
    if not diagnostics:
        return False
    from tunix_dsl.cli.render import render_text
    from tunix_dsl.grammar.diagnostics import Severity

    print(render_text(diagnostics, pipeline.sources, color=sys.stderr.isatty()), file=sys.stderr)
    return any(d.severity is Severity.ERROR for d in diagnostics)


def _print_fit(plans: list[StagePlan]) -> None:
    hbm = plans[0].hbm_bytes
    print(f"\nper device on {plans[0].target} ({_gib(hbm)} HBM each):")
    print(f"{'#':<3}{'stage':<14}{'program':<9}{'mesh':<18}{'args':>10}{'out':>10}{'temp':>10}"
          f"{'code':>9}{'needed':>10}{'floor':>10}{'ratio':>7}{'margin':>11}  fits")
    for i, p in enumerate(plans, 1):
        mesh = "×".join(f"{a[0]}{n}" for a, n in (p.mesh or {}).items() if n > 1) or "1"
        def xla(n: int, compiled: bool = p.compiled) -> str:
            return _gib(n) if compiled else "—"

        ratio = p.needed_bytes / p.floor_bytes if p.floor_bytes else 0.0
        print(f"{i:<3}{p.name:<14}{p.program:<9}{mesh:<18}{xla(p.argument_bytes):>10}"
              f"{xla(p.output_bytes):>10}{xla(p.temp_bytes):>10}{xla(p.generated_code_bytes):>9}"
              f"{_gib(p.needed_bytes):>10}{_gib(p.floor_bytes):>10}{ratio:>7.2f}"
              f"{_gib(p.margin_bytes or 0):>11}  {'yes' if p.fits else 'NO'}"
              + (f"  ({p.note})" if p.note else ""))


def _gib(n: int) -> str:
    """Bytes for a memory table: MiB below one GiB, else GiB."""
    return f"{n / 2**20:.1f}M" if abs(n) < 2**30 else f"{n / 2**30:.2f}G"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}M"


def report(argv: list[str]) -> int:
    """`tnx report RUN_DIR`: report.md + plots from the files alone (a running stage too)."""
    epilog = "exit status:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES["report"])
    parser = argparse.ArgumentParser(prog="tnx report", epilog=epilog,
                                     description="Write report.md and plots/ into a run directory.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="the run directory (runs/<pipeline>/, or --run-dir of tnx run)")
    args = parser.parse_args(argv)
    from tunix_dsl.runtime.report import ReportError, write_report

    try:
        path = write_report(args.run_dir)
    except (ReportError, OSError) as err:
        print(f"tnx report: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"report: {path}")
    return EXIT_OK


COMMANDS = {"run": run, "plan": plan, "report": report}


def main(command: str, argv: list[str]) -> int:
    return COMMANDS[command](argv)

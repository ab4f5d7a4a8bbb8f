"""`tnx run` and `tnx plan`: the commands that need jax.

Both check the pipeline first, exactly like `tnx lint`: a pipeline with
errors never starts (exit 1, diagnostics printed with file:line:column).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"tnx {command}")
    parser.add_argument("file", help="the .tnx pipeline")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a `param` (type-checked like source)")
    parser.add_argument("--run-dir", default=None,
                        help="run directory (default: <pipeline run_dir>/<pipeline name>)")
    parser.add_argument("--force", action="append", default=[], metavar="STAGE",
                        help="re-run STAGE (and the stages that consume it) even when cached")
    if command == "plan":
        parser.add_argument("--format", choices=("text", "json"), default="text")
        parser.add_argument("--devices", type=int, default=None,
                            help="plan for this many devices (default: the devices present)")
        parser.add_argument("--target", default="cpu", metavar="NAME",
                            help="cpu (this host) or a TPU slice: tpu-v4-8 … tpu-v4-4096, "
                                 "tpu-v5e-1 … tpu-v5e-256, tpu-v5p-8 … tpu-v5p-4096, "
                                 "tpu-v6e-1 … tpu-v6e-256 (needs the `tpu` extra)")
        parser.add_argument("--mesh", default=None, metavar="AXIS=SIZE,…",
                            help="override the pipeline's mesh block, e.g. data=2,fsdp=8")
    return parser


def _overrides(pairs: list[str]) -> dict[str, str] | None:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            print(f"--set expects NAME=VALUE, got {pair!r}", file=sys.stderr)
            return None
        out[name.strip()] = value
    return out


def _load_checked(args: argparse.Namespace) -> tuple[Any | None, int]:
    from tunix_dsl.api import load
    from tunix_dsl.render import render_text

    overrides = _overrides(args.set)
    if overrides is None:
        return None, EXIT_USAGE
    pipeline = load(args.file, overrides=overrides)
    if pipeline.diagnostics:
        print(render_text(pipeline.diagnostics, pipeline.sources, color=sys.stderr.isatty()), file=sys.stderr)
    if getattr(pipeline, "io_error", False):
        return None, EXIT_USAGE
    if not pipeline.ok:
        return None, EXIT_ERRORS
    return pipeline, EXIT_OK


def run(argv: list[str]) -> int:
    args = _parser("run").parse_args(argv)
    import os

    from tunix_dsl.runtime.distributed import refusal

    refused = refusal(os.environ)
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return EXIT_USAGE
    pipeline, code = _load_checked(args)
    if pipeline is None:
        return code
    from tunix_dsl.runtime.executor import Executor
    from tunix_dsl.runtime.preemption import Preempted
    from tunix_dsl.runtime.progress import RunLog

    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(pipeline)
    log = RunLog()
    try:
        Executor(pipeline, run_dir, log=log, force=args.force).run()
    except Preempted as stop:
        log(f"{stop}")
        return EXIT_OK
    except _user_errors() as err:
        log.record(f"error: {err}")
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERRORS
    finally:
        log.close()
    print(f"run directory: {run_dir}")
    return EXIT_OK


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the pipeline's inputs (data, files, configs): a message, not a traceback."""
    from tunix_dsl.datasets import DataError
    from tunix_dsl.model_config import ModelConfigError
    from tunix_dsl.models.lora import LoraError
    from tunix_dsl.models.sampler import SamplingError
    from tunix_dsl.runtime.executor import RunError
    from tunix_dsl.runtime.rewards import RewardError
    from tunix_dsl.runtime.run_dir import RunDirError
    from tunix_dsl.runtime.training import NonFiniteLoss
    from tunix_dsl.tokenizers import TokenizerError

    found: list[type[BaseException]] = [
        DataError, ModelConfigError, LoraError, RunError, RunDirError, NonFiniteLoss, TokenizerError,
        RewardError, SamplingError, OSError,
    ]
    from tunix_dsl.models.hf import ModelLoadError

    found.append(ModelLoadError)
    return tuple(found)


def _default_run_dir(pipeline: Any) -> Path:
    base = Path(pipeline.file).resolve().parent if pipeline.file else Path.cwd()
    root = Path(pipeline.settings.run_dir)
    return (root if root.is_absolute() else base / root) / pipeline.name


def plan(argv: list[str]) -> int:
    args = _parser("plan").parse_args(argv)
    from tunix_dsl.targets import TargetError, get_target

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
    from tunix_dsl.compiler.targets import TargetUnavailable, parse_mesh, target_devices
    from tunix_dsl.runtime.planning import plan_pipeline, run_statuses

    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(pipeline)
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
        plans = plan_pipeline(pipeline, devices=args.devices, target=target, mesh_spec=mesh)
    except (ValueError, *_user_errors()) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERRORS
    too_big = _report(pipeline, _fit_diagnostics(pipeline, plans))
    if args.format == "json":
        print(json.dumps([{**p.as_dict(), "status": statuses[p.name]} for p in plans], indent=2))
        return EXIT_ERRORS if too_big else EXIT_OK
    print(f"{'#':<3}{'stage':<14}{'kind':<9}{'trainable':>15}{'total':>15}{'tok/step':>10}"
          f"{'args':>10}{'temp':>10}{'peak/dev':>10}{'GFLOP/step':>12}  status")
    for i, p in enumerate(plans, 1):
        print(f"{i:<3}{p.name:<14}{p.kind:<9}{p.trainable_params:>15,}{p.total_params:>15,}"
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


def _target_diagnostics(pipeline: Any, target: Any, devices: int, mesh: Any) -> list[Any]:
    from tunix_dsl.rules.target_checks import target_diagnostics

    return [d for d in target_diagnostics(pipeline, target, devices, mesh)
            if d.code != "TNX450" or mesh is not None or pipeline.settings.mesh.tensor == -1]


def _fit_diagnostics(pipeline: Any, plans: list[Any]) -> list[Any]:
    """TNX380 at every stage whose step does not fit one device of the target."""
    from tunix_dsl.rules.registry import diagnostic

    found = []
    for plan in plans:
        if plan.fits is not False:
            continue
        stage = pipeline.stage(plan.name)
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


def _report(pipeline: Any, diagnostics: list[Any]) -> bool:
    """Print diagnostics like lint does; True when one of them is an error."""
    if not diagnostics:
        return False
    from tunix_dsl.diagnostics import Severity
    from tunix_dsl.render import render_text

    print(render_text(diagnostics, pipeline.sources, color=sys.stderr.isatty()), file=sys.stderr)
    return any(d.severity is Severity.ERROR for d in diagnostics)


def _print_fit(plans: list[Any]) -> None:
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


COMMANDS = {"run": run, "plan": plan}


def main(command: str, argv: list[str]) -> int:
    return COMMANDS[command](argv)

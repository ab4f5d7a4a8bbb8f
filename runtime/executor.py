"""Running a checked pipeline: stages in topological order, durable across interruptions.

The executor walks the pipeline: it decides what each stage does (cached,
resume, run; see `runtime/run_dir.py` for the directory layout and the caching
rule), resolves each stage's model inputs (a model declaration is created or
loaded straight into its shardings; a stage output is the upstream stage's
trained model, kept in memory or loaded lazily from its finished `output/`),
applies LoRA/QLoRA when asked, and hands the stage to its lifecycle
(`runtime/stage_lifecycle.py`: restore, train, save the output and mark it
finished; `runtime/rl_run.py` for RL kinds). After the stages come the exports
and the eval blocks.

Before anything runs, `runtime/preflight.py` checks every location the run
reads or writes; and a model leaves memory after its last reader (`release`).
In a multi-process job every process runs this same code; the run
directory's files are written by process 0 alone (`on_primary`, see
`runtime/distributed.py`).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from flax import nnx

from tunix_dsl.check.ir import Eval, Export, Pipeline, Stage
from tunix_dsl.compiler import sharding
from tunix_dsl.compiler.fingerprint import stage_fingerprints
from tunix_dsl.compiler.model_init import init_model, load_model, place
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.models import Transformer
from tunix_dsl.runtime.distributed import (
    agree,
    describe,
    is_primary,
    on_primary,
    process_count,
    unsupported,
)
from tunix_dsl.runtime.evaluation import EvalResult, evaluate_model
from tunix_dsl.runtime.planning import check_mesh
from tunix_dsl.runtime.preemption import Preempted, StopSignals
from tunix_dsl.runtime.preflight import PreflightError, export_destination, preflight
from tunix_dsl.runtime.progress import RunLog, SummaryRow, print_evals, print_summary
from tunix_dsl.runtime.resources import Resources, resolve_path, stage_inputs, stage_seed
from tunix_dsl.runtime.rewards import build_reward
from tunix_dsl.runtime.run_dir import (
    RunDir,
    RunDirError,
    StageStatus,
    claim_source,
    derived_seed,
    source_conflict,
    stage_statuses,
    unknown_stages,
)
from tunix_dsl.runtime.stage_lifecycle import (
    ADAPTER_DIR,
    StageResult,
    cached_result,
    run_stage,
    save_model,
    save_params,
)
from tunix_dsl.runtime.superseded import adopt
from tunix_dsl.runtime.training import DispatchHook
from tunix_dsl.schemas.base import ModelRef
from tunix_dsl.schemas.sources import HFModelSource
from tunix_dsl.schemas.stages import STAGE_KINDS


class RunError(Exception):
    """A run that cannot go on; the message names the stage and the fix."""


class Executor:
    def __init__(
        self,
        pipeline: Pipeline,
        run_dir: Path,
        *,
        log: Callable[[str], None] | None = None,
        devices: list[Any] | None = None,
        force: Iterable[str] = (),
        on_dispatch: DispatchHook | None = None,
        export_root: Path | None = None,
    ):
        """`force`: stages to re-run even when cached (their dependents re-run too);
        `on_dispatch(stage, step)`: called after every dispatch (progress hooks, tests);
        `export_root`: where relative export paths go (`--run-dir`), else the .tnx file's folder."""
        self.pipeline = pipeline
        self.run_dir = Path(run_dir)
        self.export_root = export_root
        self.layout = RunDir(self.run_dir)
        self.fingerprints = stage_fingerprints(pipeline)
        self.force = tuple(force)
        self.on_dispatch = on_dispatch
        self.resources = Resources(pipeline)
        self.base_dir = self.resources.base_dir
        self.tokenizer_for = self.resources.tokenizer_for
        self.config_for = self.resources.config_for
        self.settings = pipeline.settings
        self.log = log if isinstance(log, RunLog) else RunLog(emit=log)
        self._owns_log = not isinstance(log, RunLog)  # then `run` closes its run.log itself
        if not is_primary():  # process 0 alone prints and keeps run.log
            self.log, self._owns_log = RunLog(emit=lambda _line: None), True
        mesh_spec = self.settings.mesh.axes()
        self.mesh = sharding.make_mesh(mesh_spec, devices)
        self.outputs: dict[str, Transformer] = {}
        self._decl_models: dict[str, Transformer] = {}
        # Reads of each live model still to come (`stage:NAME` / `decl:NAME`), from the
        # dataflow of what this run will do; at zero the model leaves device memory.
        self._reads_left: Counter[str] | None = None

    # ------------------------------------------------------------------ resources

    def model(self, ref: ModelRef) -> Transformer:
        """The live model a reference names (created on first use)."""
        if ref.kind == "stage":
            if ref.output != "model":
                raise RunError(f"`{ref}` is an adapter, not a model; use `{ref.name}.model`")
            if ref.name not in self.outputs:
                self.outputs[ref.name] = self.load_output(ref)
            return self.outputs[ref.name]
        if ref.name not in self._decl_models:
            spec = self.pipeline.models[ref.name].spec
            cfg = self.config_for(ref)
            if isinstance(spec, HFModelSource):
                path = resolve_path(spec.path, self.base_dir)
                self.log(f"loading {ref.name} from {path}")
                model = load_model(path, self.mesh, dtype=cfg.dtype, remat=cfg.remat, param_dtype=cfg.param_dtype)
            else:
                model = init_model(cfg, self.mesh, derived_seed(self.settings.seed, "model:" + ref.name))
            self._decl_models[ref.name] = model
        return self._decl_models[ref.name]

    def load_output(self, ref: ModelRef) -> Transformer:
        """A finished upstream stage's output, read back from its HF directory.

        Float safetensors round-trip exactly, so this is bit-identical to the
        model the stage left in memory.
        """
        directory = self.layout.stage(ref.name)
        if directory.finished_with(self.fingerprints[ref.name]) is None:
            raise RunError(f"stage `{ref.name}` has no finished output in {directory.output}")
        cfg = self.config_for(ref)
        self.log(f"  loading {ref.name}.model from {directory.output}")
        return load_model(directory.output, self.mesh, dtype=cfg.dtype, remat=cfg.remat, param_dtype=cfg.param_dtype)

    # ------------------------------------------------------------------ stages

    def stage_seed(self, stage: Stage) -> int:
        return stage_seed(self.pipeline, stage)

    def stage_models(self, stage: Stage, seed: int) -> StageModels:
        """Clones of the stage's input models, with adapters applied to the trained one."""
        inputs = stage_inputs(stage)
        models: dict[str, Transformer] = {}
        for name, ref in inputs.refs.items():
            models[name] = nnx.clone(self.model(ref))
            self.release(ref)  # the clone is the stage's; the original may go now
        adapter = stage.adapter
        shared_reference = inputs.shared_reference  # then the base with adapters off: no copy
        if inputs.same_start and not shared_reference:
            models["reference"] = nnx.clone(models[inputs.trained])
        info = STAGE_KINDS[stage.kind]
        if adapter is not None:
            from tunix_dsl.models.lora import LoraSpec, apply_lora

            spec = LoraSpec(
                rank=adapter.rank, alpha=adapter.alpha, dropout=adapter.dropout,
                targets=tuple(adapter.targets), quantize=adapter.quantize,
            )
            trained = apply_lora(models[info.trained], spec, nnx.Rngs(params=seed, dropout=seed + 1))
            models[info.trained] = place(trained, self.mesh)
        return StageModels(models, lora=adapter is not None, shared_reference=shared_reference, seed=seed)

    # ------------------------------------------------------------------ memory

    def hold_output(self, stage: str, model: Transformer) -> None:
        """Keep a finished stage's model in memory when a later stage, eval or export reads it."""
        if self._reads_left is None or self._reads_left[f"stage:{stage}"] > 0:
            self.outputs[stage] = model

    def model_reads(self, statuses: dict[str, StageStatus]) -> Counter[str]:
        """How often this run will read each model from memory: stages that run (cached ones
        read nothing), exports of a model (an adapter export copies files), eval models."""
        reads: Counter[str] = Counter()
        for stage in self.pipeline.stages:
            if statuses[stage.name].action != "cached":
                reads.update(_key(ref) for ref in stage_inputs(stage).refs.values())
        for export in self.pipeline.exports:
            reads[_key(export.config.source)] += 1
        for block in self.pipeline.evals:
            reads.update(_key(ref) for ref in block.config.models)
        return reads

    def release(self, ref: ModelRef) -> None:
        """One read of `ref` is done; after the last one its weights leave device memory."""
        if self._reads_left is None:
            return  # not inside `run`: keep everything
        key = _key(ref)
        self._reads_left[key] -= 1
        if self._reads_left[key] <= 0:
            table = self.outputs if ref.kind == "stage" else self._decl_models
            if table.pop(ref.name, None) is not None:
                what = f"`{ref.name}.model`" if ref.kind == "stage" else f"model `{ref.name}`"
                self.log(f"  released {what} from memory (nothing later reads it)")

    # ------------------------------------------------------------------ pipeline

    def check_supported(self) -> None:
        """Every stage kind's lowering imports (a plugin's may not): before anything runs."""
        from tunix_dsl.schemas.kinds import LoweringError

        for stage in self.pipeline.stages:
            try:
                STAGE_KINDS[stage.kind].load_lowering()
            except LoweringError as err:
                raise RunError(f"stage `{stage.name}`: {err}") from None
        from tunix_dsl.schemas.plugins import SOURCE_GROUPS, load_implementation

        # every source's run-time half, built-in or plugin, imports the same way
        for group, table in (("tunix_dsl.rewards", self.pipeline.rewards),
                             ("tunix_dsl.datasets", self.pipeline.datasets)):
            assert group in SOURCE_GROUPS
            for decl in table.values():
                try:
                    load_implementation(group, type(decl.spec))
                except LoweringError as err:
                    raise RunError(f"{decl.keyword} `{decl.name}`: {err}") from None

    def statuses(self) -> dict[str, StageStatus]:
        return stage_statuses(self.pipeline, self.layout, self.fingerprints, self.force)

    def run(self) -> list[StageResult]:
        """Run what is left of the pipeline; `Preempted` when a signal stopped it after saving."""
        self.check_supported()
        check_mesh(self.pipeline, self.mesh.devices.size)  # TNX305 on the devices present
        if process_count() > 1 and (missing := unsupported(self.pipeline)):
            raise RunError(missing)
        unknown = unknown_stages(self.pipeline, self.force)
        if unknown:
            names = ", ".join(s.name for s in self.pipeline.stages)
            raise RunError(f"--force {unknown[0]}: no such stage; stages: {names}")
        problems = preflight(self.pipeline, self.run_dir, self.export_root)
        if problems:  # before the run directory is touched: nothing trains, nothing moves
            raise PreflightError(problems, self.pipeline.sources)
        conflict = source_conflict(self.run_dir, self.pipeline.file)
        if conflict:
            raise RunDirError(conflict)
        on_primary(f"lock {self.run_dir}", self.layout.prepare)  # one lock per job, held by process 0
        try:
            def claim() -> None:
                claim_source(self.run_dir, self.pipeline.file)
                self.log.attach(self.layout.log_file)
                if process_count() > 1:
                    self.log(f"multi-process job: {describe()}")

            on_primary(f"claim {self.run_dir}", claim)
            return self._run_stages()
        finally:
            self.layout.release()
            if self._owns_log:
                self.log.close()

    def _run_stages(self) -> list[StageResult]:
        statuses = self.statuses()
        described = {n: s.describe() for n, s in statuses.items()}
        agree("the stages' fingerprints and what is left to run",
              json.dumps([self.fingerprints, described], sort_keys=True))
        on_primary("write plan.json", lambda: self.layout.write_plan(self.pipeline, self.fingerprints, described))
        self._reads_left = self.model_reads(statuses)
        results = []
        with StopSignals() as signals:
            for stage in self.pipeline.stages:
                status = statuses[stage.name]
                directory = self.layout.stage(stage.name)
                if status.action == "cached" and status.superseded:
                    on_primary(f"adopt {directory.root}",  # an edit was undone
                               partial(adopt, directory, self.fingerprints[stage.name], self.log))
                finished = directory.finished_with(self.fingerprints[stage.name])
                if status.action == "cached" and finished is not None:
                    self.log(f"stage {stage.name} ({stage.kind}): cached "
                             f"(fingerprint {self.fingerprints[stage.name]})")
                    results.append(cached_result(directory, stage, finished))
                    continue
                self.log(f"stage {stage.name} ({stage.kind}): {stage.config.steps} steps")
                if status.broken:
                    self.log(f"  warning: the finished output of stage `{stage.name}` is damaged "
                             f"({status.broken}); making it again")
                from tunix_dsl.runtime.rl_run import run_rl_stage  # RL: rollout/score/update loop

                run = run_rl_stage if stage.info.program == "rl" else run_stage
                results.append(run(self, stage, status, signals))
                if (stop := signals.poll()[0]) is not None:  # the exports and evals are still to do
                    raise Preempted(f"stopped by {stop} after stage `{stage.name}` "
                                    "finished; run the same command to resume")
            for export in self.pipeline.exports:
                self.export(export)
                self.release(export.config.source)
            evals: dict[str, list[EvalResult]] = {}
            for block in self.pipeline.evals:
                if (stop := signals.poll()[0]) is not None:
                    raise Preempted(f"stopped by {stop} before eval `{block.name}`; "
                                    "every stage is finished; run the same command to evaluate")
                evals[block.name] = self.evaluate(block)
        if evals:
            text = json.dumps({name: [asdict(r) for r in rs] for name, rs in evals.items()}, indent=2)
            on_primary("write evals.json", lambda: (self.layout.root / "evals.json").write_text(text))
        on_primary("write the report", lambda: self.write_report(results, evals))
        return results

    def write_report(self, results: list[StageResult], evals: dict[str, list[EvalResult]]) -> None:
        """The summary table and each eval block's scores in the terminal, then report.md +
        plots from the run directory."""
        rows = [SummaryRow(r.name, r.kind, r.steps, r.final_loss, r.wall_s, r.tokens_per_s, r.status)
                for r in results]
        print_summary(rows, self.log)
        for block in self.pipeline.evals:
            if block.name in evals:
                print_evals(block.name, block.config.metric,
                            [(r.model, r.score, r.rows) for r in evals[block.name]], self.log)
        from tunix_dsl.runtime.report import write_report  # matplotlib: only once a run ends

        # In run.log here; the terminal gets the path as the command's last line (cli_commands).
        self.log.record(f"report: {write_report(self.layout.root)}")

    def export(self, export: Export) -> None:
        config = export.config
        source: ModelRef = config.source
        destination = export_destination(config.destination, self.base_dir, self.export_root)
        if source.kind == "stage" and source.output == "adapter":
            adapter = self.layout.stage(source.name).output / ADAPTER_DIR
            if not adapter.is_dir():
                raise RunError(f"export {source}: stage `{source.name}` saved no adapter in {adapter}")
            if config.format != "orbax":
                raise RunError(f"export {source}: an adapter exports as \"orbax\", not {config.format!r}")
            def copy() -> None:
                shutil.rmtree(destination, ignore_errors=True)
                shutil.copytree(adapter, destination)

            on_primary(f"copy {adapter} to {destination}", copy)
        elif config.format == "hf":
            save_model(self.model(source), self.tokenizer_for(source), destination,
                       dtype=self.settings.precision)  # bf16 runs export bf16
        else:  # orbax: the raw parameter tree
            save_params(nnx.state(self.model(source), nnx.Param), destination)
        self.log(f"exported {source} to {destination} ({config.format})")

    def evaluate(self, block: Eval) -> list[EvalResult]:
        """An `eval` block: every listed model completes the dataset's prompts, scored by the metric."""
        config = block.config
        metric = build_reward(self.pipeline.rewards[config.metric].spec, self.base_dir, config.metric)
        rows = self.resources.rows(config.data, "prompt")
        if config.limit is not None:
            rows = rows[: config.limit]
        results = []
        seed = derived_seed(self.settings.seed, "eval:" + block.name)
        for ref in config.models:
            if config.environment is not None:  # one episode per prompt, the tools in the loop
                from tunix_dsl.runtime.agent_eval import evaluate_agent

                tools = {n: d.spec for n, d in self.pipeline.tools.items()}
                env = self.pipeline.environments[config.environment].spec
                result = evaluate_agent(str(ref), self.model(ref), self.tokenizer_for(ref), rows,
                                        metric, config, env, tools, self.base_dir, seed=seed)
            else:
                result = evaluate_model(
                    str(ref), self.model(ref), self.tokenizer_for(ref), rows, metric,
                    max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                    batch_size=config.batch_size, seed=seed,
                )
            self.log(f"eval {block.name}: {ref} {config.metric} = {result.score:.4f} over {result.rows} rows")
            results.append(result)
            self.release(ref)
        return results


def _key(ref: ModelRef) -> str:
    """A live model's identity: a stage's output (whichever of its outputs) or a declaration."""
    return f"{'stage' if ref.kind == 'stage' else 'decl'}:{ref.name}"

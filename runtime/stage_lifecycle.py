"""One stage from its first step to its finished output, inside the executor.

Every stage kind shares a head and a tail, so the durability rules cannot
drift apart between kinds:

- `begin_stage` (the head): free space checked, earlier work of another
  configuration moved aside (never deleted), the newest good checkpoint restored
  with its data cursor;
- `drive`: the kind's loop (`runtime/training.py` `DurableLoop`) from that state,
  its files closed however it ends;
- `finish_stage` (the tail): the trained model saved as a Hugging Face directory
  (LoRA merged, the adapter beside it), kept in memory only when read later,
  marked finished with its fingerprint and files, superseded work dropped.

Between head and tail runs the kind's loop: the supervised one is `run_stage`
here, the RL twin is `runtime/rl_run.py` `run_rl_stage`. Which stages run, in
which order, and what happens after them is the executor's business
(`runtime/executor.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
from flax import nnx

from tunix_dsl.check.ir import Stage
from tunix_dsl.compiler import sharding
from tunix_dsl.compiler.program import StageProgram, lower_stage
from tunix_dsl.compiler.rl_program import RLProgram
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.compiler.storage_dtype import in_param_dtype, models_hold_frozen
from tunix_dsl.compiler.train_step import TrainState
from tunix_dsl.data.tokenizers import Tokenizer
from tunix_dsl.models import Transformer
from tunix_dsl.runtime.batches import BatchStream, LocalRows, ordered_batches, without_filler
from tunix_dsl.runtime.checkpoint import StageCheckpoints, state_nbytes
from tunix_dsl.runtime.data import TokenizedData, tokenize_rows
from tunix_dsl.runtime.distributed import host_copy, local_rows, on_primary, process_count
from tunix_dsl.runtime.metrics import MetricsSink, read_metrics
from tunix_dsl.runtime.preemption import StopSignals
from tunix_dsl.runtime.progress import StageProgress
from tunix_dsl.runtime.run_dir import StageDir, StageStatus
from tunix_dsl.runtime.superseded import finish_work, start_work
from tunix_dsl.runtime.training import DurableLoop, LoopResult, StageLoop
from tunix_dsl.schemas.stages import STAGE_KINDS, SequenceConfig

if TYPE_CHECKING:  # the executor imports this module
    from tunix_dsl.runtime.executor import Executor

Program = StageProgram | RLProgram  # what a stage kind lowers to
ADAPTER_DIR = "adapter"  # under a LoRA stage's output/: the adapter weights (orbax)


@dataclass
class StageResult:
    name: str
    kind: str
    steps: int
    first_loss: float
    final_loss: float
    wall_s: float
    tokens_per_s: float
    status: str  # "ran", "resumed at N", "cached"
    metrics: list[dict[str, float]] = field(default_factory=list)


@dataclass
class StageHead:
    """Where a stage starts: its directory, open checkpoints and metrics, the state to start from."""

    directory: StageDir
    fingerprint: str
    checkpoints: StageCheckpoints
    sink: MetricsSink
    state: TrainState
    start: int  # the step the state is at
    cursor: int  # the data cursor saved with it


# ---------------------------------------------------------------------- a supervised stage


def run_stage(executor: Executor, stage: Stage, status: StageStatus, signals: StopSignals) -> StageResult:
    """A supervised stage (pretrain, sft, dpo, orpo, distill) between the shared head and tail."""
    config = stage.config
    seed = executor.stage_seed(stage)
    models = executor.stage_models(stage, seed)
    program = lower(executor, stage, models)
    head = begin_stage(executor, stage, status, program, models)
    stream = stage_data(executor, stage, seed, start_cursor=head.cursor)
    progress = StageProgress(executor.log, stage.name, config.steps, head.start)
    loop = StageLoop(stage.name, config, program, stream, head.checkpoints, head.sink, progress, executor.log,
                     signals, head.fingerprint, on_dispatch=executor.on_dispatch,
                     evaluate=held_out(executor, stage, program))
    state, result = drive(loop, head, progress)
    return finish_stage(executor, stage, program, models, head, state, result)


def tokenized(executor: Executor, stage: Stage, dataset: str) -> TokenizedData:
    """`dataset` tokenised for the stage kind's consumer, at the stage's sequence length."""
    info = STAGE_KINDS[stage.kind]
    config = stage.config
    assert isinstance(config, SequenceConfig), f"supervised kind {stage.kind} has no max_seq_len"
    max_len = min(config.max_seq_len, executor.config_for(stage.trained).max_seq_len)
    rows = executor.resources.rows(dataset, info.consumer)
    names = getattr(config, "tools", None)  # sft: conversations list these tools' schemas
    if not names:
        return tokenize_rows(rows, info.consumer, executor.tokenizer_for(stage.trained), max_len,
                             source=dataset)
    from tunix_dsl.data.row_tools import check_rows
    from tunix_dsl.runtime.agent_env import load_tools
    from tunix_dsl.runtime.rewards import dataset_row_names

    pipeline = executor.pipeline  # the schemas an agent stage with these tools renders
    _, schemas = load_tools(names, {n: d.spec for n, d in pipeline.tools.items()}, executor.base_dir)
    check_rows(rows, schemas, dataset_row_names(pipeline.datasets[dataset].spec, executor.base_dir, dataset))
    return tokenize_rows(rows, info.consumer, executor.tokenizer_for(stage.trained), max_len,
                         source=dataset, tools=schemas)


def stage_data(executor: Executor, stage: Stage, seed: int, start_cursor: int = 0) -> BatchStream:
    config = stage.config
    data = tokenized(executor, stage, config.data)
    executor.log(f"  data {config.data}: {data.summary()}")
    micro = config.batch_size // config.grad_accum
    start, stop = local_rows(executor.mesh, micro)  # this process's rows of each micro-batch
    local = LocalRows(start, stop, micro) if (start, stop) != (0, micro) else None
    return BatchStream(data, config.batch_size, seed, start_cursor=start_cursor, local=local)


def held_out(executor: Executor, stage: Stage, program: StageProgram
             ) -> Callable[[TrainState], dict[str, float]] | None:
    """`eval_every` + `eval_data`: the stage's loss and metrics on a held-out set, no gradients."""
    config = stage.config
    if not config.eval_every or config.eval_data is None:
        return None
    data = tokenized(executor, stage, config.eval_data)
    batches = [without_filler(b) for b in ordered_batches(data, program.layout.micro_batch)]
    executor.log(f"  eval data {config.eval_data}: {len(data)} examples every {config.eval_every} steps")
    return lambda state: program.evaluate(state, batches)


def lower(executor: Executor, stage: Stage, models: StageModels) -> StageProgram:
    config = stage.config
    # TNX305 refuses a micro-batch that does not split over the mesh (lint on a fixed mesh,
    # `Executor.run` on the devices present), so this holds for every checked pipeline.
    shards = sharding.batch_parallelism(executor.mesh)
    assert (config.batch_size // config.grad_accum) % shards == 0, (
        f"stage `{stage.name}`: micro-batch does not split over {shards} batch shards (TNX305)")
    program = lower_stage(
        stage.name, stage.kind, config, models, executor.mesh,
        batch_size=config.batch_size, grad_accum=config.grad_accum,
        steps_per_call=config.steps_per_call,
    )
    models_hold_frozen(program.loss.modules, program.split)
    return program


# ---------------------------------------------------------------------- head and tail


def begin_stage(executor: Executor, stage: Stage, status: StageStatus, program: Program,
                models: StageModels) -> StageHead:
    """Free space checked, earlier work moved aside, the newest good checkpoint restored."""
    config = stage.config
    directory = executor.layout.stage(stage.name)
    fingerprint = executor.fingerprints[stage.name]
    abstract = jax.eval_shape(program.init_state)
    trained = models.models[STAGE_KINDS[stage.kind].trained]
    # the output: every weight in the master dtype (a frozen base is held narrower meanwhile),
    # and a LoRA stage's adapter beside it
    output_bytes = (trained.cfg.param_count() * jnp.dtype(trained.cfg.param_dtype).itemsize
                    + state_nbytes(nnx.state(trained, nnx.LoRAParam)))
    executor.layout.check_free_space(
        stage.name, state_nbytes(abstract) * (config.keep_checkpoints + 1) + output_bytes)
    # Only now, with every input resolved, does the stage directory change: earlier work of
    # another configuration (or all of it, when forced) is moved aside, never deleted.
    on_primary(f"prepare {directory.root}", lambda: start_work(
        directory, fingerprint, fresh=status.forced and status.action == "run", log=executor.log))
    checkpoints = StageCheckpoints(directory.checkpoints, keep=config.keep_checkpoints, log=executor.log)
    restored = checkpoints.restore_latest(abstract, program.state_shardings, fingerprint)
    start = restored.step if restored else 0
    if restored:
        executor.log(f"  resuming at step {start} from {directory.checkpoints / str(start)}")
    state = restored.state if restored else program.init_state()
    sink = on_primary("open the metrics", lambda: MetricsSink(
        directory.metrics, directory.events, resume_step=start))
    if sink is None:  # another process: the same rows in memory, no file written
        sink = MetricsSink(directory.metrics, directory.events, resume_step=start, write=False)
    return StageHead(directory, fingerprint, checkpoints, sink, state, start,
                     restored.meta["cursor"] if restored else 0)


def drive(loop: DurableLoop[Any, Any], head: StageHead, progress: StageProgress
          ) -> tuple[TrainState, LoopResult]:
    """Run the stage's loop from the head's state; its files are closed however it ends."""
    try:
        return loop.run(head.state, head.start)
    finally:
        progress.close()
        head.sink.close()
        head.checkpoints.close()


def finish_stage(executor: Executor, stage: Stage, program: Program, models: StageModels, head: StageHead,
                 state: TrainState, result: LoopResult, info: dict[str, Any] | None = None) -> StageResult:
    """The trained model (and adapter) saved, kept in memory only when read later, the stage
    marked finished with its files, superseded work dropped."""
    config, directory = stage.config, head.directory
    trained = STAGE_KINDS[stage.kind].trained
    # containers use the field names; frozen weights were held in the compute dtype
    model = in_param_dtype(getattr(program.merged_modules(state), trained))
    if models.lora:
        from tunix_dsl.models.lora import LoRAParam, merge_lora

        # `.adapter`: the adapter weights alone, beside the merged model.
        save_params(nnx.state(model, LoRAParam), directory.output / ADAPTER_DIR)
        model = merge_lora(model)
    executor.hold_output(stage.name, model)
    save_model(model, executor.tokenizer_for(stage.trained), directory.output)
    losses = [h["loss"] for h in result.history if "loss" in h]
    first, final = (losses[0], losses[-1]) if losses else (float("nan"), float("nan"))
    status_text = f"resumed at {head.start}" if head.start else "ran"
    if result.skipped:
        status_text += f", {result.skipped}/{result.updates} updates skipped"
    def finish() -> None:
        directory.mark_finished({
            "fingerprint": head.fingerprint, "stage": stage.name, "kind": stage.kind,
            "steps": config.steps, "final_loss": final, "wall_s": result.wall_s,
            "tokens_per_s": result.tokens_per_s, "skipped": result.skipped, **(info or {}),
        })
        finish_work(directory, head.fingerprint, executor.log)

    on_primary(f"mark stage `{stage.name}` finished", finish)
    return StageResult(stage.name, stage.kind, config.steps, first, final, result.wall_s,
                       result.tokens_per_s, status_text, result.history)


def cached_result(directory: StageDir, stage: Stage, info: dict[str, Any]) -> StageResult:
    """A finished stage of this configuration, as its `tnx_finished.json` and metrics tell it."""
    history = read_metrics(directory.metrics)
    losses = [h["loss"] for h in history]
    return StageResult(stage.name, stage.kind, info.get("steps", stage.config.steps),
                       losses[0] if losses else float("nan"), info.get("final_loss", float("nan")),
                       info.get("wall_s", 0.0), info.get("tokens_per_s", 0.0), "cached", history)


# ---------------------------------------------------------------------- writing weights


def save_model(model: Transformer, tokenizer: Tokenizer, directory: Path, dtype: str | None = None) -> None:
    """`dtype` None: the parameters' own (master) dtype, which a stage output keeps.
    Several processes: the weights are gathered from all of them, process 0 writes."""
    from tunix_dsl.models.hf import save_hf

    if process_count() > 1:
        graphdef, state = nnx.split(model)
        model = nnx.merge(graphdef, host_copy(state))
    on_primary(f"write {directory}", lambda: save_hf(model, directory, tokenizer=tokenizer, dtype=dtype))


def save_params(state: nnx.State, destination: Path) -> None:
    """A parameter tree as an orbax checkpoint directory (replacing what was there)."""
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(Path(destination).resolve(), state, force=True)
    checkpointer.wait_until_finished()

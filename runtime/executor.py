"""Running a checked pipeline: stages in topological order, models handed on in memory.

For each stage the executor resolves the stage's model inputs (a model
declaration is created or loaded straight into its shardings; a stage output
is the previous stage's trained model), applies LoRA/QLoRA when asked,
lowers the stage (`compiler.program.lower_stage`), streams its data and runs
its steps. The trained model (LoRA merged into the base) is kept in memory
for the stages that consume it and saved under
`<run_dir>/stages/<name>/output/` as a Hugging Face directory.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from tunix_dsl.compiler import sharding
from tunix_dsl.compiler.model_init import init_model, place
from tunix_dsl.compiler.program import StageProgram, lower_stage
from tunix_dsl.compiler.stages import LOWERINGS, StageModels
from tunix_dsl.models import Transformer
from tunix_dsl.runtime.data import BatchStream, tokenize_rows
from tunix_dsl.runtime.resources import Resources, resolve_path
from tunix_dsl.schemas.base import ModelRef
from tunix_dsl.schemas.sources import HFModelSource
from tunix_dsl.schemas.stages import STAGE_KINDS
from tunix_dsl.tokenizers import Tokenizer


class RunError(Exception):
    """A run that cannot go on; the message names the stage and the fix."""


@dataclass
class StageResult:
    name: str
    kind: str
    steps: int
    first_loss: float
    final_loss: float
    wall_s: float
    tokens_per_s: float
    metrics: list[dict[str, float]] = field(default_factory=list)


def derived_seed(root: int, name: str) -> int:
    """A stable per-stage seed from the pipeline seed and the stage's name."""
    return zlib.crc32(f"{root}:{name}".encode()) & 0x7FFFFFFF


class Executor:
    def __init__(
        self,
        pipeline: Any,
        run_dir: Path,
        *,
        log: Callable[[str], None] = print,
        devices: list[Any] | None = None,
    ):
        self.pipeline = pipeline
        self.run_dir = Path(run_dir)
        self.resources = Resources(pipeline)
        self.base_dir = self.resources.base_dir
        self.tokenizer_for = self.resources.tokenizer_for
        self.config_for = self.resources.config_for
        self.settings = pipeline.settings
        self.log = log
        mesh_spec = self.settings.mesh.model_dump(include={"data", "fsdp", "tensor"})
        self.mesh = sharding.make_mesh(mesh_spec, devices)
        self.outputs: dict[str, Transformer] = {}
        self._decl_models: dict[str, Transformer] = {}

    # ------------------------------------------------------------------ resources

    def model(self, ref: ModelRef) -> Transformer:
        """The live model a reference names (created on first use)."""
        if ref.kind == "stage":
            if ref.output != "model":
                raise RunError(f"`{ref}` is an adapter, not a model; use `{ref.name}.model`")
            return self.outputs[ref.name]
        if ref.name not in self._decl_models:
            spec = self.pipeline.models[ref.name].spec
            cfg = self.config_for(ref)
            if isinstance(spec, HFModelSource):
                from tunix_dsl.models.hf import load_hf

                path = resolve_path(spec.path, self.base_dir)
                self.log(f"loading {ref.name} from {path}")
                model = load_hf(path, dtype=cfg.dtype)
                model = place(model, self.mesh)
            else:
                model = init_model(cfg, self.mesh, derived_seed(self.settings.seed, "model:" + ref.name))
            self._decl_models[ref.name] = model
        return self._decl_models[ref.name]

    # ------------------------------------------------------------------ stages

    def stage_seed(self, stage: Any) -> int:
        seed = getattr(stage.config, "seed", None)
        return seed if seed is not None else derived_seed(self.settings.seed, stage.name)

    def stage_models(self, stage: Any, seed: int) -> StageModels:
        """Clones of the stage's input models, with adapters applied to the trained one."""
        info = STAGE_KINDS[stage.kind]
        config = stage.config
        models: dict[str, nnx.Module] = {}
        for name in info.model_inputs:
            ref = getattr(config, name, None)
            if ref is not None:
                models[name] = nnx.clone(self.model(ref))
        adapter = getattr(config, "lora", None)
        shared_reference = False
        if "reference" in info.model_inputs:
            same_start = config.reference is None or config.reference == getattr(config, info.trained)
            if same_start and adapter is not None:
                shared_reference = True  # the base with adapters off: no second copy
                models.pop("reference", None)
            elif same_start:
                models["reference"] = nnx.clone(models[info.trained])
        if adapter is not None:
            from tunix_dsl.models.lora import LoraSpec, apply_lora

            spec = LoraSpec(
                rank=adapter.rank, alpha=adapter.alpha, dropout=adapter.dropout,
                targets=tuple(adapter.targets), quantize=adapter.quantize,
            )
            trained = apply_lora(models[info.trained], spec, nnx.Rngs(params=seed, dropout=seed + 1))
            models[info.trained] = place(trained, self.mesh)
        return StageModels(models, lora=adapter is not None, shared_reference=shared_reference, seed=seed)

    def stage_data(self, stage: Any, seed: int) -> BatchStream:
        info = STAGE_KINDS[stage.kind]
        config = stage.config
        trained_ref = getattr(config, info.trained)
        tokenizer = self.tokenizer_for(trained_ref)
        max_len = min(config.max_seq_len, self.config_for(trained_ref).max_seq_len)
        rows = self.resources.rows(config.data, info.consumer)
        data = tokenize_rows(rows, info.consumer, tokenizer, max_len, source=config.data)
        self.log(f"  data {config.data}: {data.summary()}")
        return BatchStream(data, config.batch_size, seed)

    def lower(self, stage: Any, models: StageModels) -> StageProgram:
        config = stage.config
        sharding_ways = sharding.batch_parallelism(self.mesh)
        micro = config.batch_size // config.grad_accum
        if micro % sharding_ways:
            raise RunError(
                f"stage `{stage.name}`: micro-batch {micro} (batch_size {config.batch_size} / "
                f"grad_accum {config.grad_accum}) does not split over the mesh's {sharding_ways} "
                f"batch shards (data × fsdp)"
            )
        return lower_stage(
            stage.name, stage.kind, config, models, self.mesh,
            batch_size=config.batch_size, grad_accum=config.grad_accum,
            steps_per_call=config.steps_per_call,
        )

    def run_stage(self, stage: Any) -> StageResult:
        config = stage.config
        seed = self.stage_seed(stage)
        stage_dir = self.run_dir / "stages" / stage.name
        stage_dir.mkdir(parents=True, exist_ok=True)
        models = self.stage_models(stage, seed)
        program = self.lower(stage, models)
        stream = self.stage_data(stage, seed)
        state = program.init_state()

        history: list[dict[str, float]] = []
        tokens = 0
        start = time.perf_counter()
        log_every = max(1, config.steps // 10)
        pending: list[tuple[int, int, dict[str, jax.Array]]] = []  # (first step, k, device metrics)

        def flush(sink: Any) -> None:
            # Metrics stay on device until here, so dispatch runs ahead of the host.
            for first, k, device_metrics in pending:
                host = jax.device_get(device_metrics)
                for i in range(k):
                    row = {"step": first + i, **{n: float(v[i]) for n, v in host.items()}}
                    if not math.isfinite(row.get("loss", 0.0)):
                        raise RunError(
                            f"stage `{stage.name}`: loss is {row['loss']} at step {row['step']}; "
                            "lower the learning rate or check the data"
                        )
                    history.append(row)
                    sink.write(json.dumps(row) + "\n")
                    if row["step"] % log_every == 0 or row["step"] == 1:
                        self.log(f"  {stage.name} step {row['step']}/{config.steps} " + _fmt(row))
            pending.clear()

        with (stage_dir / "metrics.jsonl").open("w") as sink:
            done = 0
            while done < config.steps:
                k = min(config.steps_per_call, config.steps - done)
                batch = stream.next_batches(k)
                batch.pop("example_ids", None)
                tokens += int(sum(np.sum(v) for n, v in batch.items() if n.endswith("attention_mask")))
                state, metrics = program.step(state, program.split.frozen, program.put_batch(batch))
                pending.append((done + 1, k, metrics))
                done += k
                if done == k or done // log_every != (done - k) // log_every or done == config.steps:
                    flush(sink)
        wall = time.perf_counter() - start

        trained = STAGE_KINDS[stage.kind].trained
        model = getattr(program.merged_modules(state), _role(stage.kind, trained))
        if models.lora:
            from tunix_dsl.models.lora import merge_lora

            model = merge_lora(model)
        self.outputs[stage.name] = model
        self.save_model(model, self.tokenizer_for(getattr(config, trained)), stage_dir / "output")
        losses = [h["loss"] for h in history]
        return StageResult(
            stage.name, stage.kind, config.steps, losses[0], losses[-1], wall, tokens / max(wall, 1e-9),
            history,
        )

    def save_model(self, model: Transformer, tokenizer: Tokenizer, directory: Path) -> None:
        from tunix_dsl.models.hf import save_hf

        save_hf(model, directory, tokenizer=tokenizer)

    # ------------------------------------------------------------------ pipeline

    def check_supported(self) -> None:
        missing = [s for s in self.pipeline.stages if s.kind not in LOWERINGS]
        if missing:
            names = ", ".join(f"`{s.name}` ({s.kind})" for s in missing)
            raise RunError(
                f"stage kinds not runnable yet in this build: {names}; "
                f"runnable kinds: {', '.join(sorted(LOWERINGS))}"
            )

    def run(self) -> list[StageResult]:
        self.check_supported()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        results = []
        for stage in self.pipeline.stages:
            self.log(f"stage {stage.name} ({stage.kind}): {stage.config.steps} steps")
            results.append(self.run_stage(stage))
        for export in getattr(self.pipeline, "exports", []):
            self.export(export)
        return results

    def export(self, export: Any) -> None:
        config = export.config
        destination = resolve_path(config.destination, self.base_dir)
        model = self.model(config.source)
        if config.format == "hf":
            self.save_model(model, self.tokenizer_for(config.source), destination)
        else:  # orbax: the raw parameter tree
            import orbax.checkpoint as ocp

            checkpointer = ocp.StandardCheckpointer()
            checkpointer.save(destination.resolve(), nnx.state(model, nnx.Param), force=True)
            checkpointer.wait_until_finished()
        self.log(f"exported {config.source} to {destination} ({config.format})")


def _role(kind: str, trained_field: str) -> str:
    """Container attribute of the trained model (sft/pretrain call theirs `policy`)."""
    return "policy" if trained_field == "model" else trained_field


def _fmt(row: dict[str, float]) -> str:
    keys = [k for k in ("loss", "accuracy", "rewards/margin", "rewards/accuracy", "kl", "grad_norm") if k in row]
    return " ".join(f"{k}={row[k]:.4g}" for k in keys)

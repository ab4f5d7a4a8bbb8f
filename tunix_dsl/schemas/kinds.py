"""What a stage kind is, and where a kind or source came from (jax-free).

A `StageKind` is the one description of a kind that the checker, `tnx
explain`, the planner and the runtime read: its schema, which fields hold
models and which one trains, the data layout it consumes, the metrics it
logs and a *lazy* reference to its lowering (`"package.module:build"`),
imported only by `tnx plan` and `tnx run`. Built-in kinds and plugin kinds
are the same objects, registered by the same loader
(`tunix_dsl.schemas.plugins`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from tunix_dsl.data.datasets import ConsumerInfo
    from tunix_dsl.schemas.stages import TrainingConfig


@dataclass(frozen=True)
class Origin:
    """Where a registered kind or source comes from.

    `package` is "built-in", an installed distribution's name, or a local
    plugin file's path; `source_hash` hashes the plugin's code so a
    fingerprint changes when the plugin does.
    """

    package: str = "built-in"
    version: str = ""
    source_hash: str = ""
    entry_point: str = ""  # `name = module:attr` as declared, or the local file

    @property
    def builtin(self) -> bool:
        return self.package == "built-in"

    def describe(self) -> str:
        if self.builtin:
            return "built-in"
        return f"{self.package} {self.version}".strip()

    def identity(self) -> dict[str, str]:
        """What a stage fingerprint records of this origin."""
        return {"package": self.package, "version": self.version, "source_hash": self.source_hash}


BUILTIN = Origin()


class LoweringError(Exception):
    """A stage kind's lowering reference that cannot be imported; names the kind and plugin."""


def load_reference(reference: str, relative_to: Path | None = None) -> object:
    """The object `"package.module:attr"` names (or `"./file.py:attr"`, relative to
    `relative_to`, the directory of the local plugin that declared it)."""
    module_name, sep, attr = reference.rpartition(":")
    if not sep or not module_name or not attr:
        raise LoweringError(f"`{reference}` is not a `module:attribute` reference")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_absolute() and relative_to is not None:
            path = relative_to / path
        module = import_file(path)
    else:
        module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise LoweringError(f"module `{module_name}` has no `{attr}`") from None


def import_file(path: Path) -> object:
    """Import a plugin file as a module of its own (once per resolved path)."""
    resolved = path.resolve()
    # the content hash is part of the name: an edited plugin (an editor session) re-imports
    digest = hashlib.sha256(resolved.read_bytes()).hexdigest()[:12]
    name = "tnx_local_plugin_" + "".join(c if c.isalnum() else "_" for c in resolved.stem) + "_" + digest
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


# name -> StageKind, filled by `tunix_dsl.schemas.plugins` (built-ins first, then plugins)
STAGE_KINDS: dict[str, StageKind] = {}


@dataclass(frozen=True)
class StageKind:
    """Everything the tool knows about one stage kind.

    - `schema`: the pydantic config of `stage NAME: kind { ... }` (derives from
      `TrainingConfig`); its first docstring line is the kind's summary.
    - `trained`: the model field whose weights train (the stage's `.model`).
    - `model_inputs`: every field that holds a model reference.
    - `data`: the name of the data layout (`CONSUMERS` key) `data` is read as;
      a plugin may bring its own layout in `layout`.
    - `metrics`: what a step logs (the keys of its `from_sums`/`finish`).
    - `lowering`: `"module:function"` building the step: for `program = "step"`
      `build(config, StageModels) -> StageLoss`, for `"rl"` `-> RLStep`.
      Imported only when a stage of this kind is planned or run.
    """

    name: str
    schema: type[TrainingConfig]
    trained: str
    model_inputs: tuple[str, ...]
    data: str
    lowering: str
    program: Literal["step", "rl"] = "step"
    metrics: tuple[str, ...] = ()
    layout: ConsumerInfo | None = None
    origin: Origin = field(default=BUILTIN, compare=False)
    # directory of the local plugin file that declared the kind (for `./file.py:build`)
    plugin_dir: Path | None = field(default=None, compare=False)

    @property
    def doc(self) -> str:
        return (self.schema.__doc__ or "").strip().splitlines()[0]

    @property
    def consumer(self) -> str:
        """The data layout's name (the key of `tunix_dsl.data.datasets.CONSUMERS`)."""
        return self.data

    @property
    def columns(self) -> tuple[tuple[str, ...], ...]:
        """Column sets the `data` may have, any one suffices (preferred first)."""
        from tunix_dsl.data.datasets import CONSUMERS

        return CONSUMERS[self.data].accepted

    @property
    def has_adapter(self) -> bool:
        return "lora" in self.schema.model_fields

    def load_lowering(self) -> Callable[..., object]:
        """The kind's `build` function; a `LoweringError` naming the plugin if it cannot load."""
        try:
            build = load_reference(self.lowering, self.plugin_dir)
        except LoweringError as err:
            raise LoweringError(f"stage kind `{self.name}` ({self.origin.describe()}): "
                                f"lowering {err}") from None
        except Exception as err:  # noqa: BLE001 - any import failure of plugin code
            raise LoweringError(
                f"stage kind `{self.name}` ({self.origin.describe()}): importing its lowering "
                f"`{self.lowering}` failed: {type(err).__name__}: {err}") from None
        if not callable(build):
            raise LoweringError(f"stage kind `{self.name}` ({self.origin.describe()}): lowering "
                                f"`{self.lowering}` is not a function")
        return build

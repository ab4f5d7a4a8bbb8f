"""Importing a user's Python file (`python("file.py:name")` rewards, tools, environments).

The file is relative to the `.tnx` file; a missing file or a module that raises on import
is the caller's error type with a message naming the declaration, never a traceback.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def import_user_file(file: str, base_dir: Path, what: str, module_name: str,
                     error: type[Exception]) -> tuple[ModuleType, Path]:
    """(the imported module, its path); `error(f"{what}: …")` when it cannot be imported."""
    path = Path(file) if Path(file).is_absolute() else Path(base_dir) / file
    if not path.is_file():
        raise error(f"{what}: file {path} does not exist")
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's module: report, don't crash with its traceback
        raise error(f"{what}: importing {path} failed: {type(err).__name__}: {err}") from err
    return module, path

"""The type checker (mypy) is clean on the installed package `tunix_dsl`.

`compiler/`, `runtime/` and `grammar/` install as `tunix_dsl.compiler`, `.runtime`
and `.grammar` (pyproject's package-dir), a layout mypy cannot follow from the
source tree. The test lays the package out as it is installed — a folder of
symbolic links — and checks that, so cross-package types are checked too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALLED_AS = {"compiler": "compiler", "runtime": "runtime", "grammar": "grammar"}


def _installed_layout(into: Path) -> Path:
    package = into / "tunix_dsl"
    package.mkdir(parents=True)
    for entry in (ROOT / "tunix_dsl").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in INSTALLED_AS.items():
        (package / name).symlink_to(ROOT / folder)
    return into


def test_mypy_is_clean(tmp_path: Path) -> None:
    tree = _installed_layout(tmp_path / "tree")
    env = {**os.environ, "MYPYPATH": ""}
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), "-p", "tunix_dsl"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]

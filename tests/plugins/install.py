"""Install a plugin package for a test the way a wheel lays it out: its packages plus a
`NAME-VERSION.dist-info` (METADATA, entry_points.txt) read from its pyproject.toml.

No build backend, index or network is needed, nothing outside `target` changes, and a
subprocess with `PYTHONPATH=target` discovers the entry points from installed metadata as
it would after `pip install`.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI (the dev extra installs it there)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
KTO = ROOT / "examples" / "plugins" / "tnx-kto"


def install(source: Path, target: Path) -> Path:
    """Copy the project at `source` into `target` as an installed distribution."""
    meta = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))
    project, packages = meta["project"], meta["tool"]["setuptools"]["packages"]
    target.mkdir(parents=True, exist_ok=True)
    for package in packages:
        shutil.copytree(source / package, target / package, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    write_dist_info(target, project["name"], project["version"], project.get("entry-points", {}))
    return target


def write_dist_info(target: Path, name: str, version: str,
                    entry_points: dict[str, dict[str, str]]) -> None:
    info = target / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                                   encoding="utf-8")
    (info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
                for group, eps in entry_points.items()), encoding="utf-8")


def env_with(*paths: Path) -> dict[str, str]:
    """The environment of a subprocess that sees `paths` as installed."""
    extra = os.pathsep.join(str(p) for p in paths)
    old = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": extra + (os.pathsep + old if old else ""), "NO_COLOR": "1"}


def tnx(*args: str) -> list[str]:
    return [sys.executable, "-m", "tunix_dsl", *args]

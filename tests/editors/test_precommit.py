"""The pre-commit hooks of `.pre-commit-hooks.yaml`, run the way users run them.

`tnx-lint` (language: python) goes through pre-commit's whole path: clone
this repository, build a virtualenv, pip-install the package into it, run
`tnx lint`. To keep that to seconds, the virtualenv sees the test
interpreter's site-packages (where `pip install -e ".[dev]"` put jax and the
rest), so pip installs only tunix-dsl itself; nothing is stubbed. The failing
cases use the `-system` variants, which run the same entry with the `tnx`
on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pre_commit(args: list[str], cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        # the hook environment reuses installed dependencies: pip adds only tunix-dsl
        "VIRTUALENV_SYSTEM_SITE_PACKAGES": "1",
        "PIP_NO_BUILD_ISOLATION": "0",  # pip's spelling of --no-build-isolation
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_tnx_lint_hook_passes_on_the_examples(tmp_path: Path) -> None:
    examples = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("*.tnx"))
    done = pre_commit(["tnx-lint", "--files", *examples], ROOT, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tnx lint" in done.stdout and "Passed" in done.stdout


def test_hooks_fail_on_a_broken_file_and_reformat_a_messy_one(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    shutil.copy(ROOT / "examples" / "broken" / "unknown_field.tnx", project / "broken.tnx")
    messy = (ROOT / "examples" / "grpo.tnx").read_text(encoding="utf-8").replace(
        "  seed = 0\n", "seed=0\n")
    (project / "messy.tnx").write_text(messy, encoding="utf-8")
    subprocess.run(["git", "add", "."], cwd=project, check=True)  # as in a commit being made

    lint = pre_commit(["tnx-lint-system", "--files", "broken.tnx"], project, tmp_path)
    assert lint.returncode == 1, lint.stdout + lint.stderr
    assert "Failed" in lint.stdout and "TNX101" in lint.stdout and "did you mean `beta`?" in lint.stdout

    fmt = pre_commit(["tnx-fmt-system", "--files", "messy.tnx"], project, tmp_path)
    assert fmt.returncode == 1, fmt.stdout + fmt.stderr
    assert "files were modified by this hook" in fmt.stdout
    assert (project / "messy.tnx").read_text(encoding="utf-8") == \
        (ROOT / "examples" / "grpo.tnx").read_text(encoding="utf-8")

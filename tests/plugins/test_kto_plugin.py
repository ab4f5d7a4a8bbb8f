"""The example plugin package, installed: lint, explain, plan and a run that lowers its loss;
and broken plugins (raising on import, a duplicate kind) as one located diagnostic each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugins.install import KTO, env_with, install, tnx, write_dist_info

PIPELINE = """\
tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars)
dataset judged = unpaired_addition(digits = 1, count = 256, seed = 2, undesirable = "babble")

stage align: kto {
  policy     = tiny
  data       = judged
  beta       = 1.0
  steps      = 12
  batch_size = 16
  max_seq_len = 16
  optimizer  = adamw(lr = 1e-2)
}

export align.model to "out/align" as "hf"
"""

PROBE = """
import contextlib, io, json, sys
from tunix_dsl.cli import main
out = {}
for name, args in [("lint", ["lint", sys.argv[1]]), ("typo", ["lint", sys.argv[2]]),
                   ("explain", ["explain", "kto"]), ("plugins", ["explain", "plugins"]),
                   ("reward", ["explain", "number_close"])]:
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        code = main(args)
    out[name] = [code, text.getvalue()]
out["heavy"] = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax", "optax", "orbax"))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    return install(KTO, tmp_path_factory.mktemp("site"))


def test_lint_explain_with_the_plugin_installed_import_no_jax(installed, tmp_path):
    good = tmp_path / "kto.tnx"
    good.write_text(PIPELINE, encoding="utf-8")
    typo = tmp_path / "typo.tnx"
    typo.write_text(PIPELINE.replace("  beta       = 1.0", "  betta = 1.0"), encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", PROBE, str(good), str(typo)], cwd=tmp_path,
                          env=env_with(installed), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["lint"] == [0, "no problems found\n"]
    code, text = out["typo"]
    assert code == 1
    assert f"{typo}:8:3" in text and "unknown field `betta` in stage `align` (kto)" in text
    assert "did you mean `beta`?" in text
    assert out["explain"][0] == 0 and "origin: tnx-kto 0.1.0" in out["explain"][1]
    assert "data columns: prompt+completion+label" in out["explain"][1]
    assert "kto                  tnx-kto 0.1.0" in out["plugins"][1]
    assert "origin: tnx-kto 0.1.0" in out["reward"][1]
    assert out["heavy"] == []


def test_plan_and_a_short_run_lower_the_kto_loss(installed, tmp_path):
    source = tmp_path / "kto.tnx"
    source.write_text(PIPELINE, encoding="utf-8")
    run_dir = tmp_path / "run"
    # one interpreter for both commands: jax is imported once
    script = ("import sys\nfrom tunix_dsl.cli import main\n"
              f"sys.exit(main(['plan', {str(source)!r}]) or "
              f"main(['run', {str(source)!r}, '--run-dir', {str(run_dir)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env_with(installed),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    plan = done.stdout.split("stage align (kto)")[0]
    assert "align" in plan and "kto" in plan and "will run" in plan
    rows = [json.loads(line) for line in
            (run_dir / "stages" / "align" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 12
    assert losses[0] == pytest.approx(0.5, abs=1e-6)  # policy = reference: σ(0) for every row
    assert sum(losses[-3:]) / 3 < losses[0] - 0.05
    assert {"rewards/desirable", "rewards/undesirable", "kl"} <= set(rows[-1])


def _lint(env: dict[str, str], tmp_path: Path, text: str = PIPELINE) -> list[dict]:
    source = tmp_path / "kto.tnx"
    source.write_text(text, encoding="utf-8")
    done = subprocess.run(tnx("lint", str(source), "--format", "json"), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert "Traceback" not in done.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_a_plugin_that_raises_on_import_is_one_located_diagnostic(tmp_path):
    site = tmp_path / "site"
    (site / "tnx_broken").mkdir(parents=True)
    (site / "tnx_broken" / "__init__.py").write_text("raise RuntimeError('half-written plugin')\n")
    write_dist_info(site, "tnx-broken", "0.3.0", {"tunix_dsl.stage_kinds": {"kto": "tnx_broken:KTO"}})
    # only the kind comes from the broken plugin: a built-in dataset feeds the stage
    text = PIPELINE.replace('unpaired_addition(digits = 1, count = 256, seed = 2, undesirable = "babble")',
                            'synthetic("addition", count = 100)')
    found = _lint(env_with(site), tmp_path, text)
    assert [d["code"] for d in found] == ["TNX010"]
    assert "tnx-broken 0.3.0" in found[0]["message"] and "half-written plugin" in found[0]["message"]
    assert (found[0]["line"], found[0]["column"]) == (5, 14)  # `kto` of the stage


def test_a_duplicate_kind_name_is_one_diagnostic_naming_both_plugins(installed, tmp_path):
    fork = tmp_path / "fork"
    write_dist_info(fork, "tnx-kto-fork", "9.9.9", {"tunix_dsl.stage_kinds": {"kto": "tnx_kto.schema:KTO"}})
    found = _lint(env_with(installed, fork), tmp_path)
    assert [d["code"] for d in found] == ["TNX011"]
    assert "tnx-kto-fork 9.9.9" in found[0]["message"] and "tnx-kto 0.1.0" in found[0]["message"]
